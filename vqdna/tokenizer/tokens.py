"""Token files: a windows file run through a tokenizer, one ``codes_l{n}`` column per level.

Every token file carries the tokenizer's name and content hash; readers take
the hash they expect and refuse a file made with another tokenizer.
"""

from __future__ import annotations

import ctypes
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
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
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer, stride_metadata

KEY_COLUMNS = [f.name for f in WINDOW_KEY_FIELDS]
ROWS_PER_GROUP = 8192
_AHEAD = 2  # row groups read ahead of the device step, and queued behind it for the writer


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


def prepare_ids(tokenizer, sequences: list[str]):
    """Reader stage: what the device step takes. Learned tokenizers: base ids (N, L), pinned for a CUDA device."""
    if not isinstance(tokenizer, VQTokenizer):
        return sequences
    ids = base_ids("".join(sequences)).reshape(len(sequences), -1)
    return torch.from_numpy(ids).pin_memory() if tokenizer.device.type == "cuda" else ids


def _encode(tokenizer, prepared, batch_size: int) -> list:
    """Device step. Learned tokenizers: per batch of ``batch_size`` windows, codes per level. Baselines: (ids, starts) per window."""
    if not isinstance(tokenizer, VQTokenizer):
        return tokenizer.encode_with_starts(prepared)
    return [tokenizer.encode_ids(prepared[i : i + batch_size]) for i in range(0, len(prepared), batch_size)]


def code_columns(tokenizer, encoded: list) -> list[pa.ListArray]:
    """Writer stage. Learned tokenizers: one code per level and ``stride`` nucleotides. Baselines: ids + token_starts."""
    if isinstance(tokenizer, VQTokenizer):
        return [_list_column(np.concatenate([p[level] for p in encoded]), size) for level, size in enumerate(tokenizer.level_sizes)]
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
    return write_token_file(load_tokenizer(tokenizer_dir, device=device), tokenizer_name, windows_path, output, batch_size=batch_size)


def write_token_file(tokenizer, tokenizer_name: str, windows_path: str | Path, output: str | Path, *, batch_size: int = 256) -> int:
    """:func:`tokenize_windows` with a loaded tokenizer: three stages, so the device never waits on I/O.

    A reader thread reads row groups ahead and turns them into base ids, this
    thread runs the device step (``encode_ids``), a writer thread builds the
    Arrow columns and writes Parquet, each with at most ``_AHEAD`` row groups
    queued. Threads suffice: pyarrow and torch release the GIL in their heavy
    work. The first error of any stage is raised here, the other stages stop,
    and the output never appears (:func:`parquet_writer` writes atomically).
    """
    windows_meta = read_metadata(windows_path)
    schema = with_metadata(
        tokens_schema(tokenizer.level_sizes, with_token_starts=not isinstance(tokenizer, VQTokenizer)),
        genome=windows_meta.get("vqdna.genome", ""),
        tokenizer=tokenizer_name,
        tokenizer_type=tokenizer.config.type,
        tokenizer_hash=tokenizer.hash,
        windows=windows_meta.get("vqdna.windows", ""),
        **stride_metadata(tokenizer),
    )
    source = pq.ParquetFile(windows_path)
    batches = iter_row_groups(source, columns=KEY_COLUMNS + ["sequence"])

    def read():  # reader thread; the one-worker pool keeps the calls of next() in order on one thread
        batch = next(batches, None)
        return None if batch is None else (batch, prepare_ids(tokenizer, batch.column("sequence").to_pylist()))

    def write(batch: pa.RecordBatch, encoded: list) -> None:  # writer thread, row groups in order
        columns = [batch.column(name) for name in KEY_COLUMNS] + code_columns(tokenizer, encoded)
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema), row_group_size=ROWS_PER_GROUP)
        _release_free_memory()

    rows = 0
    reader = ThreadPoolExecutor(1, thread_name_prefix="tokenize-read")
    writes = ThreadPoolExecutor(1, thread_name_prefix="tokenize-write")
    with parquet_writer(output, schema) as writer, tqdm(
        total=source.metadata.num_rows, unit="window", desc=f"tokenize {Path(windows_path).stem}", mininterval=10
    ) as progress:
        try:
            reads = deque(reader.submit(read) for _ in range(_AHEAD))
            written: deque[Future] = deque()
            while (item := reads.popleft().result()) is not None:
                reads.append(reader.submit(read))
                batch, prepared = item
                written.append(writes.submit(write, batch, _encode(tokenizer, prepared, batch_size)))
                if len(written) > _AHEAD:
                    written.popleft().result()  # a writer error surfaces here, at most _AHEAD row groups late
                rows += batch.num_rows
                progress.update(batch.num_rows)
            for future in written:
                future.result()
        finally:  # on an error: queued work dropped, running work finished, threads joined, before the writer closes
            reader.shutdown(cancel_futures=True)
            writes.shutdown(cancel_futures=True)
    return rows


def check_token_file(path: str | Path, tokenizer_hash: str) -> None:
    """One line when the token file at ``path`` was made by another tokenizer than the one with ``tokenizer_hash``."""
    check_tokenizer_hash(
        read_metadata(path).get("vqdna.tokenizer_hash"), tokenizer_hash, made=f"{path} was made with",
        given="the tokenizer given", remedy="it belongs to another tokenizer: delete it and rerun so it is re-tokenized",
    )
