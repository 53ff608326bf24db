"""Tokenizer speed on real E. coli windows: nucleotides per second of VQ, HRQ, BPE, k-mer and char.

    python benchmarks/tokenize_throughput.py --windows 512                  # CPU, all cores
    python benchmarks/tokenize_throughput.py --device cuda --windows 8192   # GPU: fp32 and bf16

Every tokenizer encodes the same windows (length 512) cut from the E. coli
K-12 genome with the pipeline's own download and windowing code. The learned
tokenizers are the paper's sizes (``VQConfig()`` / ``HRQConfig()``) with
untrained weights, which encode exactly as fast as trained ones, and run what
``vqdna tokenize`` runs: ``VQTokenizer.encode_ids`` on uint8 base-id batches
(codes copied back to the host). On CUDA each is timed in fp32 (autocast off)
and in bf16 (``encode_ids``' own autocast), with the fraction of codes the two
agree on, and the bf16 rate is set against the device's peak bf16 FLOP/s from
the encoder FLOPs per nucleotide counted analytically (``flops_formula`` in
the output). Baselines run ``encode_with_starts`` on the windows as strings,
as ``vqdna tokenize`` does; BPE first learns its merges (vocabulary 4096) from
the train-split windows.

Windows measured: test split first, then dev, then train (the first
``--windows``), so at default sizes BPE is timed on windows it did not train on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from machine import machine_info
from smoke import parse_args

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VQDNA_TEST_DATA", REPO.parent / "shared" / "data"))
DEFAULT_FASTA = DATA / "genomes" / "GCF_000005845.2_ASM584v2_genomic.fna.gz"
WINDOW_LENGTH = 512
# --smoke: the paper-size models on 4 windows of phage lambda (48 kb: windowed and BPE-trained in a second)
SMOKE = {"windows": 4, "batch_size": 2, "repeats": 1, "warmup": 1, "threads": 1, "bpe_vocab": 64,
         "fasta": DATA / "genomes" / "lambda_virus.fa"}


def encoder_flops_per_nt(config) -> dict:
    """Multiply-adds x 2 per nucleotide of the encode path (encoder + projections + nearest-code search).

    Norms, GELU, residuals, one-hot and argmin are elementwise and left out.
    """
    w, d, k_stem, k_dw, r = config.width, config.dim, config.stem_kernel, config.kernel_size, config.mlp_ratio
    stem = 2 * 5 * w * k_stem
    per_block = 2 * w * k_dw + 2 * 2 * w * (r * w)
    to_code = sum(2 * w * d for _ in config.level_sizes) if d != w else 0
    search = sum(2 * d * k for k in config.level_sizes)
    return {
        "formula": "2*5*W*k_stem + depth*(2*W*k_dw + 2*2*W*(r*W)) + [D != W] levels*2*W*D + sum_n 2*D*K_n",
        "terms": {"stem": stem, "blocks": config.depth * per_block, "to_code": to_code, "nearest_code_search": search},
        "total": stem + config.depth * per_block + to_code + search,
        "note": "the nearest-code search (eq. 1) always runs in fp32, even under bf16 autocast",
    }


def cut_windows(fasta: Path, work: Path):
    """(measured-order windows, train windows) as uint8 base ids, via the pipeline's fetch + windowing."""
    import numpy as np

    from vqdna.download import fetch_genome
    from vqdna.windows import WindowSettings, read_base_ids, write_windows

    stored = work / "ecoli_k12.fa.gz"
    fetch_genome("ecoli_k12", str(fasta), stored)
    write_windows(stored, work / "windows.parquet", "ecoli_k12", WindowSettings(length=WINDOW_LENGTH))
    splits = {s: read_base_ids(work / "windows.parquet", s) for s in ("test", "dev", "train")}
    return np.concatenate([splits["test"], splits["dev"], splits["train"]]), splits["train"]


def _no_sync() -> None:
    pass


