"""The small config's answer, kept: the comparison and paired tables of a finished run, and how long the run took.

    snakemake --cores all --configfile config/small.yaml
    python benchmarks/small.py --snakemake-log .snakemake/log/DATE.snakemake.log   # or --wall-seconds 5400

Copies ``results/tables/comparison.{csv,md}`` and ``paired.{csv,md}`` (written by the workflow's make_tables:
``vqdna.evaluation.compare``) into ``benchmarks/results/small/``, and writes ``summary.json`` beside them:
the results folder relative to the checkout that made it and that checkout's commit,
each paired comparison's mean over datasets (A minus B in percentage points, its 95% paired bootstrap
interval, whether it lies above 0, and with several draws each draw's difference) and the run's wall time
when one is given, either as seconds or as the Snakemake log it is read from (first to last timestamp).
Prints the Markdown.

Nothing is computed here: the numbers are the tables' own, so the kept copy cannot disagree with them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pandas as pd
from machine import cpu_name, git_commit

REPO = Path(__file__).resolve().parents[1]
TABLES = ("comparison.csv", "comparison.md", "paired.csv", "paired.md")
AVERAGE_FIELDS = ["method_a", "method_b", "metric", "difference", "low", "high", "beats", "datasets", "replicates", "draws", "per_draw"]
SNAKEMAKE_TIMESTAMP = "[%a %b %d %H:%M:%S %Y]"  # how Snakemake's log opens each job's lines


def paired_averages(paired_csv: Path) -> list[dict]:
    """The paired rows of dataset "average", missing values as null."""
    frame = pd.read_csv(paired_csv, dtype={"beats": object}, keep_default_na=True)
    rows = frame[frame.dataset == "average"][AVERAGE_FIELDS].to_dict("records")
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _plain(value):
    """JSON's value of a CSV cell: null where empty, a bool for True/False, numbers as Python numbers."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value in ("True", "False"):
        return value == "True"
    return value.item() if hasattr(value, "item") else value


def wall_seconds_of_log(log: Path) -> float:
    """Seconds from the first to the last timestamp line of a Snakemake log."""
    stamps = []
    for line in log.read_text().splitlines():
        try:
            stamps.append(datetime.strptime(line.strip(), SNAKEMAKE_TIMESTAMP))
        except ValueError:
            continue
    if len(stamps) < 2:
        raise SystemExit(f"{log}: fewer than two Snakemake timestamp lines ({SNAKEMAKE_TIMESTAMP}); pass --wall-seconds instead")
    return (stamps[-1] - stamps[0]).total_seconds()


def _relative_to_checkout(path: Path) -> str:
    """``path`` relative to the root of the git checkout holding it; as given where it is in none."""
    folder = path if path.is_dir() else path.parent
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return str(path)
    if top.returncode != 0:
        return str(path)
    return os.path.relpath(path.resolve(), Path(top.stdout.strip()).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="the workflow's results folder (default results)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "small", help="folder the tables and summary.json go to")
    wall = parser.add_mutually_exclusive_group()
    wall.add_argument("--wall-seconds", type=float, help="the run's measured wall time")
    wall.add_argument("--snakemake-log", type=Path, help="the run's Snakemake log: its wall time is first to last timestamp")
    args = parser.parse_args()

    tables = args.results / "tables"
    missing = [name for name in TABLES if not (tables / name).is_file()]
    if missing:
        raise SystemExit(f"{tables}: no {', '.join(missing)}; run the workflow first (snakemake --configfile config/small.yaml)")
    args.output.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        shutil.copyfile(tables / name, args.output / name)

    wall_seconds = wall_seconds_of_log(args.snakemake_log) if args.snakemake_log else args.wall_seconds
    summary = {
        # Where the results lie, relative to the checkout that made them, and that checkout's commit:
        # what a reader needs to make them again (an absolute path names only this machine).
        "results": _relative_to_checkout(args.results),
        "commit": git_commit(args.results),
        "tables": list(TABLES),
        "paired_average": paired_averages(tables / "paired.csv"),
        "wall_seconds": wall_seconds,
        "wall_seconds_from": _relative_to_checkout(args.snakemake_log) if args.snakemake_log else "--wall-seconds" if wall_seconds is not None else None,
        "machine": {"cpu_name": cpu_name(), "cpu_count": os.cpu_count()},
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name in ("comparison.md", "paired.md"):
        print((tables / name).read_text())
    print(f"summary: {args.output / 'summary.json'}")


if __name__ == "__main__":
    main()
