"""Labelled datasets: one row of the datasets sheet -> ``{train,dev,test}.parquet`` (sequence, label, split).

Datasets cut from genomes (the two last kinds below) also carry where each
sequence came from: ``contig`` and ``start`` (0-based, forward strand), so an
analysis can place a position of a sequence on its genome.

Three kinds of source:
- GUE-format CSVs (``sequence,label`` with a header; ``train.csv``, ``dev.csv``,
  ``test.csv``) in a local folder, in a folder of an unpacked archive
  (``archive:gue/GUE/EMP/H3``) or under a URL prefix;
- genome classification (``source`` empty, ``genomes`` listing genome ids): the
  label is the genome's position in that list; samples are ``max_length`` tiles
  of each genome's windows of the same split (so splits come from disjoint
  regions and nothing leaks), the same number per genome (balanced);
- species classification (``kind`` species, HyenaDNA's protocol,
  :mod:`vqdna.datasets.species`): samples of ``max_length`` bases drawn from
  whole chromosomes, each split from its own chromosomes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vqdna import VqdnaError
from vqdna.archive import resolve_archive_source
from vqdna.artifacts import SPLITS, dataset_schema, parquet_writer, with_metadata
from vqdna.datasets.spec import TASKS, DatasetSpec
from vqdna.datasets.species import read_assembly_report, species_samples
from vqdna.download import download_file, is_remote
from vqdna.genome import base_ids, normalise_sequence
from vqdna.sources import is_archive_source

ARCHIVES_DIR = Path("resources/archives")

Split = tuple[list[str], list]  # sequences, labels
Places = tuple[list[str], list[int]]  # per sequence its contig and 0-based start


def _read_csv_split(text: str, where: str, spec: DatasetSpec) -> tuple[list[str], list]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["sequence", "label"]:
        raise VqdnaError(f"{where} line 1: expected a header 'sequence,label', found {header!r}")
    sequences, labels = [], []
    for row_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 2:
            raise VqdnaError(f"{where} line {row_no}: expected 'sequence,label', found {row!r}")
        sequence, label = row[0].strip(), row[1].strip()
        if not sequence:
            raise VqdnaError(f"{where} line {row_no}: empty sequence")
        try:
            base_ids(sequence)
        except VqdnaError as err:
            raise VqdnaError(f"{where} line {row_no}: {err}") from None
        try:
            value = float(label) if spec.task == "regression" else int(label)
        except ValueError:
            raise VqdnaError(f"{where} line {row_no}: label {label!r} is not a {'number' if spec.task == 'regression' else 'class index'}") from None
        if spec.task == "classification" and not 0 <= value < spec.num_labels:
            raise VqdnaError(f"{where} line {row_no}: label {value} outside 0..{spec.num_labels - 1} (num_labels {spec.num_labels})")
        sequences.append(normalise_sequence(sequence))
        labels.append(value)
    if not sequences:
        raise VqdnaError(f"{where}: no rows")
    return sequences, labels


def _utf8(raw: bytes, where: str) -> str:
    """A CSV's text (a UTF-8 byte-order mark dropped); one line naming the line of a byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise VqdnaError(f"{where} line {line}: byte 0x{raw[err.start]:02x} is not UTF-8 text; save the file as UTF-8") from None


def _check_labels(spec: DatasetSpec, splits: dict[str, tuple[list[str], list]]) -> None:
    """One line when a split's labels cannot train or score: a single class (MCC, F1 undefined), or constant targets."""
    for split, (_, labels) in splits.items():
        values = sorted(set(labels))
        if len(values) == 1:
            what = f"only class {values[0]}" if spec.task == "classification" else f"the same target {values[0]} on every row"
            raise VqdnaError(
                f"dataset {spec.dataset}: the {split} split has {what} ({len(labels)} rows); "
                f"{'nothing to learn' if split == 'train' else 'its metric is undefined'}: check the source's labels"
            )


