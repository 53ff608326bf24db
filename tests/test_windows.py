"""Windows: exact coordinates, split regions, N filtering, sources of any compression, the Parquet contract."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
from helpers import data_file, expected_windows

import vqdna
from vqdna import VqdnaError
from vqdna.download import fetch_genome
from vqdna.genome import FastaRecords
from vqdna.windows import WindowSettings, write_windows

LAMBDA = "genomes/lambda_virus.fa"
CHR22 = "genomes/22_20-21M.fa"
ECOLI = "genomes/GCF_000005845.2_ASM584v2_genomic.fna.gz"
SPLIT_ORDER = ("train", "dev", "test")
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}

SETTINGS = {
    "default": WindowSettings(),
    "overlapping": WindowSettings(length=200, step=100, max_n_fraction=0.1),
    "no-n-allowed": WindowSettings(length=1000, step=1000, max_n_fraction=0.0, dev_fraction=0.2, test_fraction=0.15),
    "half-n-allowed": WindowSettings(length=300, step=250, max_n_fraction=0.5, dev_fraction=0.05, test_fraction=0.3),
}


def _indexed_copy(source: Path, folder: Path) -> Path:
    """A plain copy of the original FASTA, faidx-indexed by pysam: the independent reference."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    pysam.faidx(str(copy))
    return copy


def _original_sequences(indexed: Path) -> dict[str, str]:
    with pysam.FastaFile(str(indexed)) as fasta:
        return {name: fasta.fetch(name) for name in fasta.references}


class Genome:
    """One real genome: the original (indexed copy) and the stored copy made by fetch_genome."""

    def __init__(self, test_data: Path, relative: str, genome: str, folder: Path):
        source = data_file(test_data, relative)
        self.genome = genome
        self.original = _indexed_copy(source, folder / "original")
        self.stored = folder / "stored" / f"{genome}.fa.gz"
        fetch_genome(genome, str(source), self.stored)
        self.sequences = _original_sequences(self.original)


@pytest.fixture(scope="module")
def lambda_genome(test_data, tmp_path_factory) -> Genome:
    return Genome(test_data, LAMBDA, "lambda", tmp_path_factory.mktemp("lambda"))


@pytest.fixture(scope="module")
def chr22_genome(test_data, tmp_path_factory) -> Genome:
    return Genome(test_data, CHR22, "chr22_slice", tmp_path_factory.mktemp("chr22"))


@pytest.fixture
def genomes(lambda_genome, chr22_genome) -> dict[str, Genome]:
    return {"lambda": lambda_genome, "chr22": chr22_genome}


def _windows(fasta: Path, output: Path, genome: str, settings: WindowSettings) -> tuple[dict, pa.Table]:
    counts = write_windows(fasta, output, genome, settings)
    return counts, pq.read_table(output)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _reverse_complement(sequence: str) -> str:
    return "".join(COMPLEMENT[base] for base in reversed(sequence))


def _is_bgzf(path: Path) -> bool:
    """gzip magic with FEXTRA set and the 'BC' subfield that marks BGZF blocks."""
    head = path.read_bytes()[:16]
    return head[:2] == b"\x1f\x8b" and bool(head[3] & 4) and head[12:14] == b"BC"


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_windows_from_fasta_records_equal_those_of_the_indexed_stored_genome(genomes, tmp_path, settings):
    """FastaRecords (no pysam, no index) is how a bare GPU machine cuts windows: the same file, byte for byte."""
    for name, genome in genomes.items():
        _, from_index = _windows(genome.stored, tmp_path / f"{name}_index.parquet", name, settings)
        _, from_records = _windows(FastaRecords.read(genome.original), tmp_path / f"{name}_records.parquet", name, settings)
        assert from_index.num_rows > 0
        assert from_records.equals(from_index, check_metadata=True)


def test_windows_from_fasta_records_of_a_gzip_genome_equal_those_of_the_stored_genome(test_data, tmp_path):
    source = data_file(test_data, ECOLI)
    fetch_genome("ecoli", str(source), tmp_path / "ecoli.fa.gz")
    settings = WindowSettings(length=512, step=512)
    _, from_index = _windows(tmp_path / "ecoli.fa.gz", tmp_path / "index.parquet", "ecoli", settings)
    _, from_records = _windows(FastaRecords.read(source), tmp_path / "records.parquet", "ecoli", settings)
    assert from_index.num_rows > 8000
    assert from_records.equals(from_index, check_metadata=True)


def test_windows_of_lambda_match_pysams_fetch_of_the_original_file(lambda_genome, tmp_path):
    settings = WindowSettings(length=512, step=300)
    _, table = _windows(lambda_genome.stored, tmp_path / "w.parquet", "lambda", settings)
    rows = _rows(table)
    assert len(rows) == len(expected_windows(lambda_genome.sequences, settings))
    with pysam.FastaFile(str(lambda_genome.original)) as original:
        for row in rows:
            assert row["sequence"] == original.fetch(row["contig"], row["start"], row["end"]), row["start"]


