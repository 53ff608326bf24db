"""Token files: a windows file run through a tokenizer, one ``codes_l{n}`` column per level.

Every token file carries the tokenizer's name and content hash; readers take
the hash they expect and refuse a file made with another tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from vqdna import VqdnaError
from vqdna.genome import base_ids
from vqdna.io import WINDOW_KEY_FIELDS, code_type, parquet_writer, read_metadata, require_metadata, tokens_schema, with_metadata
from vqdna.tokenizer.api import Tokenizer

_KEY_COLUMNS = [f.name for f in WINDOW_KEY_FIELDS]
_ROWS_PER_GROUP = 8192


def code_columns(num_levels: int) -> list[str]:
    return [f"codes_l{n}" for n in range(1, num_levels + 1)]


def _list_column(codes: np.ndarray, vocab_size: int) -> pa.ListArray:
    """(rows, L) codes -> list<uint16|uint32>, built from one flat buffer."""
    rows, length = codes.shape
    offsets = pa.array(np.arange(0, (rows + 1) * length, length, dtype=np.int32))
    values = pa.array(codes.ravel().astype(code_type(vocab_size).to_pandas_dtype()))
    return pa.ListArray.from_arrays(offsets, values)


def tokenize_windows(
    tokenizer_dir: str | Path,
    tokenizer_name: str,
    windows_path: str | Path,
    output: str | Path,
    *,
    batch_size: int = 256,
    threads: int | None = None,
    device: str | None = None,
) -> int:
    """Write the token file of one genome; returns its row count."""
    if threads:
        torch.set_num_threads(threads)
    tokenizer = Tokenizer.load(tokenizer_dir, device=device)
    windows_meta = read_metadata(windows_path)
    schema = with_metadata(
        tokens_schema(tokenizer.level_sizes, with_token_starts=False),
        genome=windows_meta.get("vqdna.genome", ""),
        tokenizer=tokenizer_name,
        tokenizer_hash=tokenizer.hash,
        windows=windows_meta.get("vqdna.windows", ""),
    )
    source = pq.ParquetFile(windows_path)
    rows = 0
    with parquet_writer(output, schema) as writer, tqdm(
        total=source.metadata.num_rows, unit="window", desc=f"tokenize {Path(windows_path).stem}", mininterval=10
    ) as progress:
        for batch in source.iter_batches(batch_size=_ROWS_PER_GROUP, columns=_KEY_COLUMNS + ["sequence"]):
            sequences = batch.column("sequence").to_pylist()
            ids = base_ids("".join(sequences)).reshape(len(sequences), -1)
            parts = [tokenizer.encode_ids(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
            columns = [batch.column(name) for name in _KEY_COLUMNS]
            for level, size in enumerate(tokenizer.level_sizes):
                columns.append(_list_column(np.concatenate([p[level] for p in parts]), size))
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema), row_group_size=_ROWS_PER_GROUP)
            rows += batch.num_rows
            progress.update(batch.num_rows)
    return rows


def read_codes(path: str | Path, expected_hash: str, split: str | None = None) -> np.ndarray:
    """Codes of a token file as (windows, length, levels) uint16/uint32, after checking its tokenizer hash."""
    require_metadata(
        path,
        "tokenizer_hash",
        expected_hash,
        "it was made with another tokenizer: delete it and rerun so it is re-tokenized",
    )
    schema = pq.read_schema(path)
    levels = [name for name in schema.names if name.startswith("codes_l")]
    table = pq.read_table(path, columns=levels, filters=[("split", "==", split)] if split else None)
    if table.num_rows == 0:
        return np.empty((0, 0, len(levels)), dtype=np.uint16)
    arrays = []
    for name in levels:
        column = table.column(name).combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        if len(flat) % table.num_rows:
            raise VqdnaError(f"{path}: windows of unequal length in {name}")
        arrays.append(flat.reshape(table.num_rows, -1))
    return np.stack(arrays, axis=-1)
