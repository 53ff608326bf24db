"""Species classification (the paper's Table 6), sampled the way HyenaDNA sampled it.

HyenaDNA's protocol (reproduced by VQDNA's Table 6): five assemblies (human
T2T-CHM13v2.0, lemur, mouse, pig, hippo); chromosomes 1, 3, 12, 13 are the dev
split, 5, 7, 9, 10, 11 the test split, every other chromosome train, so no
sample of one split comes from a chromosome of another. A sample is a uniform
species, then a uniform chromosome among that species' chromosomes of the
split, then a uniform start, and ``length`` bases from there; the label is the
species' position in the order given.

Departures from HyenaDNA's code, each to make a fixed, reproducible dataset:

- samples are drawn once, from a generator seeded by ``(seed, split)``, and
  written out, where HyenaDNA redraws every epoch from the global RNG; the
  seed per split keeps each split's samples independent of the other splits'
  sample counts;
- a sample whose N fraction (after the sequence policy, so IUPAC ambiguity
  letters count as N) exceeds ``max_n_fraction`` is redrawn at a new start on
  the same chromosome, which keeps species and chromosome uniform; HyenaDNA
  kept such samples. The T2T human assembly has almost no N, but the other
  assemblies carry assembly gaps; without the filter part of the "species
  signal" would be gap runs rather than sequence;
- chromosomes shorter than ``length`` are left out of sampling (HyenaDNA
  padded with N);
- the mitochondrion (MT) is left out by default: HyenaDNA's split lists name
  nuclear chromosomes only, and a 16 kb circle would be sampled as often as a
  200 Mb chromosome. X and Y (where an assembly has them) are train, as in
  HyenaDNA.

Chromosome names come from each assembly's NCBI assembly report (NCBI FASTA
names sequences by accession, e.g. CP068277.2); a genome given without a
report is taken to name its chromosomes already (``chr1``, ``1``, ``chrX``,
``MT``), and its other sequences (``chr1_KI270706v1_random``, ``chrUn_...``)
are left out, as unplaced scaffolds are.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqdna import VqdnaError
from vqdna.artifacts import SPLITS
from vqdna.genome import Contig, normalise_sequence, open_indexed_fasta, open_maybe_gzip

# HyenaDNA's five assemblies, in its label order: (species, GenBank accession, assembly name).
HYENADNA_ASSEMBLIES = (
    ("human", "GCA_009914755.4", "T2T-CHM13v2.0"),
    ("lemur", "GCA_020740605.1", "mLemCat1.pri"),
    ("mouse", "GCA_921998355.2", "A_J_v3"),
    ("pig", "GCA_002844635.1", "USMARCv1.0"),
    ("hippo", "GCA_023065835.1", "ASM2306583v1"),
)

# Columns of an NCBI assembly report; the header is the last '#' line before the rows.
_REPORT_REQUIRED = ("Sequence-Role", "Assigned-Molecule", "GenBank-Accn", "RefSeq-Accn")
_REPORT_NAME_COLUMNS = ("GenBank-Accn", "RefSeq-Accn", "UCSC-style-name")  # names a FASTA may use
_ASSEMBLED = "assembled-molecule"

# A genome without a report: a contig is a chromosome when its name looks like one.
_CHROMOSOME_NAME = re.compile(r"^(?:chr)?(?:[0-9]+[A-Za-z]?|[XYZW]|MT|M)$", re.IGNORECASE)


def ncbi_assembly_urls(accession: str, assembly_name: str) -> dict[str, str]:
    """The FASTA and assembly report URLs of an NCBI assembly folder (GCA_/GCF_ accession)."""
    match = re.fullmatch(r"(GC[AF])_(\d{3})(\d{3})(\d{3})\.\d+", accession)
    if not match:
        raise VqdnaError(f"assembly accession {accession!r} is not of the form GCA_123456789.1")
    prefix, a, b, c = match.groups()
    folder = f"https://ftp.ncbi.nlm.nih.gov/genomes/all/{prefix}/{a}/{b}/{c}/{accession}_{assembly_name}"
    stem = f"{folder}/{accession}_{assembly_name}"
    return {"fasta": f"{stem}_genomic.fna.gz", "assembly_report": f"{stem}_assembly_report.txt"}


def canonical_chromosome(name: str) -> str:
    """``chr1`` and ``1`` name the same chromosome; ``chrM``, ``M`` and ``MT`` the mitochondrion."""
    stripped = name[3:] if name[:3].lower() == "chr" and len(name) > 3 else name
    return "MT" if stripped.upper() in ("M", "MT") else stripped


def _chromosome_order(name: str) -> tuple:
    # Numbers numerically (2 before 10), then letters: the order does not depend on the FASTA's record order.
    match = re.match(r"(\d+)(.*)", name)
    return (0, int(match.group(1)), match.group(2)) if match else (1, 0, name)


def read_assembly_report(path: str | Path) -> dict[str, str]:
    """Sequence name (GenBank, RefSeq and UCSC accession, where not ``na``) -> chromosome, for assembled molecules.

    Unlocalized, unplaced and alternate scaffolds are left out: they belong to
    no chromosome, so they cannot be put on one side of a chromosome split.
    """
    path = Path(path)
    if not path.is_file():
        raise VqdnaError(f"{path}: assembly report not found")
    header: list[str] | None = None
    header_line = 0
    last_comment: tuple[int, str] | None = None
    mapping: dict[str, str] = {}
    rows = 0
    with open_maybe_gzip(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                if header is None:
                    last_comment = (line_no, line)
                continue
            if header is None:
                if last_comment is None:
                    raise VqdnaError(f"{path} line {line_no}: data row before any '#' header line; not an NCBI assembly report")
                header_line, text = last_comment
                header = [column.strip() for column in text.lstrip("#").split("\t")]
                missing = [c for c in _REPORT_REQUIRED if c not in header]
                if missing:
                    raise VqdnaError(
                        f"{path} line {header_line}: header lacks column(s) {', '.join(missing)}; "
                        f"expected the NCBI assembly report header '# Sequence-Name<TAB>Sequence-Role<TAB>...'"
                    )
            fields = line.split("\t")
            if len(fields) != len(header):
                raise VqdnaError(
                    f"{path} line {line_no}: expected {len(header)} tab-separated fields (header on line {header_line}), found {len(fields)}"
                )
            rows += 1
            row = dict(zip(header, (f.strip() for f in fields)))
            if row["Sequence-Role"] != _ASSEMBLED:
                continue
            chromosome = row["Assigned-Molecule"]
            if not chromosome or chromosome == "na":
                raise VqdnaError(f"{path} line {line_no}: assembled molecule without an Assigned-Molecule name")
            for column in _REPORT_NAME_COLUMNS:
                name = row.get(column, "na")
                if not name or name == "na":
                    continue
                if mapping.get(name, chromosome) != chromosome:
                    raise VqdnaError(
                        f"{path} line {line_no}: {column} {name} names chromosome {chromosome}, "
                        f"but an earlier row gave it chromosome {mapping[name]}"
                    )
                mapping[name] = chromosome
    if rows == 0:
        raise VqdnaError(f"{path}: no sequence rows; not an NCBI assembly report")
    if not mapping:
        raise VqdnaError(
            f"{path}: no '{_ASSEMBLED}' rows; a scaffold-level assembly has no chromosomes to split by"
        )
    return mapping


@dataclass
class SpeciesSettings:
    """How the species dataset is cut; defaults are HyenaDNA's where it has one.

    ``lengths``: the sample lengths Table 6 reports that a BERT encoder reaches
    (1k, 20k, 32k with k = 1024 as in HyenaDNA's 1k/32k; the paper's VQDNA is
    out of memory at 250k and 450k), one dataset per length. ``samples``: per split, HyenaDNA's ``total_size`` of
    5000 for every split. ``train_chromosomes`` None means every chromosome
    that is not dev, test or excluded; explicit lists are taken as given
    (``exclude_chromosomes`` applies only to that default). Names match after
    :func:`canonical_chromosome` (``chr1`` = ``1``). ``max_n_fraction`` is the
    windows' default (10%): a sample across a typical 100-500 nt assembly gap
    stays, a sample inside a centromere or a long gap run is redrawn, at most
    ``max_redraws`` times in a row before the chromosome is reported.
    """

    lengths: tuple[int, ...] = (1024, 20480, 32768)
    samples: dict[str, int] = field(default_factory=lambda: {split: 5000 for split in SPLITS})
    train_chromosomes: tuple[str, ...] | None = None
    dev_chromosomes: tuple[str, ...] = ("1", "3", "12", "13")
    test_chromosomes: tuple[str, ...] = ("5", "7", "9", "10", "11")
    exclude_chromosomes: tuple[str, ...] = ("MT",)
    seed: int = 0
    max_n_fraction: float = 0.1
    max_redraws: int = 1000

    def __post_init__(self) -> None:
        # Sheets and YAML give lists: tuples make settings compare equal however they were given.
        for name in ("lengths", "dev_chromosomes", "test_chromosomes", "exclude_chromosomes"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.train_chromosomes is not None:
            self.train_chromosomes = tuple(self.train_chromosomes)
        if any(length < 1 for length in self.lengths):
            raise VqdnaError(f"species: lengths must be positive (got {list(self.lengths)})")
        if not 0 <= self.max_n_fraction <= 1:
            raise VqdnaError(f"species: max_n_fraction must lie in [0, 1] (got {self.max_n_fraction})")
        if self.max_redraws < 0:
            raise VqdnaError(f"species: max_redraws must be >= 0 (got {self.max_redraws})")
        lists = {"train": self.train_chromosomes or (), "dev": self.dev_chromosomes, "test": self.test_chromosomes}
        seen: dict[str, str] = {}
        for split, names in lists.items():
            for name in names:
                key = canonical_chromosome(str(name))
                if seen.get(key, split) != split:
                    raise VqdnaError(f"species: chromosome {name} is listed in both the {seen[key]} and the {split} split")
                seen[key] = split

    def split_of(self, chromosome: str) -> str | None:
        """The split a chromosome belongs to, or None when it takes part in none."""
        key = canonical_chromosome(chromosome)
        if key in {canonical_chromosome(str(c)) for c in self.dev_chromosomes}:
            return "dev"
        if key in {canonical_chromosome(str(c)) for c in self.test_chromosomes}:
            return "test"
        if self.train_chromosomes is None:
            excluded = {canonical_chromosome(str(c)) for c in self.exclude_chromosomes}
            return None if key in excluded else "train"
        return "train" if key in {canonical_chromosome(str(c)) for c in self.train_chromosomes} else None


@dataclass(frozen=True)
class SpeciesSample:
    """One sample and where it came from (0-based start on ``contig``)."""

    label: int
    species: str
    chromosome: str
    contig: str
    start: int
    sequence: str


def chromosome_contigs(fasta: str | Path, chromosome_map: dict[str, str] | None = None) -> dict[str, Contig]:
    """Chromosome (canonical name) -> the FASTA contig that holds it.

    With a map (from :func:`read_assembly_report`), contigs are looked up by
    name and every mapped chromosome must be present (a report of another
    assembly would otherwise pass silently). Without one, contigs whose names
    look like chromosomes (``chr1``, ``1``, ``X``, ``chrM``) are taken as such.
    """
    try:
        with open_indexed_fasta(fasta) as handle:
            contigs = [Contig(name, length) for name, length in zip(handle.references, handle.lengths)]
    except (OSError, ValueError) as err:
        raise VqdnaError(f"{fasta}: cannot open as an indexed FASTA ({err}); genomes must be bgzip-compressed and faidx-indexed") from None
    found: dict[str, Contig] = {}
    for contig in contigs:
        if chromosome_map:
            if contig.name not in chromosome_map:
                continue
            chromosome = canonical_chromosome(chromosome_map[contig.name])
        elif _CHROMOSOME_NAME.match(contig.name):
            chromosome = canonical_chromosome(contig.name)
        else:
            continue
        if chromosome in found:
            raise VqdnaError(f"{fasta}: contigs {found[chromosome].name} and {contig.name} both hold chromosome {chromosome}")
        found[chromosome] = contig
    if chromosome_map:
        absent = sorted({canonical_chromosome(c) for c in chromosome_map.values()} - set(found), key=_chromosome_order)
        if absent:
            names = sorted(n for n, c in chromosome_map.items() if canonical_chromosome(c) == absent[0])
            raise VqdnaError(
                f"{fasta}: no sequence for chromosome(s) {', '.join(absent)} of its assembly report "
                f"(chromosome {absent[0]} would be named {' or '.join(names)}); the report and the FASTA belong to different assemblies"
            )
    elif not found:
        raise VqdnaError(
            f"{fasta}: no contig is named like a chromosome (chr1, 1, chrX, ...) and no assembly report maps its sequences to chromosomes"
        )
    return found


def _split_chromosomes(
    genomes: dict[str, Path], chromosome_maps: dict[str, dict[str, str]], length: int, settings: SpeciesSettings
) -> dict[str, dict[str, list[tuple[str, Contig]]]]:
    """split -> species -> [(chromosome, contig)] of the chromosomes long enough to sample from, in a fixed order."""
    out: dict[str, dict[str, list[tuple[str, Contig]]]] = {split: {} for split in SPLITS}
    for species, fasta in genomes.items():
        chromosomes = chromosome_contigs(fasta, (chromosome_maps or {}).get(species))
        for split in SPLITS:
            usable = [
                (name, contig)
                for name, contig in sorted(chromosomes.items(), key=lambda item: _chromosome_order(item[0]))
                if settings.split_of(name) == split and contig.length >= length
            ]
            out[split][species] = usable
    return out


def draw_samples(
    genomes: dict[str, Path],
    chromosome_maps: dict[str, dict[str, str]],
    length: int,
    split: str,
    count: int,
    settings: SpeciesSettings | None = None,
) -> list[SpeciesSample]:
    """``count`` samples of one split: uniform species, uniform chromosome of the split, uniform start.

    Each sample is fetched on its own (nothing holds a chromosome in memory),
    so 32 kb samples by the thousand cost only the samples themselves.
    """
    settings = settings or SpeciesSettings()
    if split not in SPLITS:
        raise VqdnaError(f"species: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if length < 1:
        raise VqdnaError(f"species: length must be positive (got {length})")
    if count < 0:
        raise VqdnaError(f"species: the {split} sample count must be >= 0 (got {count})")
    if len(genomes) < 2:
        raise VqdnaError(f"species: classification needs at least two genomes (got {len(genomes)})")
    chromosomes = _split_chromosomes(genomes, chromosome_maps, length, settings)[split]
    for species, usable in chromosomes.items():
        if not usable:
            raise VqdnaError(
                f"species: {species} ({genomes[species]}) has no chromosome of at least {length} nt in the {split} split "
                f"(dev {', '.join(settings.dev_chromosomes)}; test {', '.join(settings.test_chromosomes)}; "
                f"train {'the rest' if settings.train_chromosomes is None else ', '.join(settings.train_chromosomes)})"
            )
    species_names = list(genomes)
    # Seeded by (seed, split): a split's samples do not change when another split's count does.
    rng = np.random.default_rng([settings.seed, zlib.crc32(split.encode())])
    max_n = settings.max_n_fraction * length
    samples = []
    with contextlib.ExitStack() as stack:
        handles = {s: stack.enter_context(open_indexed_fasta(genomes[s])) for s in species_names}
        for _ in range(count):
            label = int(rng.integers(len(species_names)))
            species = species_names[label]
            usable = chromosomes[species]
            chromosome, contig = usable[int(rng.integers(len(usable)))]
            for _attempt in range(settings.max_redraws + 1):
                start = int(rng.integers(0, contig.length - length + 1))
                sequence = normalise_sequence(handles[species].fetch(contig.name, start, start + length))
                if sequence.count("N") <= max_n:
                    break
            else:
                raise VqdnaError(
                    f"species: {species} chromosome {chromosome} ({contig.name} in {genomes[species]}): "
                    f"{settings.max_redraws + 1} draws of {length} nt in a row had an N fraction above {settings.max_n_fraction:g}; "
                    f"the chromosome is mostly gaps: raise max_n_fraction or move it out of the {split} split"
                )
            if len(sequence) != length:
                raise VqdnaError(f"{genomes[species]}: {contig.name}:{start}-{start + length} returned {len(sequence)} nt; rebuild its .fai index")
            samples.append(SpeciesSample(label, species, chromosome, contig.name, start, sequence))
    return samples


def species_samples(
    genomes: dict[str, Path],
    chromosome_maps: dict[str, dict[str, str]],
    length: int,
    samples: dict[str, int] | None = None,
    settings: SpeciesSettings | None = None,
) -> dict[str, list[SpeciesSample]]:
    """split -> its samples, each labelled with the species' position in ``genomes`` and placed on its contig.

    ``genomes``: species -> bgzip + faidx FASTA (``resources/genomes/{genome}.fa.gz``).
    ``chromosome_maps``: species -> :func:`read_assembly_report` of its assembly;
    a species without one names its chromosomes in the FASTA already.
    ``samples``: split -> count (default ``settings.samples``).
    """
    settings = settings or SpeciesSettings()
    samples = settings.samples if samples is None else samples
    unknown = [s for s in samples if s not in SPLITS]
    if unknown:
        raise VqdnaError(f"species: unknown split(s) {', '.join(unknown)} in the sample counts (expected {', '.join(SPLITS)})")
    return {split: draw_samples(genomes, chromosome_maps, length, split, int(count), settings) for split, count in samples.items()}
