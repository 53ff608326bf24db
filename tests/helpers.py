"""Independent expectations shared by several test modules."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
import torch

from vqdna.lm.corpus import Codes
from vqdna.lm.pretrain import pretrain
from vqdna.tokenizer.api import VQTokenizer
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.tokens import tokenize_windows
from vqdna.tokenizer.vq import VQVAE, VQConfig
from vqdna.windows import WindowSettings, write_windows

TINY_ENCODER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
TINY_RUN = {"tokenizer": "tiny", "encoder": TINY_ENCODER, "steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "heldout_windows": 8}


def data_file(test_data: Path, relative: str) -> Path:
    """A file of the real test data; missing data is a failure, never a skip."""
    path = test_data / relative
    if not path.exists():
        pytest.fail(f"test data {path} is missing")
    return path


def tiny_tokenizer(directory: Path, seed: int, hrq: bool = False) -> str:
    """An untrained width-16 VQ tokenizer with 16 codes (HRQ: levels of 8 and 16 after blocks 1 and 2), saved."""
    torch.manual_seed(seed)
    if hrq:
        model = HRQ(HRQConfig(width=16, depth=2, codebook_size=4, taps=[1, 2], codebook_sizes=[8, 16]))
    else:
        model = VQVAE(VQConfig(width=16, depth=1, codebook_size=16))
    return VQTokenizer(model, device="cpu").save(directory)


def tiny_pretrained(folder: Path, seed: int, length: int = 3200, hrq: bool = False) -> dict:
    """Random genome -> windows -> tiny tokenizer (+ another one) -> tokens -> 3 pretraining steps, in ``folder``."""
    sequence = "".join(np.random.default_rng(seed).choice(list("ACGT"), length))
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60)) + "\n")
    pysam.faidx(str(fasta))
    write_windows(fasta, folder / "windows.parquet", "toy", WindowSettings(length=24, step=24))
    tiny_tokenizer(folder / "tokenizer", seed=0, hrq=hrq)
    tiny_tokenizer(folder / "other_tokenizer", seed=1, hrq=hrq)
    tokenize_windows(folder / "tokenizer", "tiny", folder / "windows.parquet", folder / "tokens.parquet", device="cpu")
    return pretrain("tiny_run", TINY_RUN, folder / "tokenizer", [folder / "tokens.parquet"], folder / "pretrained", device="cpu")


def expected_windows(sequences: dict[str, str], settings: WindowSettings) -> list[tuple[str, int, str]]:
    """(contig, start, split) of every window the settings imply, computed with exact fractions."""
    dev, test = Fraction(str(settings.dev_fraction)), Fraction(str(settings.test_fraction))
    max_n = Fraction(str(settings.max_n_fraction))
    expected = []
    for contig, sequence in sequences.items():
        length = len(sequence)
        train_end = math.floor(length * (1 - dev - test))
        dev_end = math.floor(length * (1 - test))
        regions = [("train", 0, train_end), ("dev", train_end, dev_end), ("test", dev_end, length)]
        for start in range(0, length, settings.step):
            end = start + settings.length
            inside = [split for split, a, b in regions if a <= start and end <= b]
            if not inside:
                continue
            n_count = sum(1 for base in sequence[start:end].upper() if base not in "ACGT")
            if Fraction(n_count, settings.length) <= max_n:
                expected.append((contig, start, inside[0]))
    return expected


def write_ggg_gue_folder(folder: Path, rows_per_split: int = 40) -> None:
    """GUE-format CSVs: 20-nt sequences, label 1 exactly when the sequence contains GGG."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(21)
    for split in ("train", "dev", "test"):
        lines = ["sequence,label"]
        for i in range(rows_per_split):
            while True:
                sequence = "".join(rng.choice(list("ACGT"), 20))
                if i % 2:
                    start = int(rng.integers(0, 18))
                    sequence = sequence[:start] + "GGG" + sequence[start + 3 :]
                if ("GGG" in sequence) == bool(i % 2):
                    break
            lines.append(f"{sequence},{i % 2}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")


def codes_of_token_files(paths: list[Path], split: str | None = None) -> Codes:
    """The oracle corpora are checked against: the files' codes in order, padded with 0, read as Python lists."""
    rows = []
    for path in paths:
        table = pq.read_table(path, filters=[("split", "==", split)] if split else None)
        levels = sorted(name for name in table.column_names if name.startswith("codes_l"))
        rows += [np.array(codes).T for codes in zip(*(table.column(name).to_pylist() for name in levels))]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    values = np.zeros((len(rows), int(lengths.max(initial=0)), rows[0].shape[1] if rows else 1), dtype=np.int64)
    for i, r in enumerate(rows):
        values[i, : len(r)] = r
    return Codes(values, lengths)