def _fetch_csv_splits(spec: DatasetSpec, archives_dir: Path) -> dict[str, tuple[bytes, str]]:
    """split -> (raw bytes, where they came from), from a local folder, a folder of an unpacked archive or a URL prefix."""
    out = {}
    folder = resolve_archive_source(spec.source, archives_dir) if is_archive_source(spec.source) else Path(spec.source).expanduser()
    for split in [s for s in SPLITS if not (spec.train_from == "dev" and s == "train")]:
        if is_remote(spec.source):
            url = spec.source.rstrip("/") + f"/{split}.csv"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{split}.csv"
                download_file(url, path)
                out[split] = (path.read_bytes(), url)
        else:
            path = folder / f"{split}.csv"
            if not path.is_file():
                raise VqdnaError(f"dataset {spec.dataset}: {path} not found (a GUE folder holds train.csv, dev.csv, test.csv)")
            out[split] = (path.read_bytes(), str(path))
    return out


def _genome_tiles(windows_path: Path, split: str, length: int) -> list[tuple[str, int, str]]:
    """Non-overlapping ``length`` tiles inside the windows of one split, each tile once: (contig, start, sequence)."""
    table = pq.read_table(windows_path, columns=["contig", "start", "strand", "sequence"], filters=[("split", "==", split)])
    table = table.filter(pc.equal(table.column("strand"), 1))
    seen, tiles = set(), []
    for contig, start, sequence in zip(
        table.column("contig").to_pylist(), table.column("start").to_pylist(), table.column("sequence").to_pylist()
    ):
        first = -(-start // length) * length  # tiles on one grid per contig, so overlapping windows share them
        for tile_start in range(first, start + len(sequence) - length + 1, length):
            if (contig, tile_start) not in seen:
                seen.add((contig, tile_start))
                tiles.append((contig, tile_start, sequence[tile_start - start : tile_start - start + length]))
    return tiles


def _genome_classification(spec: DatasetSpec, windows: dict[str, Path]) -> tuple[dict[str, Split], dict[str, Places]]:
    missing = [g for g in spec.genome_list if g not in windows]
    if missing:
        raise VqdnaError(f"dataset {spec.dataset}: no windows given for genome(s) {', '.join(missing)}")
    rng = np.random.default_rng(spec.seed)
    out, places = {}, {}
    for split in SPLITS:
        tiles = {g: _genome_tiles(windows[g], split, spec.max_length) for g in spec.genome_list}
        per_genome = min(len(t) for t in tiles.values())
        if spec.samples_per_genome:
            per_genome = min(per_genome, spec.samples_per_genome)
        if per_genome == 0:
            empty = [g for g, t in tiles.items() if not t]
            raise VqdnaError(
                f"dataset {spec.dataset}: genome(s) {', '.join(empty)} have no {spec.max_length}-nt tile in the "
                f"{split} split; lower max_length or raise the windows' {split} fraction"
            )
        picked, labels = [], []
        for label, genome in enumerate(spec.genome_list):
            pick = rng.choice(len(tiles[genome]), per_genome, replace=False)
            picked += [tiles[genome][i] for i in sorted(pick)]
            labels += [label] * per_genome
        order = rng.permutation(len(picked))
        out[split] = ([picked[i][2] for i in order], [labels[i] for i in order])
        places[split] = ([picked[i][0] for i in order], [picked[i][1] for i in order])
    return out, places


def _split_dev(dev: tuple[list[str], list], seed: int) -> tuple[tuple[list[str], list], tuple[list[str], list]]:
    """(train, dev) from one split: a seeded 90/10 cut, for a benchmark folder that ships no train split."""
    sequences, labels = dev
    order = np.random.default_rng(seed).permutation(len(sequences))
    cut = int(round(0.9 * len(order)))
    parts = [sorted(order[:cut]), sorted(order[cut:])]
    train, held = (([sequences[i] for i in rows], [labels[i] for i in rows]) for rows in parts)
    return train, held


def _species(spec: DatasetSpec, fastas: dict[str, Path], reports: dict[str, Path]) -> tuple[dict[str, Split], dict[str, Places]]:
    missing = [g for g in spec.genome_list if g not in fastas]
    if missing:
        raise VqdnaError(f"dataset {spec.dataset}: no FASTA given for genome(s) {', '.join(missing)}")
    if len(spec.genome_list) != spec.num_labels:
        raise VqdnaError(f"dataset {spec.dataset}: {len(spec.genome_list)} genomes but num_labels {spec.num_labels}")
    maps = {g: read_assembly_report(reports[g]) for g in spec.genome_list if g in reports}
    settings = spec.species_settings()
    drawn = species_samples({g: fastas[g] for g in spec.genome_list}, maps, spec.max_length, settings.samples, settings)
    splits = {split: ([s.sequence for s in samples], [s.label for s in samples]) for split, samples in drawn.items()}
    places = {split: ([s.contig for s in samples], [s.start for s in samples]) for split, samples in drawn.items()}
    return splits, places


def prepare_dataset(
    spec: DatasetSpec,
    output_dir: str | Path,
    windows: dict[str, Path] | None = None,
    archives_dir: str | Path = ARCHIVES_DIR,
    *,
    fastas: dict[str, Path] | None = None,
    assembly_reports: dict[str, Path] | None = None,
) -> dict[str, int]:
    """Write ``{output_dir}/{split}.parquet`` for every split; returns row counts.

    ``windows``: genome -> windows file (genome tiles). ``archives_dir``: unpacked
    archives, for sources ``archive:NAME/folder`` (GUE). ``fastas`` and
    ``assembly_reports``: genome -> bgzip FASTA and NCBI assembly report (species).
    """
    if spec.task not in TASKS:
        raise VqdnaError(f"dataset {spec.dataset}: task must be one of {TASKS}, got {spec.task!r}")
    provenance: dict = {"dataset": spec.dataset}
    places: dict[str, Places] = {}
    if spec.kind == "species":
        splits, places = _species(spec, fastas or {}, assembly_reports or {})
        settings = spec.species_settings()
        provenance.update(genomes=spec.genome_list, dev_chromosomes=list(settings.dev_chromosomes), test_chromosomes=list(settings.test_chromosomes))
    elif spec.genome_list:
        splits, places = _genome_classification(spec, windows or {})
        provenance["genomes"] = spec.genome_list
    elif spec.source:
        fetched = _fetch_csv_splits(spec, Path(archives_dir))
        digest = hashlib.sha256(b"".join(raw for raw, _ in fetched.values())).hexdigest()
        if spec.sha256 and digest != spec.sha256.lower():
            raise VqdnaError(
                f"dataset {spec.dataset}: sha256 mismatch for {spec.source} train/dev/test.csv "
                f"(expected {spec.sha256.lower()}, got {digest}); fix the sheet's sha256 or the source"
            )
        splits = {split: _read_csv_split(_utf8(raw, where), where, spec) for split, (raw, where) in fetched.items()}
        provenance["source"] = spec.source
        provenance["source_sha256"] = digest
        if spec.train_from == "dev":
            splits["train"], splits["dev"] = _split_dev(splits["dev"], spec.seed)
            provenance["nonstandard"] = "no train split: trained on a seeded 90% of dev.csv, dev is the other 10%"
    else:
        raise VqdnaError(f"dataset {spec.dataset}: give either a source (CSV folder or URL) or genomes")

    if spec.max_train_samples and len(splits["train"][0]) > spec.max_train_samples:
        sequences, labels = splits["train"]
        pick = np.sort(np.random.default_rng(spec.seed).choice(len(sequences), spec.max_train_samples, replace=False))
        splits["train"] = ([sequences[i] for i in pick], [labels[i] for i in pick])
        if places:
            contigs, starts = places["train"]
            places["train"] = ([contigs[i] for i in pick], [starts[i] for i in pick])
        provenance["train_subset"] = spec.max_train_samples

    _check_labels(spec, splits)
    counts = {}
    schema = dataset_schema(spec.task, located=bool(places))
    for split, (sequences, labels) in splits.items():
        located = {"contig": pa.array(places[split][0], pa.string()), "start": pa.array(places[split][1], pa.int64())} if places else {}
        table = pa.table(
            {
                "sequence": pa.array(sequences, pa.string()),
                "label": pa.array(labels, schema.field("label").type),
                "split": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(labels), np.int32)), pa.array([split])),
                **located,
            },
            schema=with_metadata(schema, **provenance, task=spec.task, num_labels=str(spec.num_labels)),
        )
        with parquet_writer(Path(output_dir) / f"{split}.parquet", table.schema) as writer:
            writer.write_table(table)
        counts[split] = table.num_rows
    return counts
