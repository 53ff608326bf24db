"""Fixed-length windows over a bgzip FASTA, with train/dev/test split by region, streamed to Parquet.

Split by region, per contig: the first ``1 - dev_fraction - test_fraction`` of
each contig is train, the next ``dev_fraction`` dev, the last ``test_fraction``
test. Windows sit on one grid (starts at multiples of ``step`` from the contig
start) and a window is kept only when it lies wholly inside one split's region,
so no window overlaps another split's bases, and every contig contributes to
every split. The last partial window of a region is dropped.

The genome is a faidx-indexed FASTA read through pysam (the workflow's stored
genomes), or a :class:`~vqdna.genome.FastaRecords` read into memory without
pysam (a small FASTA on a machine that has no pysam).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from vqdna import VqdnaError
from vqdna.artifacts import SPLITS, WINDOWS_SCHEMA, parquet_writer, with_metadata
from vqdna.genome import FastaRecords, base_ids, normalise_sequence, open_indexed_fasta

log = logging.getLogger(__name__)
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
_ROWS_PER_GROUP = 8192  # ~4 MB of sequence per row group at 512 nt: streams in small, flat memory


@dataclass(frozen=True)
class WindowSettings:
    length: int = 512
    step: int = 512
    max_n_fraction: float = 0.1
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    reverse_complement: bool = False  # also emit each window's reverse complement (strand -1)

    def __post_init__(self) -> None:
        if self.length < 1 or self.step < 1:
            raise VqdnaError(f"windows: length and step must be positive (got {self.length}, {self.step})")
        if not 0 <= self.max_n_fraction <= 1:
            raise VqdnaError(f"windows: max_n_fraction must lie in [0, 1] (got {self.max_n_fraction})")
        if self.dev_fraction < 0 or self.test_fraction < 0 or self.dev_fraction + self.test_fraction >= 1:
            raise VqdnaError("windows: dev_fraction and test_fraction must be >= 0 and sum to < 1")


def split_regions(contig_length: int, settings: WindowSettings) -> list[tuple[str, int, int]]:
    """``[(split, start, end), ...]`` covering ``[0, contig_length)`` in train, dev, test order."""
    # Exact fractions: with floats 1 - 0.3 - 0.2 is 0.4999..., which would shift a boundary by one base.
    dev, test = Fraction(str(settings.dev_fraction)), Fraction(str(settings.test_fraction))
    train_end = math.floor(contig_length * (1 - dev - test))
    dev_end = math.floor(contig_length * (1 - test))
    return [("train", 0, train_end), ("dev", train_end, dev_end), ("test", dev_end, contig_length)]


def grid_starts(region_start: int, region_end: int, settings: WindowSettings) -> np.ndarray:
    """Window starts on the contig's grid that fit wholly inside ``[region_start, region_end)``."""
    first = -(-region_start // settings.step) * settings.step
    last = region_end - settings.length
    if last < first:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, last + 1, settings.step, dtype=np.int64)


def reverse_complement(sequence: str) -> str:
    return sequence.translate(_COMPLEMENT)[::-1]


def iter_window_batches(fasta: str | Path | FastaRecords, genome: str, settings: WindowSettings) -> Iterator[pa.RecordBatch]:
    """Yield record batches of windows (uppercase ACGTN), N-filtered, in contig order.

    ``fasta``: the path of a faidx-indexed FASTA, or a :class:`FastaRecords`.
    """
    with fasta if isinstance(fasta, FastaRecords) else open_indexed_fasta(fasta) as reader, tqdm(
        total=sum(reader.lengths), unit="nt", unit_scale=True, desc=f"windows {genome}", mininterval=5
    ) as progress:
        for contig, length in zip(reader.references, reader.lengths):
            for split, region_start, region_end in split_regions(length, settings):
                starts = grid_starts(region_start, region_end, settings)
                for chunk in np.array_split(starts, max(1, -(-len(starts) // _ROWS_PER_GROUP))):
                    if len(chunk):
                        batch = _window_batch(reader, genome, contig, split, chunk, settings)
                        if batch.num_rows:
                            yield batch
                progress.update(region_end - region_start)


def _window_batch(fasta, genome: str, contig: str, split: str, starts: np.ndarray, settings: WindowSettings) -> pa.RecordBatch:
    span_start, span_end = int(starts[0]), int(starts[-1]) + settings.length
    span = normalise_sequence(fasta.fetch(contig, span_start, span_end))
    is_n = np.frombuffer(span.encode("ascii"), dtype=np.uint8) == ord("N")
    n_before = np.concatenate([[0], np.cumsum(is_n, dtype=np.int64)])
    offsets = starts - span_start
    n_counts = n_before[offsets + settings.length] - n_before[offsets]
    keep = n_counts <= settings.max_n_fraction * settings.length
    starts, offsets = starts[keep], offsets[keep]
    sequences = [span[o : o + settings.length] for o in offsets.tolist()]
    strands = [1] * len(sequences)
    if settings.reverse_complement:
        starts = np.concatenate([starts, starts])
        sequences += [reverse_complement(s) for s in sequences]
        strands += [-1] * (len(strands))
    n = len(sequences)
    return pa.RecordBatch.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([genome])),
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([contig])),
            pa.array(starts, pa.int64()),
            pa.array(starts + settings.length, pa.int64()),
            pa.array(strands, pa.int8()),
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([split])),
            pa.array(sequences, pa.string()),
        ],
        schema=WINDOWS_SCHEMA,
    )


def write_windows(fasta_path: str | Path | FastaRecords, output: str | Path, genome: str, settings: WindowSettings) -> dict:
    """Stream windows of ``fasta_path`` (an indexed FASTA, or :class:`FastaRecords`) into ``output``; returns per-split counts.

    A genome with no usable window is an error (and leaves no file).
    """
    counts = dict.fromkeys(SPLITS, 0)
    schema = with_metadata(WINDOWS_SCHEMA, genome=genome, windows=asdict(settings))
    with parquet_writer(output, schema) as writer:
        for batch in iter_window_batches(fasta_path, genome, settings):
            writer.write_batch(batch, row_group_size=_ROWS_PER_GROUP)
            split = batch.column("split").dictionary[0].as_py()
            counts[split] += batch.num_rows
        for split, count in counts.items():
            if count == 0:
                log.warning("%s: genome %s has no %s-split window", fasta_path, genome, split)
        if sum(counts.values()) == 0:
            raise VqdnaError(
                f"{fasta_path}: genome {genome} has no usable window (length {settings.length}, "
                f"max_n_fraction {settings.max_n_fraction}); shorten the windows or check the sequence"
            )
    return counts


def read_base_ids(path: str | Path, split: str) -> np.ndarray:
    """The windows of one split as base ids (windows, length) uint8, in file order."""
    table = pq.read_table(path, columns=["sequence"], filters=[("split", "==", split)])
    sequences = table.column("sequence").to_pylist()
    if not sequences:
        return np.empty((0, 0), dtype=np.uint8)
    return base_ids("".join(sequences)).reshape(len(sequences), -1)
