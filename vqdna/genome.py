"""FASTA in (plain, gzip or bgzip), validated, re-wrapped, bgzip-compressed and faidx-indexed.

The stored genome keeps the source's letters (soft-masking and IUPAC codes
included) so it stays a faithful reference; the sequence policy that turns
letters into model input (uppercase, ambiguity codes to N) is applied when
windows are cut (:func:`normalise_sequence`).

pysam (bgzip, faidx, indexed reads) is imported inside the functions that use
it, never at module level: the model side of the package (tokenizers, token
files, pretraining, fine-tuning, predict) needs only the sequence policy here
and must import on a machine without pysam, such as a bare GPU node.
:class:`FastaRecords` reads a small FASTA without pysam or an index.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vqdna import VqdnaError

LINE_WIDTH = 60  # faidx needs every line of a record but the last to have the same width

IUPAC_AMBIGUOUS = "NRYKMSWBDHV"
_ALLOWED_BYTES = ("ACGT" + IUPAC_AMBIGUOUS).encode()
_ALLOWED_BYTES += _ALLOWED_BYTES.lower()
_ALLOWED_LETTERS = frozenset(_ALLOWED_BYTES.decode())

# Sequence policy: uppercase; every IUPAC ambiguity letter becomes N.
_POLICY = str.maketrans(
    {**{c.lower(): c for c in "ACGT"}, **{c: "N" for c in IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower()}}
)


BASES = "ACGTN"  # model alphabet; ids 0..4 in this order
# The sequence policy and the alphabet in one byte table, so base_ids is a single lookup: ACGT in either
# case -> 0..3, every IUPAC ambiguity letter -> 4 (N), any other byte -> 255 (invalid).
_BASE_IDS = np.full(256, 255, dtype=np.uint8)
for _byte in _ALLOWED_BYTES:
    _BASE_IDS[_byte] = BASES.index(chr(_byte).translate(_POLICY))
del _byte
_BASE_LETTERS = np.frombuffer(BASES.encode(), dtype=np.uint8)


def normalise_sequence(sequence: str) -> str:
    """Apply the sequence policy: uppercase, IUPAC ambiguity letters to N."""
    return sequence.translate(_POLICY)


def base_ids(sequence: str) -> np.ndarray:
    """Text -> uint8 ids 0..4 over ACGTN, the sequence policy included (one byte-table lookup, no translated copy of the text)."""
    ids = _BASE_IDS[np.frombuffer(sequence.encode("ascii", "replace"), dtype=np.uint8)]  # one '?' per non-ASCII character
    if (ids == 255).any():
        bad = sequence[int(np.argmax(ids == 255))]
        raise VqdnaError(f"invalid character {bad!r} in sequence (allowed: A C G T and IUPAC codes)")
    return ids


def bases_from_ids(ids: np.ndarray) -> str:
    return _BASE_LETTERS[ids].tobytes().decode()


@dataclass(frozen=True)
class Contig:
    name: str
    length: int


def open_maybe_gzip(path: str | Path) -> BinaryIO:
    """Open plain, gzip or bgzip (a multi-member gzip) for binary reading."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _not_fasta_reason(first_line: bytes) -> str:
    if first_line.startswith(b"@"):
        return "it looks like FASTQ (first line starts with '@')"
    if first_line.startswith(b"LOCUS"):
        return "it looks like GenBank (first line starts with 'LOCUS')"
    return f"the first line does not start with '>' ({first_line[:40]!r})"


def _check_utf8_header(line: bytes, label: str, line_no: int) -> None:
    """Contig names reach pysam, Parquet and the tables as text: a header that is not UTF-8 is refused here."""
    try:
        line.decode()
    except UnicodeDecodeError as err:
        raise VqdnaError(f"{label} line {line_no}: FASTA header holds byte 0x{line[err.start]:02x}, which is not UTF-8 text") from None


