"""``vqdna inspect``: what a Parquet artifact holds, readable in a terminal.

Every artifact shows its schema, row count, row groups, ``vqdna.*`` metadata
and first rows. Windows and token files add the windows per contig and split;
token files add each level's code usage and perplexity. The summaries stream
the file by row group and read only the columns they need, so memory stays
flat on a whole-genome file (``--no-summary`` skips them).

:func:`decode_row` turns one token row back into nucleotides with its
tokenizer and shows it beside the reference window it was made from.

Inspect only reads: it writes no file.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vqdna import VqdnaError
from vqdna.artifacts import WINDOW_KEY_FIELDS, iter_row_groups, level_columns, read_metadata
from vqdna.tokenizer.metrics import perplexity_of_counts

KEY_COLUMNS = [f.name for f in WINDOW_KEY_FIELDS]
WINDOWS_FOLDER = Path("results/windows")  # where the workflow writes {genome}.parquet
TOKENIZERS_FOLDER = Path("results/tokenizers")  # where the workflow trains {tokenizer}/

_MAX_CELL = 60
_MAX_CONTIGS = 20
_TOP_CODES = 10
_HISTOGRAM_BUCKETS = 20
_BLOCKS = " ▁▂▃▄▅▆▇█"  # a space only for a bucket no code of which occurs
_SEQUENCE_WIDTH = 60


# -- opening and classifying ---------------------------------------------------------------------


def _open(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise VqdnaError(f"{path}: no such file (inspect takes a .parquet artifact)")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VqdnaError(f"{path}: not a readable Parquet file ({reason})") from None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A footer that reads but pages that do not (a disk error, a file cut or overwritten): one line, not a traceback."""
    try:
        yield
    except (OSError, pa.ArrowException) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VqdnaError(f"{path}: corrupt data inside the Parquet file ({reason}); delete it and rerun the rule that made it") from None


def artifact_kind(names: list[str]) -> str:
    """What a file is, from its columns (see the artifact contracts in DESIGN.md)."""
    columns = set(names)
    if set(KEY_COLUMNS) <= columns and level_columns(names):
        return "tokens"
    if set(KEY_COLUMNS) <= columns and "sequence" in columns:
        return "windows"
    if {"sequence", "label", "split"} <= columns:
        return "dataset"
    if "prediction" in columns:
        return "predictions"
    if "embedding" in columns:
        return "embeddings"
    return "table"


# -- the overview every artifact gets ----------------------------------------------------------------


def _cell(value: object) -> str:
    if isinstance(value, list):
        text = "[" + ", ".join(map(str, value[:12])) + (f", ... ({len(value)} items)]" if len(value) > 12 else "]")
    else:
        text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def _overview(path: Path, parquet: pq.ParquetFile, metadata: dict[str, str]) -> list[str]:
    names = parquet.schema_arrow.names
    lines = [f"{path}", f"kind: {artifact_kind(names)}"]
    lines += [f"rows: {parquet.metadata.num_rows}   row groups: {parquet.metadata.num_row_groups}", "", "schema:"]
    lines += [f"  {f.name}: {f.type}" for f in parquet.schema_arrow]
    lines += ["", "metadata:"] + ([f"  {k}: {v}" for k, v in sorted(metadata.items())] or ["  (no vqdna.* metadata)"])
    return lines


def _head(parquet: pq.ParquetFile, rows: int) -> list[str]:
    if rows <= 0 or not parquet.metadata.num_rows:
        return []
    head = next(parquet.iter_batches(batch_size=rows)).to_pylist()[:rows]
    lines = ["", f"first {len(head)} rows:"]
    for i, row in enumerate(head):
        lines.append(f"  [{i}] " + "  ".join(f"{k}={_cell(v)}" for k, v in row.items()))
    return lines


# -- windows per contig and split (streamed) ---------------------------------------------------------


@dataclass
class ContigSplit:
    windows: int = 0
    first_start: int | None = None
    last_end: int | None = None

    def add(self, windows: int, first_start: int, last_end: int) -> None:
        self.windows += windows
        self.first_start = first_start if self.first_start is None else min(self.first_start, first_start)
        self.last_end = last_end if self.last_end is None else max(self.last_end, last_end)


