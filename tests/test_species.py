"""Species classification (Table 6, HyenaDNA protocol): assembly reports, chromosome splits, seeded sampling.

Synthetic genomes here hold random sequence per chromosome, so a 50 nt sample
is found in exactly one chromosome of one genome: that traces every sample
back to its species and chromosome without trusting the sampler's own record.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pysam
import pytest
from helpers import data_file

from vqdna import VqdnaError
from vqdna.datasets.species import (
    SpeciesSettings,
    chromosome_contigs,
    draw_samples,
    ncbi_assembly_urls,
    read_assembly_report,
    species_samples,
)
from vqdna.genome import (
    index_fasta,
    normalise_sequence,
    open_maybe_gzip,
    write_bgzip_fasta,
)

SPLITS = ("train", "dev", "test")
DEV = {"1", "3", "12", "13"}
TEST = {"5", "7", "9", "10", "11"}
CHROMOSOMES = [str(i) for i in range(1, 15)] + ["X"]  # 14 and X are train, with 2, 4, 6, 8
LENGTH = 50
COUNTS = {"train": 90, "dev": 60, "test": 60}

REPORT_HEADER = (
    "# Sequence-Name\tSequence-Role\tAssigned-Molecule\tAssigned-Molecule-Location/Type\tGenBank-Accn\t"
    "Relationship\tRefSeq-Accn\tAssembly-Unit\tSequence-Length\tUCSC-style-name"
)


def _report_row(name: str, role: str, molecule: str, genbank: str, refseq: str, length: int, ucsc: str = "na") -> str:
    location = "Mitochondrion" if molecule == "MT" else "Chromosome"
    relation = "=" if refseq != "na" else "<>"
    return "\t".join([name, role, molecule, location, genbank, relation, refseq, "Primary Assembly", str(length), ucsc])


def _write_report(path: Path, rows: list[str]) -> Path:
    comments = ["# Assembly name:  toy1.0", "# Organism name:  Toy species", "#", "# Sequence-Name ... (not the header)"]
    path.write_text("\n".join(comments + [REPORT_HEADER] + rows) + "\n")
    return path


def _random_sequence(rng: np.random.Generator, length: int) -> str:
    """Random ACGT with soft-masked (lowercase) stretches, as real assemblies have."""
    letters = rng.choice(list("ACGT"), length)
    masked = rng.random(length) < 0.3
    letters[masked] = np.char.lower(letters[masked])
    return "".join(letters)


def _bgzip(folder: Path, name: str, records: dict[str, str]) -> Path:
    plain = folder / f"{name}.fa"
    plain.write_text("".join(f">{contig} description\n{seq}\n" for contig, seq in records.items()))
    fasta = folder / f"{name}.fa.gz"
    write_bgzip_fasta(plain, fasta)
    index_fasta(fasta)
    return fasta


class Genome:
    """A synthetic genome: bgzip FASTA, chromosome map (None: named like chr1), contig -> (chromosome, sequence)."""

    def __init__(self, fasta: Path, chromosome_map: dict[str, str] | None, contigs: dict[str, tuple[str | None, str]]):
        self.fasta = fasta
        self.chromosome_map = chromosome_map
        self.contigs = contigs


def _accession_genome(folder: Path, index: int, seed: int) -> Genome:
    """Chromosomes 1-14, X and MT named by GenBank accession, plus an unplaced and an unlocalized scaffold."""
    rng = np.random.default_rng(seed)
    contigs: dict[str, tuple[str | None, str]] = {}
    rows = []
    for number, chromosome in enumerate(CHROMOSOMES + ["MT"], start=1):
        accession = f"CP{index:02d}{number:04d}.1"
        sequence = _random_sequence(rng, 150 if chromosome == "MT" else int(rng.integers(300, 600)))
        contigs[accession] = (chromosome, sequence)
        refseq = "na" if chromosome == "X" else f"NC_{index:02d}{number:04d}.1"
        rows.append(_report_row(chromosome, "assembled-molecule", chromosome, accession, refseq, len(sequence)))
    for role, name in [("unplaced-scaffold", "JAAA01000001.1"), ("unlocalized-scaffold", "JAAA01000002.1")]:
        sequence = _random_sequence(rng, 400)
        contigs[name] = (None, sequence)
        rows.append(_report_row(f"scaffold_{name}", role, "1" if role.startswith("unloc") else "na", name, "na", 400))
    fasta = _bgzip(folder, f"species{index}", {c: s for c, (_, s) in contigs.items()})
    report = _write_report(folder / f"species{index}_assembly_report.txt", rows)
    return Genome(fasta, read_assembly_report(report), contigs)


def _ucsc_genome(folder: Path, seed: int) -> Genome:
    """A genome given as plain FASTA that names its chromosomes already (chr1, chrX, chrM, a random contig)."""
    rng = np.random.default_rng(seed)
    contigs: dict[str, tuple[str | None, str]] = {}
    for chromosome in CHROMOSOMES:
        contigs[f"chr{chromosome}"] = (chromosome, _random_sequence(rng, int(rng.integers(300, 600))))
    contigs["chrM"] = ("MT", _random_sequence(rng, 150))
    contigs["chr1_KI270706v1_random"] = (None, _random_sequence(rng, 400))
    return Genome(_bgzip(folder, "ucsc", {c: s for c, (_, s) in contigs.items()}), None, contigs)


def _split_of(chromosome: str | None) -> str | None:
    if chromosome is None or chromosome == "MT":
        return None
    return "dev" if chromosome in DEV else "test" if chromosome in TEST else "train"


def _trace(sample: str, genomes: dict[str, Genome]) -> list[tuple[str, str | None]]:
    """(species, chromosome) of every contig that holds ``sample`` (after the sequence policy)."""
    return [
        (species, chromosome)
        for species, genome in genomes.items()
        for chromosome, sequence in genome.contigs.values()
        if sample in normalise_sequence(sequence)
    ]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Genome]:
    folder = tmp_path_factory.mktemp("species")
    return {
        "alpha": _accession_genome(folder, 1, seed=11),
        "beta": _accession_genome(folder, 2, seed=12),
        "gamma": _ucsc_genome(folder, seed=13),
    }


def species_dataset(*args, **kwargs) -> dict[str, tuple[list[str], list[int]]]:
    """split -> (sequences, labels), as prepare_dataset writes them."""
    return {split: ([s.sequence for s in drawn], [s.label for s in drawn]) for split, drawn in species_samples(*args, **kwargs).items()}


def _dataset(genomes: dict[str, Genome], seed: int = 0, counts: dict[str, int] = COUNTS, **settings):
    return species_dataset(
        {s: g.fasta for s, g in genomes.items()},
        {s: g.chromosome_map for s, g in genomes.items() if g.chromosome_map},
        LENGTH,
        counts,
        SpeciesSettings(seed=seed, **settings),
    )


# --- assembly reports ---------------------------------------------------------------------------------


def test_assembly_report_maps_accessions_of_assembled_molecules_only(tmp_path):
    report = _write_report(
        tmp_path / "GCA_000000000.1_toy1.0_assembly_report.txt",
        [
            _report_row("1", "assembled-molecule", "1", "CP068277.2", "NC_060925.1", 1000, "chr1"),
            _report_row("X", "assembled-molecule", "X", "CP068255.2", "na", 900),
            _report_row("MT", "assembled-molecule", "MT", "CP068254.1", "NC_012920.1", 16569, "chrM"),
            _report_row("scaf1", "unplaced-scaffold", "na", "JAHKSE010000001.1", "NW_000001.1", 500, "chrUn_1"),
            _report_row("scaf2", "unlocalized-scaffold", "1", "JAHKSE010000002.1", "na", 400),
        ],
    )
    assert read_assembly_report(report) == {
        "CP068277.2": "1", "NC_060925.1": "1", "chr1": "1",
        "CP068255.2": "X",
        "CP068254.1": "MT", "NC_012920.1": "MT", "chrM": "MT",
    }


def test_assembly_report_with_a_short_row_names_the_file_and_line(tmp_path):
    report = _write_report(
        tmp_path / "report.txt",
        [_report_row("1", "assembled-molecule", "1", "CP1.1", "na", 10), "2\tassembled-molecule\t2"],
    )
    with pytest.raises(VqdnaError) as caught:
        read_assembly_report(report)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{report} line 7:" in message and "expected 10 tab-separated fields" in message and "found 3" in message


def test_assembly_report_without_the_header_columns_is_an_error(tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("# Assembly name: toy\n# Name\tRole\n1\tassembled-molecule\n")
    with pytest.raises(VqdnaError, match=rf"{re.escape(str(report))} line 2: header lacks column\(s\) Sequence-Role"):
        read_assembly_report(report)
    report.write_text("1\tassembled-molecule\n")
    with pytest.raises(VqdnaError, match=rf"{re.escape(str(report))} line 1: data row before any '#' header line"):
        read_assembly_report(report)


def test_assembly_report_of_a_scaffold_level_assembly_is_an_error(tmp_path):
    report = _write_report(tmp_path / "report.txt", [_report_row("s1", "unplaced-scaffold", "na", "JA1.1", "na", 10)])
    with pytest.raises(VqdnaError, match="no 'assembled-molecule' rows"):
        read_assembly_report(report)


def test_report_of_another_assembly_is_caught_against_the_fasta(synthetic, tmp_path):
    report = _write_report(tmp_path / "other.txt", [_report_row("1", "assembled-molecule", "1", "CP999999.1", "na", 10)])
    with pytest.raises(VqdnaError, match="no sequence for chromosome.s. 1 of its assembly report .* CP999999.1"):
        chromosome_contigs(synthetic["alpha"].fasta, read_assembly_report(report))


def test_ncbi_urls_follow_the_assembly_folder_layout():
    urls = ncbi_assembly_urls("GCA_009914755.4", "T2T-CHM13v2.0")
    folder = "https://ftp.ncbi.nlm.nih.gov/genomes/all/GCA/009/914/755/GCA_009914755.4_T2T-CHM13v2.0/"
    assert urls == {
        "fasta": folder + "GCA_009914755.4_T2T-CHM13v2.0_genomic.fna.gz",
        "assembly_report": folder + "GCA_009914755.4_T2T-CHM13v2.0_assembly_report.txt",
    }


# --- sampling on synthetic genomes ----------------------------------------------------------------------


def test_every_sample_comes_from_its_species_and_its_split_chromosomes(synthetic):
    splits = _dataset(synthetic)
    species = list(synthetic)
    for split in SPLITS:
        sequences, labels = splits[split]
        assert len(sequences) == len(labels) == COUNTS[split]
        assert set(labels) == {0, 1, 2}
        for sequence, label in zip(sequences, labels):
            assert len(sequence) == LENGTH
            assert set(sequence) <= set("ACGTN")  # soft-masked letters uppercased
            origins = _trace(sequence, synthetic)
            assert len(origins) == 1, origins
            origin_species, chromosome = origins[0]
            assert origin_species == species[label]
            assert _split_of(chromosome) == split, (split, chromosome)  # never MT, never a scaffold


def test_each_split_samples_every_chromosome_of_the_split(synthetic):
    """Uniform chromosomes: with 600 train samples every train chromosome of every species shows up."""
    splits = _dataset(synthetic, counts={"train": 600})
    seen = {origin for sequence in splits["train"][0] for origin in _trace(sequence, synthetic)}
    expected = {(s, c) for s in synthetic for c in CHROMOSOMES if _split_of(c) == "train"}
    assert seen == expected


def test_recorded_provenance_is_the_fetched_region(synthetic):
    samples = draw_samples({s: g.fasta for s, g in synthetic.items()},
                           {s: g.chromosome_map for s, g in synthetic.items() if g.chromosome_map},
                           LENGTH, "test", 30, SpeciesSettings())
    for sample in samples:
        chromosome, sequence = synthetic[sample.species].contigs[sample.contig]
        assert sample.chromosome == chromosome and _split_of(chromosome) == "test"
        assert sample.sequence == normalise_sequence(sequence[sample.start : sample.start + LENGTH])


def test_same_seed_same_samples_other_seed_other_samples(synthetic):
    first, again, other = _dataset(synthetic, seed=3), _dataset(synthetic, seed=3), _dataset(synthetic, seed=4)
    assert first == again
    for split in SPLITS:
        assert first[split][0] != other[split][0]


def test_a_split_does_not_depend_on_the_other_splits_counts(synthetic):
    small = _dataset(synthetic, counts={"train": 5, "dev": 60})
    large = _dataset(synthetic, counts={"train": 200, "dev": 60, "test": 7})
    assert small["dev"] == large["dev"]


def test_chromosomes_shorter_than_the_sample_are_skipped_and_none_left_is_an_error(synthetic):
    genomes = {s: g.fasta for s, g in synthetic.items()}
    maps = {s: g.chromosome_map for s, g in synthetic.items() if g.chromosome_map}
    with pytest.raises(VqdnaError, match=r"alpha \(.*species1.fa.gz\) has no chromosome of at least 5000 nt in the train split"):
        species_dataset(genomes, maps, 5000, {"train": 1})


def test_split_lists_are_configurable_and_may_not_overlap(synthetic):
    splits = _dataset(synthetic, train_chromosomes=["2"], dev_chromosomes=["chr4"], test_chromosomes=["X"])
    for split, chromosome in [("train", "2"), ("dev", "4"), ("test", "X")]:
        assert {c for seq in splits[split][0] for _, c in _trace(seq, synthetic)} == {chromosome}
    with pytest.raises(VqdnaError, match="chromosome chr3 is listed in both the dev and the test split"):
        SpeciesSettings(test_chromosomes=["chr3"])


def test_n_rich_regions_are_redrawn(tmp_path):
    rng = np.random.default_rng(5)
    half_gap = _random_sequence(rng, 300) + "N" * 300 + "nnnRYKM" * 10 + _random_sequence(rng, 230)
    genomes = {}
    for index in range(2):
        records = {"chr1": _random_sequence(rng, 400), "chr5": _random_sequence(rng, 400), "chr2": half_gap if index == 0 else _random_sequence(rng, 400)}
        genomes[f"s{index}"] = _bgzip(tmp_path, f"s{index}", records)
    def n_fractions(max_n_fraction: float) -> list[float]:
        sequences, _ = species_dataset(genomes, {}, LENGTH, {"train": 200}, SpeciesSettings(max_n_fraction=max_n_fraction))["train"]
        return [s.count("N") / LENGTH for s in sequences]
    assert max(n_fractions(1.0)) == 1.0  # unfiltered, the gap (IUPAC letters count as N) is sampled
    assert max(n_fractions(0.1)) <= 0.1


def test_a_chromosome_of_gaps_stops_with_a_clear_error(tmp_path):
    rng = np.random.default_rng(6)
    genomes = {
        "good": _bgzip(tmp_path, "good", {"2": _random_sequence(rng, 400)}),
        "gappy": _bgzip(tmp_path, "gappy", {"2": "N" * 400}),
    }
    with pytest.raises(VqdnaError, match=r"gappy chromosome 2 \(2 in .*gappy.fa.gz\): 21 draws of 50 nt in a row had an N fraction above 0.1"):
        species_dataset(genomes, {}, LENGTH, {"train": 20}, SpeciesSettings(max_redraws=20))


def test_a_fasta_without_map_or_chromosome_names_is_an_error(tmp_path):
    fasta = _bgzip(tmp_path, "scaffolds", {"scaffold_1": "ACGT" * 50})
    with pytest.raises(VqdnaError, match="no contig is named like a chromosome"):
        chromosome_contigs(fasta)


# --- real genomes ---------------------------------------------------------------------------------------

# Two "species" made of the real single-contig genomes, one contig per split.
REAL_SPECIES = {
    "primate": {"genomes/22_20-21M.fa": "train", "genomes/MT-human.fa": "dev", "genomes/MT-orang.fa": "test"},
    "microbe": {
        "genomes/GCF_000005845.2_ASM584v2_genomic.fna.gz": "train",
        "genomes/lambda_virus.fa": "dev",
        "genomes/reference_seq.fasta": "test",
    },
}
REAL_LENGTH = 1000


@pytest.fixture(scope="module")
def real_genomes(test_data, tmp_path_factory):
    """Each species' files concatenated into one bgzip FASTA in tmp (the data folder is read in place)."""
    folder = tmp_path_factory.mktemp("real_species")
    genomes, maps, splits, sequences = {}, {}, {}, {}
    for species, files in REAL_SPECIES.items():
        plain = folder / f"{species}.fa"
        with open(plain, "wb") as out:
            for relative in files:
                with open_maybe_gzip(data_file(test_data, relative)) as handle:
                    out.write(handle.read())
        genomes[species] = folder / f"{species}.fa.gz"
        contigs = write_bgzip_fasta(plain, genomes[species])
        index_fasta(genomes[species])
        # The explicit split mapping: each contig is its own "chromosome", named after its file.
        maps[species] = {contig.name: Path(relative).name for contig, relative in zip(contigs, files)}
        for relative, split in files.items():
            splits[(species, Path(relative).name)] = split
        with pysam.FastaFile(str(genomes[species])) as handle:
            sequences[species] = {maps[species][c.name]: normalise_sequence(handle.fetch(c.name)) for c in contigs}
    return genomes, maps, splits, sequences


