"""What a prepared dataset is: one row of the datasets sheet, and its ``{train,dev,test}.parquet`` splits.

Everything that reads a dataset (fine-tuning, the k-mer baseline, the probe)
needs only this module, not the code that builds datasets from CSVs, genomes
or archives (:mod:`vqdna.datasets.prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from vqdna import VqdnaError
from vqdna.artifacts import SPLITS
from vqdna.datasets.species import SpeciesSettings

TASKS = ("classification", "regression")
KINDS = ("csv", "genome_tiles", "species")


@dataclass
class DatasetSpec:
    """One row of the datasets sheet (``config/datasets.tsv``); columns of the same names.

    Fine-tuning defaults follow DNABERT-2's public GUE recipe (batch 32, lr 3e-5,
    warm-up 50 steps); the sheet sets epochs and anything else per task.
    """

    dataset: str
    task: str
    num_labels: int
    max_length: int
    group: str = ""
    metric: str = "mcc"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_steps: int = 50
    source: str = ""
    sha256: str = ""  # CSV folder: of train.csv + dev.csv + test.csv concatenated
    genomes: str = ""  # genome classification: comma-separated genome ids, in label order
    samples_per_genome: int | None = None  # genome classification: cap per genome and split
    max_train_samples: int | None = None  # a seeded subset of the train split (dev/test stay whole)
    description: str = ""
    seed: int = 0
    kind: str = ""  # csv | genome_tiles | species; empty: csv with a source, genome_tiles with genomes
    train_from: str = ""  # "dev": a folder without train.csv trains on 90% of dev.csv (non-standard, marked in the tables)
    split_samples: str = ""  # species: "train=5000,dev=5000,test=5000"
    train_chromosomes: str = ""  # species: comma-separated; empty: every chromosome not in dev or test
    dev_chromosomes: str = ""  # species: empty: HyenaDNA's 1,3,12,13
    test_chromosomes: str = ""  # species: empty: HyenaDNA's 5,7,9,10,11
    max_n_fraction: float | None = None  # species: redraw samples with more N (default 0.1)

    def __post_init__(self) -> None:
        self.kind = self.kind or ("genome_tiles" if self.genomes and not self.source else "csv")
        if self.kind not in KINDS:
            raise VqdnaError(f"dataset {self.dataset}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.train_from not in ("", "dev"):
            raise VqdnaError(f"dataset {self.dataset}: train_from must be empty or dev, got {self.train_from!r}")

    def species_settings(self) -> SpeciesSettings:
        chosen: dict = {"seed": self.seed}
        for split in ("train", "dev", "test"):
            names = _comma_list(getattr(self, f"{split}_chromosomes"))
            if names:
                chosen[f"{split}_chromosomes"] = tuple(names)
        if self.max_n_fraction is not None:
            chosen["max_n_fraction"] = self.max_n_fraction
        if self.split_samples:
            chosen["samples"] = _split_counts(self.split_samples, self.dataset)
        return SpeciesSettings(**chosen)

    def result_fields(self) -> dict:
        """What every result on this dataset records about it (fine-tuning, k-mer baseline, probe)."""
        return {
            "dataset": self.dataset,
            "group": self.group,
            "task": self.task,
            "metric": self.metric,
            "num_labels": self.num_labels if self.task == "classification" else 1,
            "max_length": self.max_length,
            "train_from": self.train_from or None,  # "dev": non-standard training split, marked in the tables
        }

    @property
    def genome_list(self) -> list[str]:
        return _comma_list(self.genomes)


def _comma_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (sheet cells that list genomes or chromosomes)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _split_counts(text: str, dataset: str) -> dict[str, int]:
    """'train=5000,dev=500,test=500' -> {'train': 5000, ...}."""
    counts = {}
    for item in _comma_list(text):
        split, sep, count = item.partition("=")
        if not sep or split.strip() not in SPLITS or not count.strip().isdigit():
            raise VqdnaError(f"dataset {dataset}: split_samples {text!r}: expected e.g. train=5000,dev=500,test=500")
        counts[split.strip()] = int(count)
    return counts


def read_split(path: str | Path) -> tuple[list[str], np.ndarray]:
    """A prepared split's sequences and labels."""
    table = pq.read_table(path, columns=["sequence", "label"])
    return table.column("sequence").to_pylist(), table.column("label").to_numpy()