def _timed(run, repeats: int, sync) -> list[float]:
    seconds = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        run()
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def _rate_row(name: str, precision: str, nucleotides: int, seconds: list[float], **extra) -> dict:
    best, median = min(seconds), statistics.median(seconds)
    return {
        "tokenizer": name,
        "precision": precision,
        "nucleotides": nucleotides,
        "repeats": len(seconds),
        "seconds_median": round(median, 4),
        "nt_per_second": round(nucleotides / median),
        "nt_per_second_best": round(nucleotides / best),
        **extra,
    }


def encode_paths(tokenizer) -> dict:
    """{precision: encode(ids) -> codes per level}: fp32 everywhere, and on CUDA bf16 (``encode_ids`` as is)."""
    import torch

    from vqdna.tokenizer.api import onehot

    @torch.no_grad()
    def encode_fp32(ids):
        # encode_ids without its autocast: the fp32 reference path (same host<->device copies)
        codes = tokenizer.model.encode(onehot(torch.as_tensor(ids, device=tokenizer.device)))
        return [c.cpu().numpy() for c in codes]

    if tokenizer.device.type == "cuda":
        return {"fp32": encode_fp32, "bf16": tokenizer.encode_ids}
    return {"fp32": encode_fp32}  # encode_ids runs fp32 on CPU


