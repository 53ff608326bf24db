"""Does tokenizing keep a fast device busy? The real pipeline around a device step of fixed time, and its host costs.

    python benchmarks/tokenize_overlap.py                        # E. coli, steps of 2, 4, 10, 20, 50 ms
    python benchmarks/tokenize_overlap.py --step-ms 4 --repeat 3

``vqdna tokenize`` reads windows, turns them into base ids, encodes them on the
device and writes codes to Parquet in three stages (reader thread, device step,
writer thread; ``write_token_file``). Here the device step is a stand-in that
takes a fixed time per batch of 256 windows x 512 nt (a ``time.sleep``, which
releases the GIL as a CUDA synchronisation does) and returns codes computed
beforehand, so only the host's part of the pipeline is measured, on a real
windows file (E. coli K-12, both strands). The GPU goal, 34 M nt/s for the
paper-size encoder, is 3.9 ms per such batch.

Per step time: the busy fraction (time in the device step / wall time) over
the whole run and over the span from the first step's start to the last one's
end (fill and drain left out: they amortise over a large genome). Then the
host data path, each stage alone and serially: read + base ids, column build,
Parquet write, in ms per batch and per M nt; the write for several settings of
the codes column, with file sizes and a read back through pyarrow, pandas and
DuckDB. The codes stand in for a trained VQ's (K = 512): each position's 5-mer
of base ids hashed into 512 codes (about 9 bits each; the adjacent codes do not
repeat, so they compress no better than a well-used codebook's would).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import machine_info
from smoke import parse_args

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VQDNA_TEST_DATA", REPO.parent / "shared" / "data"))
DEFAULT_FASTA = DATA / "genomes" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
WINDOW_LENGTH = 512
GPU_GOAL_NT_PER_SECOND = 34e6
# --smoke: 1/4 of phage lambda's windows (48 kb), two step times, one repeat: a few seconds
SMOKE = {"step_ms": [2.0, 20.0], "repeat": 1, "fasta": DATA / "genomes" / "lambda_virus.fa", "max_windows": 48}


def codes_stand_in(ids, codebook_size: int):
    """Per position the 5-mer of base ids around it (edges clamped), hashed into ``codebook_size`` codes."""
    import numpy as np

    padded = np.pad(ids.astype(np.int64), ((0, 0), (2, 2)), mode="edge")
    kmer = sum(padded[:, j : j + ids.shape[1]] * 5**j for j in range(5))
    return (kmer * 2654435761 % 2**32) % codebook_size  # a multiplicative hash spreads the 3125 5-mers evenly


def fixed_time_tokenizer(codes, codebook_size: int, step_seconds: float):
    """A VQTokenizer whose device step sleeps ``step_seconds`` per batch and returns the next rows of ``codes``."""
    from vqdna.tokenizer.api import VQTokenizer
    from vqdna.tokenizer.vq import VQVAE, VQConfig

    class FixedTimeStep(VQTokenizer):
        def __init__(self):
            super().__init__(VQVAE(VQConfig(width=8, depth=1, codebook_size=codebook_size)), hash="fixed-time-step", device="cpu")
            self.row, self.steps = 0, []  # (start, end) of every step, perf_counter seconds

        def encode_ids(self, ids):
            started = time.perf_counter()
            rows = codes[self.row : self.row + len(ids)]
            self.row += len(ids)
            time.sleep(max(0.0, started + step_seconds - time.perf_counter()))
            self.steps.append((started, time.perf_counter()))
            return [rows]

    return FixedTimeStep()


def measure_overlap(windows: Path, codes, step_ms: float, repeat: int, batch_size: int, work: Path) -> dict:
    from vqdna.tokenizer.tokens import write_token_file

    runs = []
    for _ in range(repeat):
        tokenizer = fixed_time_tokenizer(codes, 512, step_ms / 1000)
        started = time.perf_counter()
        rows = write_token_file(tokenizer, "fixed-time-step", windows, work / "tokens.parquet", batch_size=batch_size)
        wall = time.perf_counter() - started
        assert rows == len(codes) == tokenizer.row, (rows, len(codes), tokenizer.row)
        busy = sum(end - start for start, end in tokenizer.steps)
        span = tokenizer.steps[-1][1] - tokenizer.steps[0][0]
        runs.append({"wall_seconds": wall, "step_seconds": busy, "span_seconds": span,
                     "fill_seconds": tokenizer.steps[0][0] - started, "drain_seconds": started + wall - tokenizer.steps[-1][1],
                     "batches": len(tokenizer.steps)})
    run = min(runs, key=lambda r: r["wall_seconds"])  # the least disturbed of the repeats
    nucleotides = len(codes) * codes.shape[1]
    row = {
        "step_ms": step_ms,
        "batches": run["batches"],
        "repeats": repeat,
        "wall_seconds": round(run["wall_seconds"], 4),
        "wall_seconds_all_repeats": [round(r["wall_seconds"], 4) for r in runs],
        "busy_fraction": round(run["step_seconds"] / run["wall_seconds"], 4),
        "busy_fraction_between_first_and_last_step": round(run["step_seconds"] / run["span_seconds"], 4),
        "fill_seconds": round(run["fill_seconds"], 4),
        "drain_seconds": round(run["drain_seconds"], 4),
        "mean_step_ms": round(1000 * run["step_seconds"] / run["batches"], 3),
        "nt_per_second": round(nucleotides / run["wall_seconds"]),
    }
    print(json.dumps(row), flush=True)
    return row


def writer_settings(schema) -> dict:
    """Parquet writer options to compare, all for the codes columns only (the key columns keep dictionary + zstd)."""
    codes = [n for n in schema.names if n.startswith("codes_l")]
    keys = [n for n in schema.names if n not in codes]
    elements = [f"{n}.list.element" for n in codes]
    plain = {"compression": "zstd", "use_dictionary": keys}
    return {
        "dictionary_zstd1 (today)": {"compression": "zstd"},
        "dictionary_uncompressed": {"compression": {**dict.fromkeys(keys, "zstd"), **dict.fromkeys(codes, "none")}},
        "plain_zstd1": plain,
        "plain_uncompressed": {**plain, "compression": {**dict.fromkeys(keys, "zstd"), **dict.fromkeys(codes, "none")}},
        "byte_stream_split_zstd1": {**plain, "column_encoding": dict.fromkeys(elements, "BYTE_STREAM_SPLIT")},
        "delta_binary_packed_zstd1": {**plain, "column_encoding": dict.fromkeys(elements, "DELTA_BINARY_PACKED")},
    }


def measure_host_path(windows: Path, codes, batch_size: int, work: Path, repeat: int) -> dict:
    """Each host stage alone, serially, over the whole file: read + ids, column build, then the write per setting."""
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vqdna.artifacts import iter_row_groups, tokens_schema
    from vqdna.tokenizer.tokens import KEY_COLUMNS, ROWS_PER_GROUP, code_columns, prepare_ids

    tokenizer = fixed_time_tokenizer(codes, 512, 0.0)
    schema = tokens_schema(tokenizer.level_sizes, with_token_starts=False)
    source = pq.ParquetFile(windows)
    seconds = {"read_and_ids": [], "columns": []}
    for _ in range(repeat):
        batches, row, read, build = [], 0, 0.0, 0.0
        started = time.perf_counter()
        for batch in iter_row_groups(source, columns=KEY_COLUMNS + ["sequence"]):
            ids = prepare_ids(tokenizer, batch.column("sequence").to_pylist())
            read += time.perf_counter() - started
            started = time.perf_counter()
            encoded = [[codes[row + i : row + min(i + batch_size, len(ids))]] for i in range(0, len(ids), batch_size)]
            columns = [batch.column(name) for name in KEY_COLUMNS] + code_columns(tokenizer, encoded)
            batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
            row += len(ids)
            build += time.perf_counter() - started
            started = time.perf_counter()
        seconds["read_and_ids"].append(read)
        seconds["columns"].append(build)

    windows_count, nucleotides = len(codes), codes.size
    per = {"batches": windows_count / batch_size, "mnt": nucleotides / 1e6}

    def cost(values: list[float]) -> dict:
        median = statistics.median(values)
        return {"ms_per_batch": round(1000 * median / per["batches"], 3), "ms_per_mnt": round(1000 * median / per["mnt"], 3)}

    stages = {name: cost(values) for name, values in seconds.items()}
    expected = np.asarray(codes, dtype=np.uint16)
    writes = []
    for name, options in writer_settings(schema).items():
        path = work / f"write-{name.split()[0]}.parquet"
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            writer = pq.ParquetWriter(path, schema, **options)
            for batch in batches:
                writer.write_batch(batch, row_group_size=ROWS_PER_GROUP)
            writer.close()
            times.append(time.perf_counter() - started)
        metadata = pq.ParquetFile(path).metadata
        element = metadata.row_group(0).column(schema.names.index("codes_l1"))
        codes_bytes = sum(metadata.row_group(g).column(schema.names.index("codes_l1")).total_compressed_size
                          for g in range(metadata.num_row_groups))
        read_back = {
            "pyarrow": np.array_equal(np.stack(pq.read_table(path).column("codes_l1").to_numpy(zero_copy_only=False)), expected),
            "pandas": np.array_equal(np.stack(pd.read_parquet(path)["codes_l1"].to_numpy()), expected),
            "duckdb": duckdb.sql(f"SELECT count(*), sum(len(codes_l1)), sum(list_sum(codes_l1)) FROM read_parquet('{path}')").fetchall()[0]
            == (windows_count, nucleotides, int(expected.sum(dtype=np.int64))),
        }
        row = {"setting": name, "options": options, **cost(times),
               "codes_encodings": list(element.encodings), "codes_compression": element.compression,
               "file_mb": round(path.stat().st_size / 1e6, 3), "codes_column_mb": round(codes_bytes / 1e6, 3),
               "bits_per_code": round(8 * codes_bytes / nucleotides, 3), "reads_back": read_back}
        writes.append(row)
        print(json.dumps(row), flush=True)
    return {"windows": windows_count, "nucleotides": nucleotides, "batch_size": batch_size, "repeats": repeat,
            "stages": stages, "write": writes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-ms", type=float, nargs="+", default=[2.0, 4.0, 10.0, 20.0, 50.0],
                        help="device step time per batch (default 2 4 10 20 50; the GPU goal is 3.9)")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per device step (vqdna tokenize's default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step time (the fastest is reported) and per host stage (median)")
    parser.add_argument("--max-windows", type=int, default=None, help="keep the first N windows (default: all)")
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA, help="genome (default: $VQDNA_TEST_DATA/genomes/ E. coli K-12)")
    parser.add_argument("--note", default="", help="what else ran on the machine, recorded in the JSON")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "tokenize_overlap.json")
    args = parse_args(parser, SMOKE)
    if not args.fasta.is_file():
        parser.error(f"--fasta {args.fasta}: no such file (set $VQDNA_TEST_DATA or pass --fasta)")

    import pyarrow.parquet as pq

    from vqdna.download import fetch_genome
    from vqdna.genome import base_ids
    from vqdna.windows import WindowSettings, write_windows

    import torch

    machine = machine_info("cpu", torch.get_num_threads())  # the device step is a stand-in: no accelerator involved
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stored = work / "genome.fa.gz"
        fetch_genome("genome", str(args.fasta), stored)
        windows = work / "windows.parquet"
        write_windows(stored, windows, "genome", WindowSettings(length=WINDOW_LENGTH, reverse_complement=True))
        if args.max_windows:
            pq.write_table(pq.read_table(windows).slice(0, args.max_windows), windows, row_group_size=16)
        sequences = pq.read_table(windows, columns=["sequence"]).column("sequence").to_pylist()
        codes = codes_stand_in(base_ids("".join(sequences)).reshape(len(sequences), -1), 512)  # in the file's row order
        row_groups = pq.ParquetFile(windows).num_row_groups
        print(json.dumps({"windows": len(codes), "row_groups": row_groups, "genome": args.fasta.name}), flush=True)
        overlap = [measure_overlap(windows, codes, ms, args.repeat, args.batch_size, work) for ms in args.step_ms]
        host = measure_host_path(windows, codes, args.batch_size, work, args.repeat)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    machine["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "machine": machine,
        "settings": {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()},  # file names: no machine paths
        "genome": args.fasta.name,
        "window_length": WINDOW_LENGTH,
        "windows": len(codes),
        "windows_row_groups": row_groups,
        "gpu_goal_step_ms": round(1000 * args.batch_size * WINDOW_LENGTH / GPU_GOAL_NT_PER_SECOND, 2),
        "results": overlap,
        "host_data_path": host,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
