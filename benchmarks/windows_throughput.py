"""Windowing speed and peak memory on a synthetic genome: nucleotides per second and peak RSS.

    python benchmarks/windows_throughput.py --megabases 10 100 --output benchmarks/results/windows.json

Each size runs in a fresh process, so peak RSS is that size's own. Memory
should stay flat as the genome grows (windows are streamed contig chunk by
contig chunk into Parquet row groups).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from smoke import parse_args

SMOKE = {"megabases": [1]}  # --smoke: the smallest genome the generator writes


def _synthetic_fasta(path: Path, megabases: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "wb") as out:
        out.write(b">synthetic\n")
        for _ in range(megabases):
            block = letters[rng.integers(0, 4, 1_000_000)].reshape(-1, 100)
            out.write(b"\n".join(row.tobytes() for row in block) + b"\n")


def _measure_one(megabases: int) -> dict:
    from vqdna.download import fetch_genome
    from vqdna.windows import WindowSettings, write_windows

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "synthetic.fa"
        _synthetic_fasta(raw, megabases)
        started = time.perf_counter()
        fetch_genome("synthetic", str(raw), Path(tmp) / "synthetic.fa.gz")
        stored = time.perf_counter()
        counts = write_windows(Path(tmp) / "synthetic.fa.gz", Path(tmp) / "w.parquet", "synthetic", WindowSettings())
        done = time.perf_counter()
    return {
        "megabases": megabases,
        "download_seconds": round(stored - started, 2),
        "windows_seconds": round(done - stored, 2),
        "windows_nt_per_second": round(megabases * 1e6 / (done - stored)),
        "windows": sum(counts.values()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabases", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/windows.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parse_args(parser, SMOKE)
    if args.one:
        print(json.dumps(_measure_one(args.one)))
        return
    rows = []
    for size in args.megabases:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": platform.platform(), "cpu_count": __import__("os").cpu_count(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
