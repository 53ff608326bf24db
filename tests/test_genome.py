"""Sequence policy: what ``vqdna.genome`` accepts, rejects and stores, and what windows see of it.

Every input here is a tiny synthetic FASTA made in ``tmp_path``; the facts come
from DESIGN.md "Sequence policy".
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest

from vqdna import VqdnaError
from vqdna.download import fetch_genome
from vqdna.genome import BASES, FastaRecords, base_ids, normalise_sequence, read_contigs, write_bgzip_fasta
from vqdna.windows import WindowSettings, write_windows

AMBIGUITY_LETTERS = "RYKMSWBDHVN"


def _source(tmp_path: Path, content: bytes | str, name: str = "genome.fa") -> Path:
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _fetch(tmp_path: Path, source: Path, genome: str = "g") -> Path:
    output = tmp_path / "out" / f"{genome}.fa.gz"
    fetch_genome(genome, str(source), output)
    return output


def _whole_contig_windows(fasta: Path, tmp_path: Path, name: str = "w") -> list[tuple[str, str]]:
    """(contig, sequence) of one window per contig that spans all of it (contigs of equal length)."""
    lengths = {c.length for c in read_contigs(fasta)}
    assert len(lengths) == 1
    settings = WindowSettings(
        length=lengths.pop(), step=1, max_n_fraction=1.0, dev_fraction=0.0, test_fraction=0.0
    )
    output = tmp_path / f"{name}.parquet"
    write_windows(fasta, output, "g", settings)
    table = pq.read_table(output)
    return list(zip(table.column("contig").to_pylist(), table.column("sequence").to_pylist()))


def _output_folder_entries(tmp_path: Path) -> list[str]:
    folder = tmp_path / "out"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_lowercase_letters_are_uppercased_in_windows(tmp_path):
    source = _source(tmp_path, ">c\nacgtnACGTacGGtt\n")
    fasta = _fetch(tmp_path, source)
    assert _whole_contig_windows(fasta, tmp_path) == [("c", "ACGTNACGTACGGTT")]


def test_stored_genome_keeps_the_source_letters(tmp_path):
    """Soft-masking and IUPAC codes stay in the stored reference; only windows apply the policy."""
    source = _source(tmp_path, ">c\nacgtRYkmACGT\n")
    fasta = _fetch(tmp_path, source)
    with pysam.FastaFile(str(fasta)) as stored:
        assert stored.fetch("c") == "acgtRYkmACGT"


def test_iupac_ambiguity_letters_become_n_in_windows(tmp_path):
    letters = AMBIGUITY_LETTERS + AMBIGUITY_LETTERS.lower()
    sequence = "".join(f"A{x}c" for x in letters)
    expected = "".join("N" if ch.upper() in AMBIGUITY_LETTERS else ch.upper() for ch in sequence)
    assert set(expected) == set("ACN")
    fasta = _fetch(tmp_path, _source(tmp_path, f">c\n{sequence}\n"))
    assert _whole_contig_windows(fasta, tmp_path) == [("c", expected)]


def test_contig_names_are_the_first_word_of_the_header(tmp_path):
    source = _source(tmp_path, ">chr1 some description\tmore\nACGTACGT\n>chr2\nTTTTGGGG\n")
    fasta = _fetch(tmp_path, source)
    assert [(c.name, c.length) for c in read_contigs(fasta)] == [("chr1", 8), ("chr2", 8)]
    assert _whole_contig_windows(fasta, tmp_path) == [("chr1", "ACGTACGT"), ("chr2", "TTTTGGGG")]


def test_irregular_line_widths_are_rewrapped_so_faidx_fetch_is_exact(tmp_path):
    """faidx needs equal line widths; the stored copy is re-wrapped so fetches stay exact."""
    chunks = ["ACGTA", "CCGGTTAACCGGTTAAC" * 7, "G", "TTTT" * 40, "ACG"]
    sequence = "".join(chunks)
    source = _source(tmp_path, ">c\n" + "\n".join(chunks) + "\n>d\n" + "\n".join(reversed(chunks)) + "\n")
    fasta = _fetch(tmp_path, source)
    with pysam.FastaFile(str(fasta)) as stored:
        assert stored.fetch("c") == sequence
        assert stored.fetch("d") == "".join(reversed(chunks))
        assert stored.fetch("c", 3, 150) == sequence[3:150]


def test_crlf_line_endings_give_the_same_windows_as_lf(tmp_path):
    lf = ">a first\nACGTacgtNNRY\nGGCCAATT\n>b\nTTGGCCAAacgt\nACGTACGT\n"
    crlf = lf.replace("\n", "\r\n")
    assert "\r\n" in crlf
    settings = WindowSettings(length=4, step=2, max_n_fraction=0.5, dev_fraction=0.25, test_fraction=0.25)
    tables = []
    for name, text in (("lf", lf), ("crlf", crlf)):
        folder = tmp_path / name
        folder.mkdir()
        fasta = _fetch(folder, _source(folder, text))
        assert [(c.name, c.length) for c in read_contigs(fasta)] == [("a", 20), ("b", 20)]
        write_windows(fasta, folder / "windows.parquet", "g", settings)
        tables.append(pq.read_table(folder / "windows.parquet"))
    assert tables[0].num_rows > 0
    assert tables[0].equals(tables[1], check_metadata=True)


@pytest.mark.parametrize(
    ("content", "expected_parts"),
    [
        pytest.param(">c\nACGT\nAC1GT\n", ["line 3", "'1'"], id="digit"),
        pytest.param(">c\nACGT\nACGT ACGT\n", ["line 3", "' '"], id="space-inside-line"),
        pytest.param(">c\nACGT\nACGTACGT\n>d\nAC-GT\n", ["line 5", "'-'"], id="punctuation"),
        pytest.param(">c\r\nACGT\r\nAC\tGT\r\n", ["line 3", "'\\t'"], id="tab-crlf"),
        pytest.param(">a x\nACGT\n>b\nACGT\n>a y\nACGT\n", ["line 5", "duplicate", "'a'"], id="duplicate-contig"),
        pytest.param(">\nACGT\n", ["line 1", "without a name"], id="header-without-name"),
        pytest.param("", ["empty"], id="empty-file"),
        pytest.param("\n\n", ["empty"], id="blank-lines-only"),
        pytest.param(">a\n>b\n", ["no sequence"], id="headers-only"),
        pytest.param("@read1\nACGT\n+\nIIII\n", ["FASTQ"], id="fastq"),
        pytest.param("LOCUS       NC_001416  48502 bp    DNA\nDEFINITION  phage\n", ["GenBank"], id="genbank"),
        pytest.param("ACGTACGT\n", ["not a FASTA"], id="no-header"),
    ],
)
def test_malformed_fasta_is_a_one_line_error_naming_the_file_and_leaves_no_output(tmp_path, content, expected_parts):
    source = _source(tmp_path, content)
    with pytest.raises(VqdnaError) as caught:
        _fetch(tmp_path, source)
    message = str(caught.value)
    assert "\n" not in message
    assert str(source) in message
    for part in expected_parts:
        assert part in message
    assert _output_folder_entries(tmp_path) == []


def test_empty_gzip_file_is_an_error_and_leaves_no_output(tmp_path):
    source = _source(tmp_path, gzip.compress(b""), name="genome.fa.gz")
    with pytest.raises(VqdnaError, match="empty"):
        _fetch(tmp_path, source)
    assert _output_folder_entries(tmp_path) == []


def test_truncated_gzip_is_an_error_and_leaves_no_output(tmp_path):
    whole = gzip.compress((">c\n" + "ACGT" * 5000 + "\n").encode())
    source = _source(tmp_path, whole[: len(whole) // 2], name="genome.fa.gz")
    with pytest.raises(VqdnaError) as caught:
        _fetch(tmp_path, source)
    assert str(source) in str(caught.value)
    assert _output_folder_entries(tmp_path) == []


def test_write_bgzip_fasta_names_the_label_and_line_of_a_bad_character(tmp_path):
    source = _source(tmp_path, ">c\nACGT\nACGT\nACGTX\n")
    with pytest.raises(VqdnaError, match=r"^my-genome\.fa line 4: invalid character 'X'"):
        write_bgzip_fasta(source, tmp_path / "out.fa.gz", label="my-genome.fa")


@pytest.mark.parametrize(
    ("content", "expected_parts"),
    [
        pytest.param(">c\nACGT\nAC1GT\n", ["record 'c'", "'1'", "base 7"], id="digit"),
        pytest.param(">c\nACGT\nAC-GT\n", ["record 'c'", "'-'"], id="punctuation"),
        pytest.param(">a\n>b\nACGT\n", ["line 1", "record 'a' has no sequence"], id="record-without-sequence"),
        pytest.param(">a x\nACGT\n>a y\nACGT\n", ["line 3", "duplicate record name 'a'"], id="duplicate"),
        pytest.param(">\nACGT\n", ["line 1", "without a name"], id="header-without-name"),
        pytest.param("", ["empty"], id="empty-file"),
        pytest.param("@read1\nACGT\n+\nIIII\n", ["FASTQ"], id="fastq"),
    ],
)
def test_fasta_records_apply_the_stored_genomes_rules_in_one_line_naming_the_file(tmp_path, content, expected_parts):
    source = _source(tmp_path, content)
    with pytest.raises(VqdnaError) as caught:
        FastaRecords.read(source)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(source))
    for part in expected_parts:
        assert part in message


def test_fasta_records_read_gzip_and_keep_the_letters_as_written(tmp_path):
    source = _source(tmp_path, gzip.compress(b">c1 first\r\nacgtN\r\nRYAC\n>c2\nGGG\n"), name="genome.fa.gz")
    with FastaRecords.read(source) as records:
        assert records.references == ("c1", "c2") and records.lengths == (9, 3)
        assert records.fetch("c1", 2, 7) == "gtNRY"  # the window stage applies the sequence policy, as for stored genomes
        assert str(records) == str(source)


def _base_ids_before_the_byte_table(sequence: str) -> np.ndarray:
    """base_ids as it was: the sequence policy on the text, then a lookup over the five model letters."""
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(BASES.encode(), dtype=np.uint8)] = np.arange(len(BASES))
    ids = table[np.frombuffer(normalise_sequence(sequence).encode("ascii", "replace"), dtype=np.uint8)]
    if (ids == 255).any():
        raise VqdnaError(f"invalid character {sequence[int(np.argmax(ids == 255))]!r} in sequence (allowed: A C G T and IUPAC codes)")
    return ids


def _ids_or_error(function, sequence: str):
    try:
        return function(sequence).tolist()
    except VqdnaError as err:
        return str(err)


def test_base_ids_byte_table_equals_policy_then_lookup_on_every_byte_value():
    for value in range(256):
        for sequence in (chr(value), f"acgtN{chr(value)}RY"):
            assert _ids_or_error(base_ids, sequence) == _ids_or_error(_base_ids_before_the_byte_table, sequence), value
    mixed = "ACGTacgtNRYKMSWBDHVnrykmswbdhv"
    assert base_ids(mixed).tolist() == [0, 1, 2, 3] * 2 + [4] * 22
    with pytest.raises(VqdnaError, match=r"invalid character 'é' in sequence"):
        base_ids("ACé")
