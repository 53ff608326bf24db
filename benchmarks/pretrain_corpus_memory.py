"""Memory of the pretraining corpus: every rank reading the token files into RAM vs one memory-mapped copy.

    python benchmarks/pretrain_corpus_memory.py                          # 200k windows of 512 codes (about 200 MB of codes)
    python benchmarks/pretrain_corpus_memory.py --windows 1000000 --levels 2

Writes a synthetic token file of the given size, then, each in a fresh process
so peak RSS is its own: ``in_memory`` reads the train split padded into RAM
(what every rank did before) and ``build`` + ``mapped`` is what pretraining does
now (rank 0 streams the file into ``tokens.bin`` once, each rank maps it). Each
rank then reads ``--batches`` random batches. Peak RSS (``ru_maxrss``) counts
the mapped pages a rank touched, which the page cache shares between ranks of
a node. Results: ``benchmarks/results/pretrain_corpus_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
HASH = "0" * 64
SMOKE = {"windows": 2000, "length": 64, "batches": 5, "batch_size": 16}  # --smoke: 0.2 MB of codes


def write_token_file(path: Path, windows: int, length: int, levels: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vqdna.artifacts import tokens_schema, with_metadata

    schema = with_metadata(tokens_schema([512] * levels, with_token_starts=False), tokenizer_hash=HASH, genome="synthetic")
    rng = np.random.default_rng(seed)
    rows_per_group = 8192
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for first in range(0, windows, rows_per_group):
            n = min(rows_per_group, windows - first)
            offsets = pa.array(np.arange(0, (n + 1) * length, length, dtype=np.int32))
            columns = [
                pa.array(["synthetic"] * n),
                pa.array(["chr1"] * n),
                pa.array(np.arange(first, first + n, dtype=np.int64) * length),
                pa.array(np.arange(first + 1, first + n + 1, dtype=np.int64) * length),
                pa.array(np.ones(n, dtype=np.int8)),
                pa.array(["train"] * n),
            ]
            columns += [pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, 512, n * length).astype(np.uint16))) for _ in range(levels)]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_batches(codes, batches: int, batch_size: int) -> float:
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    for _ in range(batches):
        codes.padded(rng.choice(len(codes), batch_size, replace=False))
    return (time.perf_counter() - started) / batches * 1000


def read_codes(path: Path, split: str):
    """What every rank did before the mapped corpus: the split's codes padded into RAM, (windows, longest, levels)."""
    import pyarrow.parquet as pq

    from vqdna.lm.corpus import Codes

    levels = [name for name in pq.read_schema(path).names if name.startswith("codes_l")]
    table = pq.read_table(path, columns=levels, filters=[("split", "==", split)])
    columns = [table.column(name).combine_chunks() for name in levels]
    offsets = np.asarray(columns[0].offsets)
    lengths = np.diff(offsets)
    values = np.zeros((table.num_rows, int(lengths.max()), len(levels)), dtype=columns[0].type.value_type.to_pandas_dtype())
    rows = np.repeat(np.arange(table.num_rows), lengths)
    positions = np.arange(offsets[-1] - offsets[0]) - np.repeat(offsets[:-1] - offsets[0], lengths)
    for level, column in enumerate(columns):
        values[rows, positions, level] = column.flatten().to_numpy(zero_copy_only=False)
    return Codes(values, lengths.astype(np.int64))


def child(mode: str, token_file: Path, folder: Path, batches: int, batch_size: int) -> dict:
    from vqdna.lm.corpus import build_corpus, open_corpus

    before = peak_rss_mb()
    started = time.perf_counter()
    if mode == "in_memory":
        codes = read_codes(token_file, "train")
    elif mode == "build":
        build_corpus([token_file], HASH, "train", folder)
        return {"mode": mode, "seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(before, 1)}
    else:
        codes = open_corpus(folder)
    load_seconds = time.perf_counter() - started
    ms_per_batch = read_batches(codes, batches, batch_size)
    return {
        "mode": mode,
        "seconds": round(load_seconds, 2),
        "ms_per_batch": round(ms_per_batch, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_mb": round(before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "pretrain_corpus_memory.json")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "TOKENS", "FOLDER"), help=argparse.SUPPRESS)
    from smoke import parse_args

    args = parse_args(parser, SMOKE)
    if args.child:
        mode, tokens, folder = args.child
        print(json.dumps(child(mode, Path(tokens), Path(folder), args.batches, args.batch_size)))
        return

    from machine import machine_info

    with tempfile.TemporaryDirectory(prefix="vqdna-corpus-bench-") as work:
        work = Path(work)
        token_file = work / "tokens.parquet"
        write_token_file(token_file, args.windows, args.length, args.levels)
        runs = []
        for mode in ("in_memory", "build", "mapped"):
            command = [sys.executable, __file__, "--batches", str(args.batches), "--batch-size", str(args.batch_size)]
            out = subprocess.run([*command, "--child", mode, str(token_file), str(work / "corpus")], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
        result = {
            "windows": args.windows,
            "length": args.length,
            "levels": args.levels,
            "code_bytes_mb": round(args.windows * args.length * args.levels * 2 / 2**20, 1),
            "token_file_mb": round(token_file.stat().st_size / 2**20, 1),
            "batches": args.batches,
            "batch_size": args.batch_size,
            "runs": runs,
            "machine": machine_info("cpu", 1),
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