def _real_dataset(real_genomes, seed=0):
    genomes, maps, splits, _ = real_genomes
    settings = SpeciesSettings(
        seed=seed,
        train_chromosomes=[c for (_, c), s in splits.items() if s == "train"],
        dev_chromosomes=[c for (_, c), s in splits.items() if s == "dev"],
        test_chromosomes=[c for (_, c), s in splits.items() if s == "test"],
    )
    return species_dataset(genomes, maps, REAL_LENGTH, {"train": 40, "dev": 20, "test": 20}, settings)


def test_real_genomes_samples_stay_in_their_split(real_genomes):
    _, _, splits, sequences = real_genomes
    species = list(REAL_SPECIES)
    dataset = _real_dataset(real_genomes)
    for split, (samples, labels) in dataset.items():
        assert len(samples) == {"train": 40, "dev": 20, "test": 20}[split]
        for sample, label in zip(samples, labels):
            assert len(sample) == REAL_LENGTH
            assert sample.count("N") <= 0.1 * REAL_LENGTH  # the chr22 slice's 100 kb gap is redrawn
            holders = [(s, c) for s, contigs in sequences.items() for c, seq in contigs.items() if sample in seq]
            assert holders and all(s == species[label] and splits[(s, c)] == split for s, c in holders), holders
    assert _real_dataset(real_genomes) == dataset


