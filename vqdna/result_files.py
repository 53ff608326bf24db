"""Which result a ``metrics.json`` is, told by its contract path (DESIGN.md, "Artifact contracts").

    results/finetune/{run}/{dataset}/seed{seed}/metrics.json     a fine-tuned run
    results/kmer_baseline/{dataset}/seed{seed}/metrics.json      the bag-of-k-mers floor
    results/probe/{tokenizer}/{dataset}/metrics.json             a linear probe on tokenizer features
    results/tokenizers/{tokenizer}/metrics.json                  a tokenizer's held-out evaluation
    results/pretrain/{run}/metrics.json                          a pretraining run

The paper tables (:mod:`vqdna.tables`) and the comparison tables (:mod:`vqdna.evaluation.compare`) both
read these files; the path is parsed here once, so the two can never disagree on what a file is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vqdna import VqdnaError

STAGES = ("finetune", "kmer_baseline", "probe", "tokenizers", "pretrain")
# Shown in a table cell whose result exists but was written before its stage wrote the field the cell
# needs: "–" says there is no result, which would be untrue.
OLDER_RESULT = "older result: rerun its stage"


@dataclass(frozen=True)
class ResultFile:
    """One result file: its stage, the names its path carries ("" where the stage has none) and its content."""

    path: Path
    stage: str
    results_root: Path  # the results/ folder it lies in: the datasets' splits are there too
    metrics: dict
    run: str = ""
    dataset: str = ""
    tokenizer: str = ""

    @property
    def seed(self) -> int:
        return int(self.metrics.get("seed", 0))


def read_result_file(path: str | Path, reader: str = "the tables") -> ResultFile:
    """Parse ``path`` by its contract path and read its JSON; ``reader`` names the caller in the error."""
    path = Path(path)
    parts = path.parts
    where = next((i for i in range(len(parts) - 2) if parts[i] == "results" and parts[i + 1] in STAGES), None)
    if where is None or parts[-1] != "metrics.json":
        raise VqdnaError(
            f"{path}: not a result file {reader} know (expected results/{{{','.join(STAGES)}}}/.../metrics.json)"
        )
    stage, names = parts[where + 1], parts[where + 2 : -1]
    expected = {"finetune": 3, "kmer_baseline": 2, "probe": 2, "tokenizers": 1, "pretrain": 1}[stage]
    if len(names) != expected:
        raise VqdnaError(f"{path}: a {stage} result lies {expected} folder(s) below results/{stage}/, not {len(names)}")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VqdnaError(f"{path}: unreadable result file ({error}); rerun the job that wrote it") from None
    root = Path(*parts[: where + 1])
    if stage == "finetune":
        return ResultFile(path, stage, root, metrics, run=names[0], dataset=names[1])
    if stage == "kmer_baseline":
        return ResultFile(path, stage, root, metrics, dataset=names[0])
    if stage == "probe":
        return ResultFile(path, stage, root, metrics, tokenizer=names[0], dataset=names[1])
    if stage == "tokenizers":
        return ResultFile(path, stage, root, metrics, tokenizer=names[0])
    return ResultFile(path, stage, root, metrics, run=names[0])
