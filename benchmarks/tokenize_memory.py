"""Peak memory of tokenizing a genome: does it stay flat as the genome grows?

    python benchmarks/tokenize_memory.py --megabases 10 100

Each size runs in a fresh process: a synthetic genome (one contig of random
ACGT) is windowed (512 nt) and tokenized by a tiny VQ tokenizer (width 16,
depth 1, K = 16, untrained: memory does not depend on the weights), the way
`tokenize_genome` does it (one Parquet batch of windows in, one row group of
codes out). Peak RSS of the tokenizing process only, with the windowing done
in a child process beforehand, and the peak of each tenth of the run (RSS
sampled every 50 ms): a leak climbs from tenth to tenth, a per-row-group
transient does not. Results: ``benchmarks/results/tokenize_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
SMOKE = {"megabases": [1], "threads": 1}  # --smoke: 1951 windows of 512 nt


def _windows(megabases: int, folder: Path) -> Path:
    """The windows file of a synthetic genome, made by windows_throughput.py's generator."""
    from windows_throughput import _synthetic_fasta

    from vqdna.download import fetch_genome
    from vqdna.windows import WindowSettings, write_windows

    raw = folder / "synthetic.fa"
    _synthetic_fasta(raw, megabases)
    fetch_genome("synthetic", str(raw), folder / "synthetic.fa.gz")
    raw.unlink()
    windows = folder / "synthetic.windows.parquet"
    write_windows(folder / "synthetic.fa.gz", windows, "synthetic", WindowSettings(length=512, step=512))
    return windows


class RssSampler(threading.Thread):
    """Resident set size of this process every ``interval`` seconds, as (seconds since start, MB)."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self.stopped = interval, [], threading.Event()

    def run(self) -> None:
        started, page_mb = time.perf_counter(), resource.getpagesize() / 2**20
        while not self.stopped.wait(self.interval):
            resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
            self.samples.append((time.perf_counter() - started, resident_pages * page_mb))

    def peak_per_tenth(self) -> list[float]:
        self.stopped.set()
        self.join()
        end = self.samples[-1][0]
        tenths = [[mb for t, mb in self.samples if i * end / 10 <= t <= (i + 1) * end / 10] for i in range(10)]
        return [round(max(tenth), 1) if tenth else None for tenth in tenths]


def _tokenize(windows: Path, folder: Path, threads: int) -> dict:
    import torch

    from vqdna.tokenizer.api import VQTokenizer
    from vqdna.tokenizer.tokens import tokenize_windows
    from vqdna.tokenizer.vq import VQVAE, VQConfig

    torch.manual_seed(0)
    VQTokenizer(VQVAE(VQConfig(width=16, depth=1, codebook_size=16)), device="cpu").save(folder / "tokenizer")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    rows = tokenize_windows(folder / "tokenizer", "tiny", windows, folder / "tokens.parquet", threads=threads, device="cpu")
    seconds = time.perf_counter() - started
    peak_per_tenth = sampler.peak_per_tenth()
    return {
        "windows": rows,
        "seconds": round(seconds, 1),
        "nt_per_second": round(rows * 512 / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_per_tenth_of_the_run_mb": peak_per_tenth,
        "tokens_file_mb": round((folder / "tokens.parquet").stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabases", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "tokenize_memory.json")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "FOLDER"), help=argparse.SUPPRESS)
    from smoke import parse_args

    args = parse_args(parser, SMOKE)
    if args.child:
        step, folder = args.child
        if step == "windows":
            _windows(args.megabases[0], Path(folder))
        else:
            print(json.dumps(_tokenize(Path(folder) / "synthetic.windows.parquet", Path(folder), args.threads)))
        return

    from machine import machine_info

    runs = []
    for megabases in args.megabases:
        with tempfile.TemporaryDirectory(prefix="vqdna-tokenize-memory-") as folder:
            command = [sys.executable, __file__, "--megabases", str(megabases), "--threads", str(args.threads)]
            subprocess.run([*command, "--child", "windows", folder], check=True)
            out = subprocess.run([*command, "--child", "tokenize", folder], check=True, capture_output=True, text=True)
            runs.append({"megabases": megabases, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(runs[-1], flush=True)
    result = {"tokenizer": "VQ width 16, depth 1, K 16 (untrained)", "window": 512, "runs": runs, "machine": machine_info("cpu", args.threads)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