# --- the datasets-sheet row, through the CLI the workflow calls ------------------------------------------


def test_a_species_row_of_the_datasets_sheet_becomes_parquet_splits_through_the_cli(synthetic, tmp_path):
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    spec = {
        "dataset": "species_50", "group": "SPECIES", "task": "classification", "num_labels": 3, "metric": "accuracy",
        "kind": "species", "genomes": "alpha,beta,gamma", "max_length": LENGTH, "split_samples": "train=30,dev=12,test=9",
    }
    fastas = [f"{s}={g.fasta}" for s, g in synthetic.items()]
    folder = synthetic["alpha"].fasta.parent
    reports = [f"{name}={folder / f'species{index}_assembly_report.txt'}" for index, name in ((1, "alpha"), (2, "beta"))]
    outputs = []
    for attempt in ("first", "second"):
        command = [
            sys.executable, "-m", "vqdna", "prepare-dataset", "--spec", json.dumps(spec),
            "--fastas", *fastas, "--assembly-reports", *reports, "--output", str(tmp_path / attempt),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append({split: pq.read_table(tmp_path / attempt / f"{split}.parquet") for split in SPLITS})
    counts = {"train": 30, "dev": 12, "test": 9}
    for split, table in outputs[0].items():
        assert table.num_rows == counts[split]
        assert set(table.column("label").to_pylist()) <= {0, 1, 2}
        assert all(len(s) == LENGTH for s in table.column("sequence").to_pylist())
        assert table.equals(outputs[1][split]), "the same seed must give the same samples"
        for row in table.to_pylist():
            species, chromosome = _trace(row["sequence"], synthetic)[0]
            assert ["alpha", "beta", "gamma"][row["label"]] == species and _split_of(chromosome) == split
            # each row carries its place on the genome: contig and 0-based start
            assert synthetic[species].contigs[row["contig"]][0] == chromosome
            assert normalise_sequence(synthetic[species].contigs[row["contig"]][1][row["start"] : row["start"] + LENGTH]) == row["sequence"]
    meta = pq.read_schema(tmp_path / "first" / "dev.parquet").metadata
    assert json.loads(meta[b"vqdna.dev_chromosomes"]) == ["1", "3", "12", "13"]