@dataclass
class ContigCounter:
    """Windows per (genome, contig, split), first start and last end, in file order; reverse strands counted."""

    columns = ("genome", "contig", "split", "start", "end", "strand")
    cells: dict[tuple[str, str, str], ContigSplit] = field(default_factory=lambda: defaultdict(ContigSplit))
    reverse: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        grouped = table.group_by(["genome", "contig", "split"], use_threads=False).aggregate(
            [("start", "count"), ("start", "min"), ("end", "max")]
        )
        for row in grouped.to_pylist():
            self.cells[(row["genome"], row["contig"], row["split"])].add(row["start_count"], row["start_min"], row["end_max"])
        reverse = table.filter(pc.equal(table.column("strand"), -1)).group_by("genome").aggregate([("strand", "count")])
        for row in reverse.to_pylist():
            self.reverse[row["genome"]] += row["strand_count"]


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Aligned text columns; those in ``right`` (numbers) right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return ("  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))).rstrip()

    return [line(header)] + [line(r) for r in rows]


def contig_lines(counter: ContigCounter) -> list[str]:
    """Per genome a total, then contig x split for the largest contigs (file order), the rest summed on one line."""
    per_contig: dict[tuple[str, str], int] = defaultdict(int)
    per_genome: dict[str, int] = defaultdict(int)
    for (genome, contig, _), cell in counter.cells.items():
        per_contig[(genome, contig)] += cell.windows
        per_genome[genome] += cell.windows
    lines = ["", "windows per contig and split:"]
    for genome, windows in per_genome.items():
        contigs = sum(1 for g, _ in per_contig if g == genome)
        strands = f" ({windows - counter.reverse[genome]} forward, {counter.reverse[genome]} reverse complement)" if counter.reverse[genome] else ""
        lines.append(f"  genome {genome}: {windows} windows{strands} on {contigs} contigs")
    shown = set(sorted(per_contig, key=lambda c: -per_contig[c])[:_MAX_CONTIGS])
    several = len(per_genome) > 1
    rows = [
        [f"{g}:{c}" if several else c, s, str(cell.windows), str(cell.first_start), str(cell.last_end)]
        for (g, c, s), cell in counter.cells.items()
        if (g, c) in shown
    ]
    lines += _table(["contig", "split", "windows", "first start", "last end"], rows, right={2, 3, 4})
    hidden = [k for k in per_contig if k not in shown]
    if hidden:
        lines.append(f"  ... {len(hidden)} more contigs ({sum(per_contig[k] for k in hidden)} windows)")
    return lines


# -- code usage per level (streamed) -------------------------------------------------------------------


@dataclass
class CodeCounter:
    """Occurrences of every code (token id for baselines) per level column, accumulated with np.bincount."""

    columns: tuple[str, ...]
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, batch: pa.RecordBatch) -> None:
        for name in self.columns:
            values = batch.column(name).flatten().to_numpy(zero_copy_only=False)
            found = np.bincount(values.astype(np.int64, copy=False)) if len(values) else np.zeros(0, np.int64)
            total = self.counts.get(name, np.zeros(0, np.int64))
            if len(found) > len(total):
                total = np.pad(total, (0, len(found) - len(total)))
            total[: len(found)] += found
            self.counts[name] = total


def _histogram(counts: np.ndarray) -> str:
    """Codes ranked by frequency, cut into buckets; each bucket's share of all tokens as a block height."""
    ranked = np.sort(counts)[::-1]
    shares = np.array([b.sum() for b in np.array_split(ranked, min(_HISTOGRAM_BUCKETS, len(ranked)))], dtype=float)
    shares /= max(1.0, float(counts.sum()))
    top = shares.max() if len(shares) and shares.max() > 0 else 1.0
    heights = np.where(shares > 0, np.maximum(1, np.round(shares / top * (len(_BLOCKS) - 1))), 0).astype(int)
    return "".join(_BLOCKS[h] for h in heights)