def write_bgzip_fasta(source: str | Path, destination: str | Path, *, label: str | None = None) -> list[Contig]:
    """Validate ``source`` and write it bgzip-compressed, re-wrapped to 60 columns.

    ``label`` names the file in error messages (defaults to ``source``). Errors
    name the file and line: non-FASTA input, empty files, headers without a
    name, duplicate contig names, characters outside ACGT + IUPAC codes
    (digits, spaces, punctuation), records without sequence. CRLF line
    endings and trailing blanks are accepted.
    """
    import pysam

    label = label or str(source)
    contigs: list[Contig] = []
    seen: dict[str, int] = {}
    pending = bytearray()
    name: str | None = None
    length = 0
    out = pysam.BGZFile(str(destination), "wb")
    try:

        def flush(final: bool) -> None:
            whole = len(pending) if final else len(pending) - len(pending) % LINE_WIDTH
            if whole:
                lines = [pending[i : i + LINE_WIDTH] for i in range(0, whole, LINE_WIDTH)]
                out.write(b"\n".join(lines) + b"\n")
                del pending[:whole]

        with open_maybe_gzip(source) as handle:
            try:
                for line_no, raw in enumerate(handle, start=1):
                    line = raw.rstrip()  # CRLF and trailing blanks; blanks inside stay errors
                    if line.startswith(b">"):
                        if name is not None:
                            if length == 0:
                                raise VqdnaError(f"{label} line {seen[name]}: record {name!r} has no sequence")
                            flush(final=True)
                            contigs.append(Contig(name, length))
                        words = line[1:].split()
                        if not words:
                            raise VqdnaError(f"{label} line {line_no}: FASTA header without a name")
                        _check_utf8_header(line, label, line_no)
                        name = words[0].decode()
                        if name in seen:
                            raise VqdnaError(
                                f"{label} line {line_no}: duplicate contig name {name!r} "
                                f"(first seen on line {seen[name]})"
                            )
                        seen[name] = line_no
                        length = 0
                        out.write(line + b"\n")
                    elif name is None:
                        if line.strip():
                            raise VqdnaError(f"{label}: not a FASTA file: {_not_fasta_reason(line)}")
                    else:
                        bad = line.translate(None, _ALLOWED_BYTES)
                        if bad:
                            column = next(i for i, c in enumerate(line, 1) if c not in _ALLOWED_BYTES)
                            raise VqdnaError(
                                f"{label} line {line_no}: invalid character {chr(bad[0])!r} in sequence "
                                f"at column {column} (allowed: A C G T and IUPAC codes {IUPAC_AMBIGUOUS})"
                            )
                        pending += line
                        length += len(line)
                        if len(pending) >= 1 << 20:
                            flush(final=False)
            except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip
                raise VqdnaError(f"{label}: cannot be read as plain or gzip text ({err})") from None
        if name is None:
            raise VqdnaError(f"{label}: empty file, no FASTA record found")
        if length == 0:
            raise VqdnaError(f"{label} line {seen[name]}: record {name!r} has no sequence")
        flush(final=True)
        contigs.append(Contig(name, length))
    finally:
        out.close()
    return contigs


SEQUENCE_TABLE_SUFFIXES = (".txt", ".csv", ".txt.gz", ".csv.gz")


def is_sequence_table(name: str) -> bool:
    """An already-prepared corpus: one sequence per line (.txt) or a CSV with a ``sequence`` column."""
    return name.lower().endswith(SEQUENCE_TABLE_SUFFIXES)


