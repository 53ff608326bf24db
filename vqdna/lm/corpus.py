"""The pretraining corpus on disk: every window's codes in one flat, memory-mapped array.

Each pretraining step reads a random global batch of windows, so the corpus
needs random access by window. Reading every token file into each rank's
memory, padded, costs (ranks x corpus): about 6 GB per rank for the human
genome at 512 nt. Instead rank 0 streams the token files once, row group by
row group, into ``tokens.bin`` (all tokens, levels interleaved) and
``starts.npy`` (where each window begins); every rank maps them read-only and
reads only the windows of its own micro-batches. The page cache then holds at
most one copy per node, and only of what was read.

The folder is built atomically (a killed build leaves no folder that looks
complete) and lives in the run's state folder, so a resumed run maps it again
instead of rebuilding it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm import tqdm

from vqdna import VqdnaError
from vqdna.artifacts import atomic_dir
from vqdna.tokenizer.tokens import check_token_file

TOKENS = "tokens.bin"
STARTS = "starts.npy"
LAYOUT = "layout.json"


class WindowCodes(Protocol):
    """The codes of a set of windows as pretraining reads them, batch by batch.

    :class:`MappedCodes` (the corpus on disk) and :class:`Codes`
    (windows in memory: the held-out sample, benchmarks) both are.
    """

    lengths: np.ndarray  # (windows,) tokens per window

    def __len__(self) -> int: ...

    def padded(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), longest of them, levels) codes, 0 after each window's end."""


@dataclass(eq=False)  # hashed by identity: pretraining caches each epoch's order per corpus
class Codes:
    """Token codes of windows, padded: ``values`` (windows, longest, levels), ``lengths`` (windows,)."""

    values: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def padded(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), longest of them, levels) codes, 0 after each window's end."""
        return self.values[rows, : int(self.lengths[rows].max()) if len(rows) else 0]

    def chunked(self, length: int) -> "Codes":
        """Cut every window into consecutive pieces of at most ``length`` tokens, so nothing is left unread."""
        if self.values.shape[1] <= length:
            return self
        pieces, lengths = [], []
        for start in range(0, self.values.shape[1], length):
            piece_lengths = np.clip(self.lengths - start, 0, length)
            keep = piece_lengths > 0
            piece = np.zeros((int(keep.sum()), length, self.values.shape[2]), dtype=self.values.dtype)
            chunk = self.values[keep, start : start + length]
            piece[:, : chunk.shape[1]] = chunk
            pieces.append(piece)
            lengths.append(piece_lengths[keep])
        return Codes(np.concatenate(pieces), np.concatenate(lengths))


@dataclass(eq=False)  # hashed by identity, as Codes
class MappedCodes:
    """Windows (or pieces of windows) read from one flat ``tokens`` array; a :class:`WindowCodes`."""

    tokens: np.ndarray  # (total tokens, levels), memory-mapped
    starts: np.ndarray  # (windows,) first token of each window in ``tokens``
    lengths: np.ndarray  # (windows,)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def longest(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    def padded(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), longest of them, levels) codes, 0 after each window's end."""
        lengths = self.lengths[rows]
        values = np.zeros((len(rows), int(lengths.max()) if len(rows) else 0, self.tokens.shape[1]), dtype=self.tokens.dtype)
        for i, (start, length) in enumerate(zip(self.starts[rows], lengths)):  # one contiguous read per window
            values[i, :length] = self.tokens[start : start + length]
        return values

    def take(self, rows: np.ndarray) -> Codes:
        """The windows ``rows`` in memory."""
        return Codes(self.padded(rows), self.lengths[rows])

    def chunked(self, length: int) -> MappedCodes:
        """Pieces of at most ``length`` tokens, in the order of :meth:`Codes.chunked` (no copy of the tokens)."""
        if self.longest <= length:
            return self
        starts, lengths = [], []
        for offset in range(0, self.longest, length):
            keep = self.lengths > offset
            starts.append(self.starts[keep] + offset)
            lengths.append(np.minimum(self.lengths[keep] - offset, length))
        return MappedCodes(self.tokens, np.concatenate(starts), np.concatenate(lengths))


def _level_columns(path: Path) -> list[str]:
    return [name for name in pq.read_schema(path).names if name.startswith("codes_l")]


def build_corpus(token_files: list[str | Path], tokenizer_hash: str, split: str, folder: str | Path) -> Path:
    """Write the ``split`` windows of ``token_files`` (in file order) into ``folder``; memory stays one batch."""
    token_files = [Path(p) for p in token_files]
    for path in token_files:
        check_token_file(path, tokenizer_hash)
    levels = _level_columns(token_files[0])
    lengths, dtype = [], None
    with atomic_dir(folder) as tmp, open(tmp / TOKENS, "wb") as out:
        for path in token_files:
            if _level_columns(path) != levels:
                raise VqdnaError(f"{path}: code levels {_level_columns(path)} differ from {token_files[0]}'s {levels}")
            batches = ds.dataset(path, format="parquet").to_batches(columns=levels, filter=pc.field("split") == split)
            for batch in tqdm(batches, desc=f"corpus {split} {path.stem}", unit="batch", mininterval=10):
                if batch.num_rows == 0:
                    continue
                columns = [batch.column(name) for name in levels]
                flat = np.stack([c.flatten().to_numpy(zero_copy_only=False) for c in columns], axis=1)
                dtype = flat.dtype
                out.write(np.ascontiguousarray(flat).tobytes())
                lengths.append(np.diff(np.asarray(columns[0].offsets)))
        lengths = np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, np.int64)
        np.save(tmp / STARTS, np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths)
        layout = {"levels": len(levels), "dtype": np.dtype(dtype or np.uint16).name, "tokens": int(lengths.sum()), "windows": len(lengths)}
        (tmp / LAYOUT).write_text(json.dumps(layout))
    return Path(folder)


def open_corpus(folder: str | Path) -> MappedCodes:
    folder = Path(folder)
    layout = json.loads((folder / LAYOUT).read_text())
    starts = np.load(folder / STARTS)
    shape = (layout["tokens"], layout["levels"])
    if layout["tokens"]:
        tokens = np.memmap(folder / TOKENS, dtype=layout["dtype"], mode="r", shape=shape)
    else:  # numpy cannot map an empty file
        tokens = np.zeros(shape, dtype=layout["dtype"])
    lengths = np.diff(np.append(starts, layout["tokens"]))
    return MappedCodes(tokens, starts, lengths)