def usage_lines(name: str, counts: np.ndarray, rows: int, vocab_size: int | None = None, source: str = "", label=None) -> list[str]:
    """Codes used of the vocabulary, perplexity exp(entropy), the most frequent codes and a rank histogram.

    Without the tokenizer the vocabulary is the largest code seen + 1, a lower bound.
    """
    if vocab_size is None:
        vocab_size, source = len(counts), "max code + 1; give --tokenizer DIR for the true size"
    if len(counts) > vocab_size:
        raise VqdnaError(f"{name}: code {len(counts) - 1} lies outside the vocabulary of {vocab_size} ({source})")
    counts = np.pad(counts, (0, vocab_size - len(counts)))
    total, used = int(counts.sum()), int((counts > 0).sum())
    order = np.argsort(-counts, kind="stable")[: min(_TOP_CODES, used)]
    top = ", ".join(f"{c}{f' {label(int(c))}' if label else ''} {counts[c] / max(1, total):.1%}" for c in order)
    buckets = min(_HISTOGRAM_BUCKETS, vocab_size)
    return [
        f"  {name}: {total} tokens ({total / max(1, rows):.1f} per window); {used} of {vocab_size} codes used ({used / max(1, vocab_size):.1%})",
        f"    vocabulary {vocab_size}: {source}",
        f"    perplexity {perplexity_of_counts(counts):.2f} ({vocab_size} if every code were equally frequent)",
        f"    top {len(order)}: {top}",
        f"    share by frequency rank ({buckets} buckets of ~{vocab_size / max(1, buckets):.0f} codes): |{_histogram(counts)}|",
    ]


# -- tokenizers ---------------------------------------------------------------------------------------