def test_gzip_bgzip_and_plain_sources_give_identical_windows(test_data, tmp_path):
    plain = data_file(test_data, LAMBDA)
    sources = tmp_path / "sources"
    sources.mkdir()
    gzipped = sources / "lambda.gzip.fa.gz"
    gzipped.write_bytes(gzip.compress(plain.read_bytes()))
    bgzipped = sources / "lambda.bgzip.fa.gz"
    pysam.tabix_compress(str(plain), str(bgzipped))
    assert _is_bgzf(bgzipped) and not _is_bgzf(gzipped)

    settings = WindowSettings(length=256, step=200, reverse_complement=True)
    tables, stored_bytes = [], []
    for name, source in (("plain", plain), ("gzip", gzipped), ("bgzip", bgzipped)):
        stored = tmp_path / name / "lambda.fa.gz"
        fetch_genome("lambda", str(source), stored)
        stored_bytes.append(stored.read_bytes())
        tables.append(_windows(stored, tmp_path / name / "windows.parquet", "lambda", settings)[1])
    assert tables[0].num_rows > 0
    assert tables[0].equals(tables[1], check_metadata=True)
    assert tables[0].equals(tables[2], check_metadata=True)
    assert stored_bytes[0] == stored_bytes[1] == stored_bytes[2]


def test_plain_gzip_ecoli_is_stored_exactly_and_windowed(test_data, tmp_path):
    source = data_file(test_data, ECOLI)
    assert not _is_bgzf(source)  # the point of the test: faidx cannot read this file as it is
    with gzip.open(source, "rt") as handle:
        lines = handle.read().splitlines()
    contig = lines[0][1:].split()[0]
    sequence = "".join(lines[1:])
    assert (contig, len(sequence)) == ("NC_000913.3", 4_641_652)

    stored = tmp_path / "ecoli.fa.gz"
    record = fetch_genome("ecoli", str(source), stored)
    assert (record["contigs"], record["length"]) == (1, 4_641_652)
    with pysam.FastaFile(str(stored)) as fasta:
        assert fasta.fetch(contig) == sequence

    settings = WindowSettings(length=4096, step=4096)
    counts, table = _windows(stored, tmp_path / "ecoli.parquet", "ecoli", settings)
    expected = expected_windows({contig: sequence.upper()}, settings)
    assert sum(counts.values()) == table.num_rows == len(expected)
    assert [(r["start"], r["split"]) for r in _rows(table.select(["start", "split"]))] == [(s, p) for _, s, p in expected]
    first = table.slice(0, 1).to_pylist()[0]
    assert first["sequence"] == sequence[first["start"] : first["end"]].upper()


@pytest.mark.parametrize("settings_name", SETTINGS)
@pytest.mark.parametrize("genome_name", ["lambda", "chr22"])
def test_window_counts_equal_what_contig_lengths_and_settings_imply(genomes, genome_name, settings_name, tmp_path):
    genome, settings = genomes[genome_name], SETTINGS[settings_name]
    counts, table = _windows(genome.stored, tmp_path / "w.parquet", genome.genome, settings)
    expected = expected_windows(genome.sequences, settings)
    assert expected, "the settings must leave some window"
    rows = [(r["contig"], r["start"], r["split"]) for r in _rows(table.select(["contig", "start", "split"]))]
    assert rows == expected
    assert counts == {split: sum(1 for *_, s in expected if s == split) for split in SPLIT_ORDER}
    assert all(counts[split] > 0 for split in SPLIT_ORDER)


def test_windows_with_too_many_n_in_chr22_are_dropped(chr22_genome, tmp_path):
    """The chr22 slice holds 100 kb of N; windows over it go, windows beside it stay."""
    settings = WindowSettings(length=500, step=500, max_n_fraction=0.1)
    _, table = _windows(chr22_genome.stored, tmp_path / "w.parquet", "chr22", settings)
    (sequence,) = chr22_genome.sequences.values()
    kept = set(table.column("start").to_pylist())
    n_heavy = [s for s in range(0, len(sequence) - 500 + 1, 500) if sequence[s : s + 500].count("N") > 50]
    assert len(n_heavy) >= 200
    assert kept.isdisjoint(n_heavy)
    for row in _rows(table):
        assert row["sequence"].count("N") <= 50


@pytest.mark.parametrize("genome_name", ["lambda", "chr22"])
def test_windows_of_different_splits_never_overlap(genomes, genome_name, tmp_path):
    genome = genomes[genome_name]
    settings = WindowSettings(length=300, step=70, max_n_fraction=1.0, dev_fraction=0.15, test_fraction=0.2)
    _, table = _windows(genome.stored, tmp_path / "w.parquet", genome.genome, settings)
    rows = sorted(_rows(table.select(["contig", "start", "end", "split"])), key=lambda r: (r["contig"], r["start"]))
    assert {r["split"] for r in rows} == set(SPLIT_ORDER)
    furthest_end: dict[tuple[str, str], int] = {}
    for row in rows:
        for split in SPLIT_ORDER:
            if split != row["split"]:
                assert furthest_end.get((row["contig"], split), 0) <= row["start"], row
        key = (row["contig"], row["split"])
        furthest_end[key] = max(furthest_end.get(key, 0), row["end"])