def sequences_to_fasta(source: str | Path, destination: str | Path, *, label: str | None = None) -> int:
    """Write a sequence table as FASTA, one record ``line{N}`` per sequence (N: its line in ``source``).

    Every sequence is checked here, so an error names the table's own line.
    Empty lines are skipped; returns the number of records.
    """
    label = label or str(source)
    is_csv = str(source).lower().removesuffix(".gz").endswith(".csv")
    records = 0
    with open_maybe_gzip(source) as raw, open(destination, "w") as out:
        lines = (line.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n") for n, line in enumerate(raw, start=1))
        rows = csv.reader(lines) if is_csv else ([line] for line in lines)
        column = 0
        for line_no, row in enumerate(rows, start=1):
            if is_csv and line_no == 1:
                names = [c.strip().lower() for c in row]
                if "sequence" not in names:
                    raise VqdnaError(f"{label} line 1: a CSV corpus needs a 'sequence' column, found {row!r}")
                column = names.index("sequence")
                continue
            sequence = row[column].strip() if len(row) > column else ""
            if not sequence:
                continue
            bad = sequence.encode().translate(None, _ALLOWED_BYTES)
            if bad:
                raise VqdnaError(f"{label} line {line_no}: character {chr(bad[0])!r} is not a nucleotide (ACGT or an IUPAC code)")
            out.write(f">line{line_no}\n{sequence}\n")
            records += 1
    if records == 0:
        raise VqdnaError(f"{label}: no sequences")
    return records


def index_fasta(path: str | Path) -> None:
    """Write ``.fai`` and ``.gzi`` beside a bgzip FASTA (samtools faidx via pysam)."""
    import pysam

    pysam.faidx(str(path))


def open_indexed_fasta(path: str | Path):
    """A faidx-indexed FASTA (plain or bgzip) opened for random access: a ``pysam.FastaFile``."""
    import pysam

    return pysam.FastaFile(str(path))


def read_contigs(path: str | Path) -> list[Contig]:
    with open_indexed_fasta(path) as fasta:
        return [Contig(n, l) for n, l in zip(fasta.references, fasta.lengths)]


@dataclass(frozen=True)
class FastaRecord:
    name: str  # the first word of the header
    line: int  # the header's line number in the file
    sequence: str  # the record's letters as written (line breaks and trailing blanks removed)


def read_fasta(path: str | Path, *, label: str | None = None) -> list[FastaRecord]:
    """Every record of a plain or gzip FASTA, read whole (for small files: users' inputs, test genomes).

    Errors name the file and line: non-FASTA input (FASTQ, GenBank), an empty
    file, a header without a name, a duplicate record name, a corrupt gzip.
    Letters are not checked here: each caller applies its own rule.
    """
    label = label or str(path)
    records: list[FastaRecord] = []
    first_line: dict[str, int] = {}
    name, header_line, lines = None, 0, []
    try:
        with open_maybe_gzip(path) as handle:
            for line_no, raw in enumerate(handle, start=1):
                line = raw.rstrip()  # CRLF and trailing blanks
                if line.startswith(b">"):
                    if name is not None:
                        records.append(FastaRecord(name, header_line, b"".join(lines).decode("ascii", "replace")))
                    words = line[1:].split()
                    if not words:
                        raise VqdnaError(f"{label} line {line_no}: FASTA header without a name")
                    name = words[0].decode(errors="replace")
                    if name in first_line:
                        raise VqdnaError(f"{label} line {line_no}: duplicate record name {name!r} (first seen on line {first_line[name]})")
                    first_line[name], header_line, lines = line_no, line_no, []
                elif name is not None:
                    lines.append(line)
                elif line.strip():
                    raise VqdnaError(f"{label}: not a FASTA file: {_not_fasta_reason(line)}")
    except (OSError, EOFError, zlib.error) as err:  # truncated or corrupt gzip
        raise VqdnaError(f"{label}: cannot be read as plain or gzip text ({err})") from None
    if name is None:
        raise VqdnaError(f"{label}: empty file, no FASTA record found")
    records.append(FastaRecord(name, header_line, b"".join(lines).decode("ascii", "replace")))
    return records


class FastaRecords:
    """A small FASTA held in memory, read through the part of ``pysam.FastaFile``'s interface that windowing uses.

    ``references``, ``lengths``, ``fetch(contig, start, end)`` and the context
    manager: :func:`vqdna.windows.write_windows` takes it in place of an indexed
    file, so windows can be cut where pysam is not installed. Letters are
    checked as :func:`write_bgzip_fasta` checks them (A C G T and IUPAC codes,
    any case), and every record must have a sequence.
    """

    def __init__(self, sequences: dict[str, str], *, label: str = "FASTA"):
        for name, sequence in sequences.items():
            if not sequence:
                raise VqdnaError(f"{label}: record {name!r} has no sequence")
            if sequence.encode("ascii", "replace").translate(None, _ALLOWED_BYTES):
                base = next(i for i, c in enumerate(sequence, start=1) if c not in _ALLOWED_LETTERS)
                raise VqdnaError(
                    f"{label}: record {name!r}: invalid character {sequence[base - 1]!r} at base {base} "
                    f"(allowed: A C G T and IUPAC codes {IUPAC_AMBIGUOUS})"
                )
        self.label = label
        self._sequences = dict(sequences)
        self.references = tuple(self._sequences)
        self.lengths = tuple(len(s) for s in self._sequences.values())

    @classmethod
    def read(cls, path: str | Path) -> "FastaRecords":
        records = read_fasta(path)
        for record in records:
            if not record.sequence:
                raise VqdnaError(f"{path} line {record.line}: record {record.name!r} has no sequence")
        return cls({r.name: r.sequence for r in records}, label=str(path))

    def __str__(self) -> str:  # error messages name the file it was read from
        return self.label

    def fetch(self, contig: str, start: int, end: int) -> str:
        return self._sequences[contig][start:end]

    def __enter__(self) -> "FastaRecords":
        return self

    def __exit__(self, *exc) -> None:
        pass