def _tokenizer_folder(path: Path, metadata: dict[str, str], given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    name = metadata.get("vqdna.tokenizer")
    guess = TOKENIZERS_FOLDER / name if name else None
    if guess is None or not (guess / "config.json").is_file():
        where = f"{guess} (from vqdna.tokenizer) not found" if guess else "no vqdna.tokenizer metadata"
        raise VqdnaError(f"{path}: tokenizer folder {where}; give --tokenizer DIR")
    return guess


def matching_tokenizer(path: Path, metadata: dict[str, str], given: str | Path | None):
    """The tokenizer folder's tokenizer, loaded on CPU, once its hash equals the file's vqdna.tokenizer_hash."""
    from vqdna.runtime import check_tokenizer_hash
    from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash

    folder = _tokenizer_folder(path, metadata, given)
    check_tokenizer_hash(
        metadata.get("vqdna.tokenizer_hash"), tokenizer_hash(folder), made=f"{path} was made with", given=folder,
        remedy="give the --tokenizer folder these tokens were made with",
    )
    return load_tokenizer(folder, device="cpu")


def _token_label(tokenizer):
    """Baselines: a token id's letters (k-mer, BPE piece) beside it; learned codes have none."""
    from vqdna.tokenizer.baselines import BaselineTokenizer

    if not isinstance(tokenizer, BaselineTokenizer):
        return None
    return lambda code: tokenizer.decode([np.array([[code]])])[0]


# -- the report ----------------------------------------------------------------------------------------


def _stream(parquet: pq.ParquetFile, counters: list) -> None:
    """One pass over the file, row group by row group, reading only the columns the counters need."""
    columns = list(dict.fromkeys(c for counter in counters for c in counter.columns))
    for batch in iter_row_groups(parquet, columns=columns):
        for counter in counters:
            counter.add(batch)


def _summary(path: Path, parquet: pq.ParquetFile, metadata: dict[str, str], tokenizer_dir) -> list[str]:
    names = parquet.schema_arrow.names
    kind = artifact_kind(names)
    if kind not in ("windows", "tokens"):
        return []
    if parquet.metadata.num_rows == 0:
        return ["", "no rows: nothing to summarise"]
    contigs = ContigCounter()
    codes = CodeCounter(tuple(level_columns(names))) if kind == "tokens" else None
    tokenizer = matching_tokenizer(path, metadata, tokenizer_dir) if codes and tokenizer_dir is not None else None
    _stream(parquet, [contigs] + ([codes] if codes else []))
    lines = contig_lines(contigs)
    if codes:
        rows = parquet.metadata.num_rows
        lines += ["", "code usage per level (token ids for baselines):"]
        for level, name in enumerate(codes.columns):
            counts = codes.counts.get(name, np.zeros(0, np.int64))
            if tokenizer is None:
                lines += usage_lines(name, counts, rows)
            else:
                source = f"tokenizer folder {tokenizer_dir}"
                lines += usage_lines(name, counts, rows, tokenizer.level_sizes[level], source, _token_label(tokenizer))
    return lines


def inspect_path(path: str | Path, rows: int = 5, summary: bool = True, tokenizer_dir: str | Path | None = None) -> str:
    """Overview, first rows and (windows, tokens) the streamed summaries of one Parquet artifact."""
    path = Path(path)
    parquet = _open(path)
    metadata = read_metadata(path)
    with _reading(path):
        lines = _overview(path, parquet, metadata) + _head(parquet, rows)
        if summary:
            lines += _summary(path, parquet, metadata, tokenizer_dir)
    return "\n".join(lines)


# -- decoding one token row ------------------------------------------------------------------------------


def read_row(path: Path, parquet: pq.ParquetFile, row: int, columns: list[str] | None = None) -> dict:
    """Row ``row`` (0-based) read from its row group alone."""
    total = parquet.metadata.num_rows
    if not 0 <= row < total:
        raise VqdnaError(f"{path}: row {row} out of range (the file has {total} rows, 0 to {total - 1})")
    for group in range(parquet.metadata.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if row < size:
            return parquet.read_row_group(group, columns=columns).slice(row, 1).to_pylist()[0]
        row -= size
    raise AssertionError("row groups do not add up to the row count")


def _window_key(record: dict) -> str:
    strand = "+" if record["strand"] == 1 else "-"
    return f"{record['genome']} {record['contig']}:{record['start']}-{record['end']} ({strand}, {record['split']})"


def _windows_file(path: Path, metadata: dict[str, str], given: str | Path | None) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise VqdnaError(f"{path}: windows file {given} not found")
        return Path(given)
    genome = metadata.get("vqdna.genome")
    if not genome:
        raise VqdnaError(f"{path}: no vqdna.genome metadata to find its windows file; give --windows PATH")
    guess = WINDOWS_FOLDER / f"{genome}.parquet"
    if not guess.is_file():
        raise VqdnaError(f"{path}: windows file {guess} (from vqdna.genome, relative to {Path.cwd()}) not found; give --windows PATH")
    return guess


def reference_window(path: Path, record: dict, row: int, windows_path: Path) -> str:
    """The sequence of the token row's window: the same row of the windows file when its key matches, else by key."""
    windows = _open(windows_path)
    if artifact_kind(windows.schema_arrow.names) != "windows":
        raise VqdnaError(f"{windows_path}: not a windows file (no sequence and window key columns)")
    if row < windows.metadata.num_rows:
        candidate = read_row(windows_path, windows, row)
        if all(candidate[k] == record[k] for k in KEY_COLUMNS):
            return candidate["sequence"]
    keys = [("genome", "==", record["genome"]), ("contig", "==", record["contig"])]
    keys += [("start", "==", record["start"]), ("end", "==", record["end"]), ("strand", "==", record["strand"])]
    found = pq.read_table(windows_path, columns=["sequence"], filters=keys).column("sequence").to_pylist()
    if not found:
        raise VqdnaError(f"{windows_path}: no window {_window_key(record)} of {path} row {row}; give the --windows file these tokens were made from")
    return found[0]


def decode_record(tokenizer, record: dict, levels: list[str]) -> str:
    """Learned tokenizers: codes of every level -> bases (cut to the window's length). Baselines: level-1 ids -> the exact sequence."""
    from vqdna.tokenizer.api import VQTokenizer

    if isinstance(tokenizer, VQTokenizer):
        codes = np.stack([np.asarray(record[name], dtype=np.int64) for name in levels])
        return tokenizer.decode([codes], lengths=[record["end"] - record["start"]])[0]
    codes = np.asarray(record[levels[0]], dtype=np.int64)[None, :]
    return tokenizer.decode([codes])[0]


def token_starts(tokenizer, record: dict) -> list[int] | None:
    """Each token's offset in the window: baselines store them; a learned tokenizer's are every ``stride`` nt."""
    if "token_starts" in record:
        return record["token_starts"]
    stride = getattr(tokenizer, "stride", 1)
    return list(range(0, record["end"] - record["start"], stride)) if stride > 1 else None


@dataclass
class Differences:
    """Where the decoded sequence differs from the window; a reference N counts apart from called bases."""

    marks: str  # '^' a called base differs, '~' a reference N decoded as a base, ' ' equal
    called: int
    differing: int
    reference_n: int
    n_decoded_as_base: int


def differences(reference: str, decoded: str) -> Differences:
    length = max(len(reference), len(decoded))
    ref = np.frombuffer(reference.ljust(length).encode(), dtype=np.uint8)
    dec = np.frombuffer(decoded.ljust(length).encode(), dtype=np.uint8)
    is_n = ref == ord("N")
    differ = ref != dec
    marks = np.full(length, ord(" "), dtype=np.uint8)
    marks[differ & ~is_n] = ord("^")
    marks[differ & is_n] = ord("~")
    return Differences(
        marks.tobytes().decode().rstrip(),
        called=int((~is_n).sum()),
        differing=int((differ & ~is_n).sum()),
        reference_n=int(is_n.sum()),
        n_decoded_as_base=int((differ & is_n).sum()),
    )


def _starts_line(token_starts: list[int] | None, length: int) -> str | None:
    """'|' at each token's first base, where tokens are longer than one base (BPE, non-overlapping k-mers)."""
    if token_starts is None or len(token_starts) >= length:
        return None
    line = np.full(length, ord(" "), dtype=np.uint8)
    line[[s for s in token_starts if s < length]] = ord("|")
    return line.tobytes().decode()


def comparison_lines(reference: str, decoded: str, token_starts: list[int] | None) -> list[str]:
    found = differences(reference, decoded)
    width = max(len(reference), len(decoded))
    starts = _starts_line(token_starts, width)
    lines = []
    for offset in range(0, width, _SEQUENCE_WIDTH):
        cut = slice(offset, offset + _SEQUENCE_WIDTH)
        lines += ["", f"  offset {offset}-{min(width, offset + _SEQUENCE_WIDTH) - 1}"]
        lines += [f"    window   {reference[cut]}", f"    decoded  {decoded[cut]}", f"    differ   {found.marks[cut]}".rstrip()]
        if starts:
            lines.append(f"    tokens   {starts[cut]}".rstrip())
    share = found.differing / max(1, found.called)
    lines += [
        "",
        f"differing positions: {found.differing} of {found.called} called bases ({share:.2%})",
        f"reference N: {found.reference_n} positions, {found.n_decoded_as_base} of them decoded as a base",
    ]
    if len(reference) != len(decoded):
        lines.append(f"lengths differ: window {len(reference)} nt, decoded {len(decoded)} nt")
    return lines


def decode_row(
    path: str | Path,
    row: int,
    tokenizer_dir: str | Path | None = None,
    windows_path: str | Path | None = None,
) -> str:
    """Token row ``row`` decoded with its tokenizer, beside its reference window and where they differ."""
    path = Path(path)
    parquet = _open(path)
    metadata = read_metadata(path)
    levels = level_columns(parquet.schema_arrow.names)
    if artifact_kind(parquet.schema_arrow.names) != "tokens":
        raise VqdnaError(f"{path}: not a token file (no codes_l1 column beside the window keys); --decode takes token files")
    with _reading(path):
        record = read_row(path, parquet, row)
    tokenizer = matching_tokenizer(path, metadata, tokenizer_dir)
    decoded = decode_record(tokenizer, record, levels)
    windows = _windows_file(path, metadata, windows_path)
    reference = reference_window(path, record, row, windows)
    lines = [
        f"{path} row {row}: {_window_key(record)}",
        f"tokenizer: {metadata.get('vqdna.tokenizer', '?')} ({tokenizer.config.type}, hash {tokenizer.hash[:12]}... matches)",
        f"windows: {windows}",
    ]
    return "\n".join(lines + comparison_lines(reference, decoded, token_starts(tokenizer, record)))
