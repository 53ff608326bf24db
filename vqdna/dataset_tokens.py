"""Dataset tokens: a prepared dataset's splits encoded once per tokenizer (workflow/rules/dataset_tokens.smk).

Fine-tuning runs every (run, seed) of a dataset, and several runs share a
tokenizer (in config/small.yaml three runs share the VQ-VAE): each job used to
encode the same splits again, up to two minutes of a 2-core job for HRQ. The
splits are encoded here once and read by every fine-tuning job and probe.

``results/dataset_tokens/{tokenizer}/{dataset}/{split}.parquet``: one row per
row of ``results/datasets/{dataset}/{split}.parquet``, in its order:

- ``index`` (int64): the row in the dataset split;
- ``label`` (int64, float64 for regression): copied, so the codes of one class
  can be looked at without a join;
- ``codes_l{n}`` (list<uint16>, uint32 above 65535 codes) per level: the
  sequence cut to the dataset's ``max_length`` nt (as fine-tuning cuts it) and
  encoded; for VQ/HRQ one code per ``stride`` nucleotides (1: the paper's), for
  baselines one id per token.

Key-value metadata: ``vqdna.dataset``, ``vqdna.split``, ``vqdna.max_length``,
``vqdna.tokenizer``, ``vqdna.tokenizer_type`` and ``vqdna.tokenizer_hash``, which
every reader checks against the tokenizer it was given; ``vqdna.stride`` where
the tokenizer's stride is above 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from vqdna import VqdnaError
from vqdna.artifacts import (
    COMPRESSION,
    SPLITS,
    atomic_dir,
    code_type,
    level_columns,
    read_metadata,
    with_metadata,
)
from vqdna.datasets.spec import read_split
from vqdna.runtime import check_tokenizer_hash, choose_device, encode_sequences
from vqdna.tokenizer.api import Tokenizer, load_tokenizer, stride_metadata

# Sequences per encode call and per Parquet row group: a progress step, and a bound on memory.
CHUNK_SIZE = 1024


def encoded_chunks(tokenizer: Tokenizer, sequences: list[str], max_length: int, *, where: str) -> Iterator[list[np.ndarray]]:
    """Per chunk of sequences, per sequence its codes (levels, tokens), each sequence cut to ``max_length`` nt first.

    A sequence the tokenizer refuses, or that gives no token, is one line naming ``where`` (the split's file) and its row.
    """
    with tqdm(total=len(sequences), desc=where, unit="seq", mininterval=10) as progress:
        for start in range(0, len(sequences), CHUNK_SIZE):
            chunk = [s[:max_length] for s in sequences[start : start + CHUNK_SIZE]]
            try:
                codes = encode_sequences(tokenizer, [f"row {start + i}" for i in range(len(chunk))], chunk)
            except VqdnaError as err:
                raise VqdnaError(f"{where}: {err}") from None
            yield codes
            progress.update(len(chunk))


def dataset_tokens_schema(tokenizer: Tokenizer, label_type: pa.DataType) -> pa.Schema:
    """``index``, ``label`` and one ``codes_l{n}`` list column per level."""
    fields = [pa.field("index", pa.int64()), pa.field("label", label_type)]
    fields += [pa.field(f"codes_l{level}", pa.list_(code_type(size))) for level, size in enumerate(tokenizer.level_sizes, start=1)]
    return pa.schema(fields)


def tokens_table(schema: pa.Schema, first_row: int, labels: np.ndarray, codes: list[np.ndarray]) -> pa.Table:
    """Rows ``first_row`` onwards of a split: their labels and codes (levels, tokens) as columns of ``schema``."""
    offsets = pa.array(np.concatenate([[0], np.cumsum([c.shape[1] for c in codes])]).astype(np.int32))
    columns = [pa.array(np.arange(first_row, first_row + len(codes), dtype=np.int64)), pa.array(labels, type=schema.field("label").type)]
    for level, field in enumerate(list(schema)[2:]):
        values = np.concatenate([c[level] for c in codes]).astype(field.type.value_type.to_pandas_dtype())
        columns.append(pa.ListArray.from_arrays(offsets, pa.array(values)))
    return pa.Table.from_arrays(columns, schema=schema)


def tokenize_dataset(
    tokenizer_dir: str | Path,
    tokenizer_name: str,
    dataset_dir: str | Path,
    max_length: int,
    output_dir: str | Path,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> dict[str, int]:
    """Write ``{train,dev,test}.parquet`` of ``dataset_dir`` encoded by the tokenizer to ``output_dir``; rows per split.

    The folder appears whole or not at all.
    """
    tokenizer = load_tokenizer(tokenizer_dir, device=choose_device(device, threads))
    dataset_dir = Path(dataset_dir)
    paths = {split: _split_path(dataset_dir, split) for split in SPLITS}  # all three there before any work
    rows = {}
    with atomic_dir(output_dir) as tmp:
        for split, path in paths.items():
            sequences, labels = read_split(path)
            schema = with_metadata(
                dataset_tokens_schema(tokenizer, pq.read_schema(path).field("label").type),
                dataset=read_metadata(path).get("vqdna.dataset", dataset_dir.name), split=split, max_length=str(max_length),
                tokenizer=tokenizer_name, tokenizer_type=tokenizer.config.type, tokenizer_hash=tokenizer.hash,
                **stride_metadata(tokenizer),
            )
            with pq.ParquetWriter(tmp / f"{split}.parquet", schema, compression=COMPRESSION) as writer:
                written = 0
                for codes in encoded_chunks(tokenizer, sequences, max_length, where=str(path)):
                    writer.write_table(tokens_table(schema, written, labels[written : written + len(codes)], codes))
                    written += len(codes)
            rows[split] = written
    return rows


def _split_path(dataset_dir: Path, split: str) -> Path:
    path = dataset_dir / f"{split}.parquet"
    if not path.is_file():
        raise VqdnaError(f"{path} not found; run prepare_dataset for this dataset first")
    return path


def read_split_tokens(path: str | Path, tokenizer_hash: str, max_length: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and per row codes (levels, tokens) int64 of one dataset-tokens split.

    One line when the file is missing, was made by another tokenizer, or was
    cut to another ``max_length`` than the one given.
    """
    path = Path(path)
    if not path.is_file():
        raise VqdnaError(f"{path} not found; run tokenize_dataset for this tokenizer and dataset first")
    meta = read_metadata(path)
    check_tokenizer_hash(
        meta.get("vqdna.tokenizer_hash"), tokenizer_hash, made=f"{path} was made with", given="the tokenizer given",
        remedy="delete its folder and rerun so the dataset is tokenized again",
    )
    if max_length is not None and meta.get("vqdna.max_length") != str(max_length):
        raise VqdnaError(
            f"{path}: sequences cut to {meta.get('vqdna.max_length')} nt, but the dataset's max_length is {max_length}; "
            "delete its folder and rerun so the dataset is tokenized again"
        )
    table = pq.read_table(path)
    levels = level_columns(table.column_names)
    if not levels:
        raise VqdnaError(f"{path}: no codes_l1 column; not a dataset-tokens file")
    flat = []
    for name in levels:
        column = table.column(name).combine_chunks()
        offsets = column.offsets.to_numpy()
        flat.append(np.split(column.values.to_numpy().astype(np.int64), offsets[1:-1] - offsets[0]))
    codes = [np.stack(per_level) for per_level in zip(*flat)]
    return table.column("label").to_numpy(), codes


def read_dataset_tokens(
    folder: str | Path, tokenizer_hash: str, max_length: int | None = None
) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """split -> (labels, per row codes) of a dataset-tokens folder."""
    return {split: read_split_tokens(Path(folder) / f"{split}.parquet", tokenizer_hash, max_length) for split in SPLITS}


def encode_dataset(tokenizer: Tokenizer, dataset_dir: str | Path, max_length: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """split -> (labels, per row codes) of a prepared dataset encoded in process: what :func:`read_dataset_tokens` reads back."""
    paths = {split: _split_path(Path(dataset_dir), split) for split in SPLITS}
    out = {}
    for split, path in paths.items():
        sequences, labels = read_split(path)
        out[split] = labels, [c for chunk in encoded_chunks(tokenizer, sequences, max_length, where=str(path)) for c in chunk]
    return out


def is_dataset_tokens(folder: str | Path) -> bool:
    """Whether ``folder`` holds dataset tokens (this module's output) rather than a prepared dataset."""
    path = Path(folder) / "train.parquet"
    return path.is_file() and "vqdna.tokenizer_hash" in read_metadata(path)


def dataset_codes(tokenizer: Tokenizer, folder: str | Path, max_length: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
    """split -> (labels, per row codes) of ``folder``: read from dataset tokens, or a prepared dataset encoded now."""
    if is_dataset_tokens(folder):
        return read_dataset_tokens(folder, tokenizer.hash, max_length)
    return encode_dataset(tokenizer, folder, max_length)
