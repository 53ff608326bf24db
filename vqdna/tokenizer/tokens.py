"""Token files: a windows file run through a tokenizer, one ``codes_l{n}`` column per level.

Every token file carries the tokenizer's name and content hash; readers take
the hash they expect and refuse a file made with another tokenizer.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from vqdna.artifacts import (
    WINDOW_KEY_FIELDS,
    code_type,
    iter_row_groups,
    parquet_writer,
    read_metadata,
    tokens_schema,
    with_metadata,
)
from vqdna.genome import base_ids
from vqdna.runtime import check_tokenizer_hash
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer

_KEY_COLUMNS = [f.name for f in WINDOW_KEY_FIELDS]
_ROWS_PER_GROUP = 8192


def _list_column(codes: np.ndarray, vocab_size: int) -> pa.ListArray:
    """(rows, L) codes -> list<uint16|uint32>, built from one flat buffer."""
    rows, length = codes.shape
    offsets = pa.array(np.arange(0, (rows + 1) * length, length, dtype=np.int32))
    values = pa.array(codes.ravel().astype(code_type(vocab_size).to_pandas_dtype()))
    return pa.ListArray.from_arrays(offsets, values)


def _ragged_column(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int32)
    values = np.concatenate(arrays) if arrays else np.empty(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(value_type.to_pandas_dtype())))


def _code_columns(tokenizer, sequences: list[str], batch_size: int) -> list[pa.ListArray]:
    """Learned tokenizers: one code per nucleotide and level. Baselines: ids + token_starts."""
    if isinstance(tokenizer, VQTokenizer):
        ids = base_ids("".join(sequences)).reshape(len(sequences), -1)
        parts = [tokenizer.encode_ids(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
        return [_list_column(np.concatenate([p[level] for p in parts]), size) for level, size in enumerate(tokenizer.level_sizes)]
    encoded = tokenizer.encode_with_starts(sequences)
    return [
        _ragged_column([ids for ids, _ in encoded], code_type(tokenizer.level_sizes[0])),
        _ragged_column([starts for _, starts in encoded], pa.int32()),
    ]


def _release_free_memory() -> None:
    """Hand freed heap pages back to the system after each row group (glibc only; elsewhere a no-op).

    torch's per-batch activations land on the heap between Arrow's and Python's
    small blocks; glibc then keeps the freed pages, and tokenizing memory climbed
    with the genome (10 Mb 702 MB, 100 Mb 1018 MB; benchmarks/tokenize_memory.py).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
    tokenizer = load_tokenizer(tokenizer_dir, device=device)
    windows_meta = read_metadata(windows_path)
    schema = with_metadata(
        tokens_schema(tokenizer.level_sizes, with_token_starts=not isinstance(tokenizer, VQTokenizer)),
        genome=windows_meta.get("vqdna.genome", ""),
        tokenizer=tokenizer_name,
        tokenizer_type=tokenizer.config.type,
        tokenizer_hash=tokenizer.hash,
        windows=windows_meta.get("vqdna.windows", ""),
    )
    source = pq.ParquetFile(windows_path)
    rows = 0
    with parquet_writer(output, schema) as writer, tqdm(
        total=source.metadata.num_rows, unit="window", desc=f"tokenize {Path(windows_path).stem}", mininterval=10
    ) as progress:
        for batch in iter_row_groups(source, columns=_KEY_COLUMNS + ["sequence"]):
            columns = [batch.column(name) for name in _KEY_COLUMNS]
            columns += _code_columns(tokenizer, batch.column("sequence").to_pylist(), batch_size)
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema), row_group_size=_ROWS_PER_GROUP)
            rows += batch.num_rows
            progress.update(batch.num_rows)
            _release_free_memory()
    return rows


def check_token_file(path: str | Path, tokenizer_hash: str) -> None:
    """One line when the token file at ``path`` was made by another tokenizer than the one with ``tokenizer_hash``."""
    check_tokenizer_hash(
        read_metadata(path).get("vqdna.tokenizer_hash"), tokenizer_hash, made=f"{path} was made with",
        given="the tokenizer given", remedy="it belongs to another tokenizer: delete it and rerun so it is re-tokenized",
    )
