"""Padding of token batches, plain shuffle against length-grouped batches, on the GUE data and genome windows.

    python benchmarks/padding.py                   # writes benchmarks/results/padding.json

A learned tokenizer gives one code per nt, so equal-length sequences never pad;
BPE and k-mer give a varying number of tokens per sequence, and every batch is
padded to its longest row. Per GUE dataset (train split at its batch size, and
dev/test at the evaluation batch size) and per tokenizer this measures the share
of token slots that are padding with the plain shuffled batches of old and with
the length-grouped batches fine-tuning and pretraining draw now
(vqdna.batching); the same for pretraining batches of genome windows (512 nt,
global batch 256).

BPE is trained on windows of E. coli K-12, lambda and the human chr22 slice
(``--bpe-windows`` of them), as the pipeline's bpe4096 tokenizer would be; the
windows are cut by the pipeline's own fetch + windowing (its defaults: 512 nt,
step 512, one strand).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from machine import machine_info
from smoke import parse_args

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VQDNA_TEST_DATA", REPO.parent / "shared" / "data"))
DATASETS = {"prom_core_notata": "gue/prom/prom_core_notata", "mouse_0": "gue/mouse/0", "EMP_H3": "gue/EMP/H3"}
GENOMES = ["genomes/GCF_000005845.2_ASM584v2_genomic.fna.gz", "genomes/lambda_virus.fa", "genomes/22_20-21M.fa"]
SMOKE = {"bpe_vocab": 64, "bpe_windows": 200, "rows": 300, "pretrain_windows": 512}


def _sequences(path: Path, rows: int | None) -> list[str]:
    with open(path, newline="") as handle:
        sequences = [row["sequence"] for row in csv.DictReader(handle)]
    return sequences[:rows] if rows else sequences


def _genome_windows(work: Path) -> list[str]:
    """Every 512-nt window of the three genomes (all splits), cut by the pipeline's own fetch + windowing."""
    import pyarrow.parquet as pq

    from vqdna.download import fetch_genome
    from vqdna.windows import WindowSettings, write_windows

    windows = []
    for relative in GENOMES:
        name = Path(relative).name.split(".")[0]
        fetch_genome(name, str(DATA / relative), work / f"{name}.fa.gz")
        write_windows(work / f"{name}.fa.gz", work / f"{name}.parquet", name, WindowSettings(length=512))
        windows += pq.read_table(work / f"{name}.parquet", columns=["sequence"]).column("sequence").to_pylist()
    return windows


def _sample(windows: list[str], count: int, seed: int) -> list[str]:
    keep = np.random.default_rng(seed).choice(len(windows), min(count, len(windows)), replace=False)
    return [windows[i] for i in np.sort(keep)]


def _tokenizers(bpe_vocab: int, train_windows: list[str]) -> dict:
    from vqdna.tokenizer.baselines import BPEConfig, BPETokenizer, KmerConfig, KmerTokenizer

    return {
        f"bpe{bpe_vocab}": BPETokenizer.train(BPEConfig(vocab_size=bpe_vocab), train_windows),
        "kmer6": KmerTokenizer(KmerConfig(k=6, overlapping=False)),
    }


def _row(lengths: np.ndarray, batch_size: int, seed: int) -> dict:
    from vqdna.batching import evaluation_batches, padding_fraction, training_batches

    order = np.random.default_rng(seed).permutation(len(lengths))
    plain = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return {
        "rows": len(lengths),
        "batch_size": batch_size,
        "tokens_mean": round(float(lengths.mean()), 2),
        "tokens_min": int(lengths.min()),
        "tokens_max": int(lengths.max()),
        "padding_shuffled": round(padding_fraction(lengths, plain), 4),
        "padding_grouped": round(padding_fraction(lengths, training_batches(lengths, batch_size, np.random.default_rng(seed))), 4),
        "padding_longest_first": round(padding_fraction(lengths, evaluation_batches(lengths, batch_size)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpe-vocab", type=int, default=4096)
    parser.add_argument("--bpe-windows", type=int, default=20_000, help="windows of 512 nt BPE is trained on")
    parser.add_argument("--rows", type=int, default=None, help="rows per split (default: all)")
    parser.add_argument("--train-batch-size", type=int, default=32, help="the datasets sheet's batch size")
    parser.add_argument("--eval-batch-size", type=int, default=128, help="finetune.eval_batch_size")
    parser.add_argument("--pretrain-windows", type=int, default=20_000)
    parser.add_argument("--pretrain-batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "padding.json")
    args = parse_args(parser, SMOKE)
    from vqdna.batching import token_lengths

    with tempfile.TemporaryDirectory() as work:
        windows = _genome_windows(Path(work))
    tokenizers = _tokenizers(args.bpe_vocab, _sample(windows, args.bpe_windows, seed=0))
    results = []
    for dataset, relative in DATASETS.items():
        for split in ("train", "dev", "test"):
            if not (DATA / relative / f"{split}.csv").is_file():
                continue  # EMP/H3 of the test data has dev and test only
            sequences = _sequences(DATA / relative / f"{split}.csv", args.rows)
            batch_size = args.train_batch_size if split == "train" else args.eval_batch_size
            for name, tokenizer in tokenizers.items():
                lengths = token_lengths(tokenizer.encode(sequences))
                results.append({"data": f"{dataset}/{split}", "tokenizer": name, **_row(lengths, batch_size, seed=0)})
                print(json.dumps(results[-1]), flush=True)
    pretraining = _sample(windows, args.pretrain_windows, seed=1)
    for name, tokenizer in tokenizers.items():
        lengths = token_lengths(tokenizer.encode(pretraining))
        results.append({"data": "pretraining_windows_512nt", "tokenizer": name, **_row(lengths, args.pretrain_batch_size, seed=0)})
        print(json.dumps(results[-1]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine_info("cpu", 1), "settings": vars(args) | {"output": args.output.name}, "results": results}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