def measure_learned(name: str, config, windows, args, device: str) -> list[dict]:
    import numpy as np
    import torch

    from vqdna.tokenizer.api import MODEL_TYPES, VQTokenizer

    torch.manual_seed(0)
    tokenizer = VQTokenizer(MODEL_TYPES[config.type][1](config), device=device)
    model = tokenizer.model
    sync = torch.cuda.synchronize if device == "cuda" else _no_sync
    batches = [windows[i : i + args.batch_size] for i in range(0, len(windows), args.batch_size)]

    paths = encode_paths(tokenizer)
    flops = encoder_flops_per_nt(config)
    nucleotides = windows.size
    rows, codes = [], {}
    for precision, encode in paths.items():
        for _ in range(args.warmup):
            encode(batches[0])
        last: list = []

        def one_pass(encode=encode, last=last) -> None:
            last[:] = [encode(b) for b in batches]  # keep the last timed pass's codes

        seconds = _timed(one_pass, args.repeats, sync)
        codes[precision] = [np.concatenate(parts) for parts in zip(*last)]
        row = _rate_row(
            name,
            precision,
            nucleotides,
            seconds,
            batch_size=args.batch_size,
            config={"width": config.width, "depth": config.depth, "dim": config.dim, "level_sizes": config.level_sizes},
            flops_per_nt=flops["total"],
        )
        achieved = flops["total"] * nucleotides / statistics.median(seconds)  # FLOP/s
        row["achieved_gflops"] = round(achieved / 1e9, 2)
        if precision == "bf16":
            row["peak_bf16_tflops"] = args.peak_tflops
            row["fraction_of_bf16_roofline"] = float(f"{achieved / (args.peak_tflops * 1e12):.4g}")
        rows.append(row)
        print(json.dumps(row), flush=True)
    if "bf16" in codes:
        agreement = [float((a == b).mean()) for a, b in zip(codes["fp32"], codes["bf16"])]
        for row in rows:
            row["bf16_fp32_code_agreement_per_level"] = [round(a, 6) for a in agreement]
        print(json.dumps({"tokenizer": name, "bf16_fp32_code_agreement_per_level": agreement}), flush=True)
    del tokenizer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def measure_baselines(windows, train_windows, args) -> list[dict]:
    from vqdna.genome import bases_from_ids
    from vqdna.tokenizer.baselines import (
        BPEConfig,
        BPETokenizer,
        CharConfig,
        CharTokenizer,
        KmerConfig,
        KmerTokenizer,
    )

    sequences = [bases_from_ids(w) for w in windows]
    started = time.perf_counter()
    bpe = BPETokenizer.train(BPEConfig(vocab_size=args.bpe_vocab), [bases_from_ids(w) for w in train_windows])
    bpe_train_seconds = time.perf_counter() - started
    tokenizers = {
        f"bpe_{args.bpe_vocab}": (bpe, {"train_windows": len(train_windows), "train_seconds": round(bpe_train_seconds, 2),
                                        "vocab_size": bpe.config.vocab_size}),
        "kmer6_overlapping": (KmerTokenizer(KmerConfig(k=6, overlapping=True)), {}),
        "kmer6_nonoverlapping": (KmerTokenizer(KmerConfig(k=6, overlapping=False)), {}),
        "char": (CharTokenizer(CharConfig()), {}),
    }
    nucleotides = sum(len(s) for s in sequences)
    rows = []
    for name, (tokenizer, extra) in tokenizers.items():
        once = _timed(partial(tokenizer.encode_with_starts, sequences), 1, _no_sync)[0]  # also the warm-up
        loops = max(1, math.ceil(0.25 / max(once, 1e-6)))  # a fast tokenizer is timed over several passes

        def passes(tokenizer=tokenizer, loops=loops) -> None:
            for _ in range(loops):
                tokenizer.encode_with_starts(sequences)

        seconds = _timed(passes, args.repeats, _no_sync)
        tokens = sum(len(ids) for ids, _ in tokenizer.encode_with_starts(sequences))
        row = _rate_row(name, "n/a", nucleotides * loops, seconds, passes_per_repeat=loops,
                        tokens_per_window=round(tokens / len(sequences), 2), **extra)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--windows", type=int, default=512, help="windows of 512 nt measured (default 512)")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per encode_ids call (vqdna tokenize's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the windows; the median is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before each timed path")
    parser.add_argument("--threads", type=int, default=None, help="torch / BPE threads (default: all cores)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak dense bf16 TFLOP/s (H100 SXM: 989)")
    parser.add_argument("--bpe-vocab", type=int, default=4096)
    parser.add_argument("--only", nargs="+", choices=["vq", "hrq", "baselines"], default=["vq", "hrq", "baselines"])
    parser.add_argument("--fasta", type=Path, default=DEFAULT_FASTA, help="E. coli genome (default: $VQDNA_TEST_DATA/genomes/...)")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/tokenize_throughput_{device}.json")
    args = parse_args(parser, SMOKE)

    threads = args.threads or os.cpu_count() or 1
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # HF tokenizers (BPE), read at its first use
    import torch

    torch.set_num_threads(threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    if not args.fasta.is_file():
        parser.error(f"--fasta {args.fasta}: no such file (set $VQDNA_TEST_DATA or pass --fasta)")

    from vqdna.tokenizer.hrq import HRQConfig
    from vqdna.tokenizer.vq import VQConfig

    machine = machine_info(args.device, threads)

    with tempfile.TemporaryDirectory() as tmp:
        all_windows, train_windows = cut_windows(args.fasta, Path(tmp))
    windows = all_windows[: args.windows]
    print(json.dumps({"windows": len(windows), "window_length": int(windows.shape[1]), "genome": str(args.fasta.name)}), flush=True)

    rows = []
    if "vq" in args.only:
        rows += measure_learned("vq", VQConfig(), windows, args, args.device)
    if "hrq" in args.only:
        rows += measure_learned("hrq", HRQConfig(), windows, args, args.device)
    if "baselines" in args.only:
        rows += measure_baselines(windows, train_windows, args)

    output = args.output or REPO / "benchmarks" / "results" / f"tokenize_throughput_{args.device}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "windows": len(windows),
        "window_length": int(windows.shape[1]),
        "flops_per_nt": {"vq": encoder_flops_per_nt(VQConfig()), "hrq": encoder_flops_per_nt(HRQConfig())},
        "results": rows,
    }
    result["machine"]["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