@pytest.mark.parametrize("genome_name", ["lambda", "chr22"])
def test_every_window_is_exactly_length_long_and_only_acgtn(genomes, genome_name, tmp_path):
    genome = genomes[genome_name]
    settings = WindowSettings(length=333, step=333, max_n_fraction=0.6)
    _, table = _windows(genome.stored, tmp_path / "w.parquet", genome.genome, settings)
    assert table.num_rows > 0
    for row in _rows(table):
        assert len(row["sequence"]) == 333 == row["end"] - row["start"]
        assert set(row["sequence"]) <= set("ACGTN")
    if genome_name == "chr22":
        assert any("N" in s for s in table.column("sequence").to_pylist())


def test_windows_parquet_schema_and_metadata(lambda_genome, tmp_path):
    output = tmp_path / "w.parquet"
    write_windows(lambda_genome.stored, output, "lambda", WindowSettings(length=512, step=512))
    schema = pq.read_schema(output)
    dictionary_of_strings = pa.dictionary(pa.int32(), pa.string())
    assert [(f.name, f.type) for f in schema] == [
        ("genome", dictionary_of_strings),
        ("contig", dictionary_of_strings),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.int8()),
        ("split", dictionary_of_strings),
        ("sequence", pa.string()),
    ]
    metadata = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert metadata["vqdna.schema_version"]
    assert metadata["vqdna.producer"] == f"vqdna {vqdna.__version__}"
    assert metadata["vqdna.genome"] == "lambda"

    table = pq.read_table(output)
    assert set(table.column("genome").to_pylist()) == {"lambda"}
    assert set(table.column("contig").to_pylist()) == set(lambda_genome.sequences)
    assert set(table.column("strand").to_pylist()) == {1}
    parquet = pq.ParquetFile(output)
    assert {parquet.metadata.row_group(0).column(i).compression for i in range(len(schema))} == {"ZSTD"}


@pytest.mark.parametrize(
    ("content", "settings"),
    [
        pytest.param(">c\n" + "N" * 2000 + "\n", WindowSettings(length=100, step=100), id="all-n"),
        pytest.param(">c\n" + "nryk" * 500 + "\n", WindowSettings(length=100, step=100), id="all-ambiguous"),
        pytest.param(">c\n" + "ACGT" * 100 + "\n>d\nACGT\n", WindowSettings(length=512, step=512), id="shorter-than-window"),
        pytest.param(">c\n" + "ACGT" * 300 + "\n", WindowSettings(length=512, step=512, dev_fraction=0.3, test_fraction=0.3),
                     id="regions-shorter-than-window"),
    ],
)
def test_genome_with_no_usable_window_is_an_error_and_leaves_no_file(tmp_path, content, settings):
    source = tmp_path / "src" / "g.fa"
    source.parent.mkdir()
    source.write_text(content)
    stored = tmp_path / "stored" / "g.fa.gz"
    fetch_genome("g", str(source), stored)
    output = tmp_path / "windows" / "g.parquet"
    with pytest.raises(VqdnaError) as caught:
        write_windows(stored, output, "g", settings)
    assert "no usable window" in str(caught.value) and "\n" not in str(caught.value)
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize("genome_name", ["lambda", "chr22"])
def test_reverse_complement_doubles_rows_with_minus_strand_the_reverse_complement(genomes, genome_name, tmp_path):
    genome = genomes[genome_name]
    base = WindowSettings(length=400, step=400, max_n_fraction=0.5)
    doubled = WindowSettings(length=400, step=400, max_n_fraction=0.5, reverse_complement=True)
    _, forward_only = _windows(genome.stored, tmp_path / "f.parquet", genome.genome, base)
    counts, both = _windows(genome.stored, tmp_path / "b.parquet", genome.genome, doubled)
    assert both.num_rows == sum(counts.values()) == 2 * forward_only.num_rows

    key = lambda r: (r["contig"], r["start"], r["end"], r["split"])  # noqa: E731
    rows = _rows(both)
    plus = {key(r): r["sequence"] for r in rows if r["strand"] == 1}
    minus = {key(r): r["sequence"] for r in rows if r["strand"] == -1}
    assert len(plus) == len(minus) == forward_only.num_rows
    assert plus == {key(r): r["sequence"] for r in _rows(forward_only)}
    assert minus.keys() == plus.keys()
    for k, sequence in plus.items():
        assert minus[k] == _reverse_complement(sequence)


def test_region_boundaries_are_exact_floors_of_the_fractions(tmp_path):
    """A 50/30/20 split of a 1000-nt contig: train [0, 500), dev [500, 800), test [800, 1000)."""
    source = tmp_path / "g.fa"
    source.write_text(">c\n" + "ACGTTGCA" * 125 + "\n")
    stored = tmp_path / "stored" / "g.fa.gz"
    fetch_genome("g", str(source), stored)
    settings = WindowSettings(length=100, step=100, dev_fraction=0.3, test_fraction=0.2)
    counts = write_windows(stored, tmp_path / "w.parquet", "g", settings)
    assert counts == {"train": 5, "dev": 3, "test": 2}
