"""``vqdna inspect``: its summaries equal direct counts, ``--decode`` equals the tokenizer's decode, errors are one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
from helpers import tiny_tokenizer

from vqdna import VqdnaError
from vqdna.inspection import decode_row, inspect_path
from vqdna.tokenizer.api import load_tokenizer
from vqdna.tokenizer.baselines import KmerConfig, KmerTokenizer
from vqdna.tokenizer.tokens import tokenize_windows
from vqdna.windows import WindowSettings, write_windows

WINDOW = 32
SMALL_CONTIGS = 22  # with chr1 and chr2, more than the 20 contigs the table shows


def _synthetic_genome(folder: Path) -> Path:
    """Two large contigs and many small ones of distinct sizes, with IUPAC letters so some windows hold N."""
    rng = np.random.default_rng(5)
    sizes = [("chr1", 3000), ("chr2", 1500)] + [(f"u{i}", 64 + 40 * i) for i in range(SMALL_CONTIGS)]
    records = []
    for name, length in sizes:
        letters = rng.choice(list("ACGT"), length)
        letters[rng.choice(length, max(1, length // 150), replace=False)] = "R"
        sequence = "".join(letters)
        records.append(f">{name}\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)))
    fasta = folder / "toy.fa"
    fasta.write_text("\n".join(records) + "\n")
    pysam.faidx(str(fasta))
    return fasta


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The workflow's layout (results/windows, results/tokenizers) so inspect's default guesses find the files."""
    folder = tmp_path_factory.mktemp("inspect")
    windows = folder / "results" / "windows" / "toy.parquet"
    write_windows(_synthetic_genome(folder), windows, "toy", WindowSettings(length=WINDOW, step=WINDOW, reverse_complement=True))
    tokenizer = folder / "results" / "tokenizers" / "tiny"
    tiny_tokenizer(tokenizer, seed=0)
    tiny_tokenizer(folder / "other_tokenizer", seed=1)
    tokens = folder / "results" / "tokens" / "tiny" / "toy.parquet"
    tokenize_windows(tokenizer, "tiny", windows, tokens, device="cpu")
    kmer = folder / "kmer3"
    KmerTokenizer(KmerConfig(k=3, overlapping=False)).save(kmer)
    kmer_tokens = folder / "kmer3.toy.parquet"
    tokenize_windows(kmer, "kmer3", windows, kmer_tokens, device="cpu")
    return {"folder": folder, "windows": windows, "tokenizer": tokenizer, "tokens": tokens, "kmer": kmer, "kmer_tokens": kmer_tokens}


# -- direct expectations ---------------------------------------------------------------------------


def _direct_contig_counts(path: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    table = pq.read_table(path, columns=["contig", "split", "start", "end"]).unify_dictionaries()
    grouped = table.group_by(["contig", "split"]).aggregate([("start", "count"), ("start", "min"), ("end", "max")])
    return {(r["contig"], r["split"]): (r["start_count"], r["start_min"], r["end_max"]) for r in grouped.to_pylist()}


def _direct_usage(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(codes, occurrences) of codes_l1 over the whole file, by np.unique."""
    codes = np.concatenate([np.asarray(c) for c in pq.read_table(path, columns=["codes_l1"]).column("codes_l1").to_pylist()])
    return np.unique(codes, return_counts=True)


def _sequence(windows: Path, row: int) -> str:
    return pq.read_table(windows, columns=["sequence"]).column("sequence")[row].as_py()


# -- parsing the report ------------------------------------------------------------------------------


def _contig_table(text: str) -> tuple[dict[tuple[str, str], tuple[int, int, int]], str | None]:
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["contig", "split"])
    rows, more = {}, None
    for line in lines[header + 1 :]:
        if not line.strip():
            break
        if line.strip().startswith("..."):
            more = line.strip()
            break
        contig, split, windows, first, last = line.split()
        rows[(contig, split)] = (int(windows), int(first), int(last))
    return rows, more


def _usage(text: str) -> tuple[int, int, float, int]:
    """(codes used, vocabulary size, perplexity, most frequent code) of codes_l1."""
    used = re.search(r"codes_l1: \d+ tokens .*; (\d+) of (\d+) codes used", text)
    perplexity = re.search(r"perplexity ([\d.]+)", text)
    top = re.search(r"top \d+: (\d+) ", text)
    return int(used[1]), int(used[2]), float(perplexity[1]), int(top[1])


# -- summaries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("artifact", ["windows", "tokens"])
def test_windows_per_contig_and_split_equal_a_direct_count(made, artifact):
    path = made[artifact]
    direct = _direct_contig_counts(path)
    shown, more = _contig_table(inspect_path(path, rows=0))
    per_contig = {c: sum(v[0] for (k, _), v in direct.items() if k == c) for c, _ in direct}
    shown_contigs = {c for c, _ in shown}
    hidden = set(per_contig) - shown_contigs
    assert len(shown_contigs) == 20 and len(hidden) == SMALL_CONTIGS + 2 - 20
    assert min(per_contig[c] for c in shown_contigs) >= max(per_contig[c] for c in hidden)
    assert shown == {key: value for key, value in direct.items() if key[0] in shown_contigs}
    assert more == f"... {len(hidden)} more contigs ({sum(per_contig[c] for c in hidden)} windows)"


def test_summary_counts_both_strands(made):
    strands = pq.read_table(made["windows"], columns=["strand"]).column("strand").to_numpy()
    text = inspect_path(made["windows"], rows=0)
    assert f"genome toy: {len(strands)} windows ({(strands == 1).sum()} forward, {(strands == -1).sum()} reverse complement)" in text


def test_learned_code_usage_and_perplexity_equal_numpy(made):
    codes, counts = _direct_usage(made["tokens"])
    p = counts / counts.sum()
    perplexity = float(np.exp(-(p * np.log(p)).sum()))
    used, size, shown_perplexity, top = _usage(inspect_path(made["tokens"], rows=0))
    assert (used, size, top) == (len(codes), int(codes.max()) + 1, int(codes[np.argmax(counts)]))
    assert shown_perplexity == pytest.approx(perplexity, abs=0.005)
    assert "max code + 1" in inspect_path(made["tokens"], rows=0)
    used, size, _, _ = _usage(inspect_path(made["tokens"], rows=0, tokenizer_dir=made["tokenizer"]))
    assert (used, size) == (len(codes), 16)


def test_kmer_usage_counts_token_ids_over_the_tokenizer_vocabulary(made):
    codes, counts = _direct_usage(made["kmer_tokens"])
    p = counts / counts.sum()
    text = inspect_path(made["kmer_tokens"], rows=0, tokenizer_dir=made["kmer"])
    used, size, shown_perplexity, top = _usage(text)
    assert (used, size, top) == (len(codes), 4**3 + 1 + 5, int(codes[np.argmax(counts)]))
    assert shown_perplexity == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), abs=0.005)
    kmer = KmerTokenizer(KmerConfig(k=3, overlapping=False)).decode([np.array([[top]])])[0]
    assert re.search(rf"top \d+: {top} {kmer} ", text)


def test_no_summary_reads_only_the_overview(made):
    text = inspect_path(made["tokens"], rows=2, summary=False)
    assert "first 2 rows:" in text and "vqdna.tokenizer_hash:" in text
    assert "windows per contig" not in text and "code usage" not in text


# -- decoding -----------------------------------------------------------------------------------------


def _differing(reference: str, decoded: str) -> tuple[int, int, int]:
    """(called bases that differ, called bases, reference N) by a plain loop."""
    called = [i for i, base in enumerate(reference) if base != "N"]
    return sum(decoded[i] != reference[i] for i in called), len(called), len(reference) - len(called)


def test_decode_through_the_cli_guesses_the_workflow_folders_and_writes_nothing(made):
    before = sorted((p, p.stat().st_mtime_ns) for p in made["folder"].rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "vqdna", "inspect", str(made["tokens"].relative_to(made["folder"])), "--decode", "0"],
        check=False, capture_output=True, text=True, cwd=made["folder"],
    )
    assert result.returncode == 0, result.stderr
    reference = _sequence(made["windows"], 0)
    tokens = pq.read_table(made["tokens"]).slice(0, 1).to_pylist()[0]
    decoded = load_tokenizer(made["tokenizer"], device="cpu").decode([np.array([tokens["codes_l1"]])])[0]
    differ, called, n = _differing(reference, decoded)
    assert f"    window   {reference}" in result.stdout and f"    decoded  {decoded}" in result.stdout
    assert f"differing positions: {differ} of {called} called bases" in result.stdout
    assert f"reference N: {n} positions" in result.stdout
    assert sorted((p, p.stat().st_mtime_ns) for p in made["folder"].rglob("*")) == before


def test_kmer_decode_shows_the_bases_an_unknown_kmer_hid(made):
    sequences = pq.read_table(made["windows"], columns=["sequence"]).column("sequence").to_pylist()
    row = next(i for i, s in enumerate(sequences) if "N" in s)
    text = decode_row(made["kmer_tokens"], row, tokenizer_dir=made["kmer"], windows_path=made["windows"])
    window = sequences[row]
    # non-overlapping 3-mers over ACGT: a 3-mer with an N is the unknown id and decodes as NNN; the tail is kept
    whole = len(window) // 3 * 3
    expected = "".join("NNN" if "N" in window[i : i + 3] else window[i : i + 3] for i in range(0, whole, 3)) + window[whole:]
    lost = sum(a != b for a, b in zip(window, expected, strict=True))
    assert lost > 0
    assert f"    window   {window}" in text and f"    decoded  {expected}" in text
    assert f"differing positions: {lost} of {WINDOW - window.count('N')} called bases" in text
    assert f"reference N: {window.count('N')} positions, 0 of them decoded as a base" in text
    assert "    tokens   |  |" in text  # non-overlapping 3-mers start every third base


# -- errors ---------------------------------------------------------------------------------------


def _one_line_error(*args: object, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "vqdna", "inspect", *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error:") and result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


def test_another_tokenizer_is_a_one_line_error(made):
    error = _one_line_error(made["tokens"], "--decode", 0, "--tokenizer", made["folder"] / "other_tokenizer", "--windows", made["windows"])
    assert str(made["tokens"]) in error and "hash" in error


def test_row_out_of_range_is_a_one_line_error(made):
    rows = pq.ParquetFile(made["tokens"]).metadata.num_rows
    with pytest.raises(VqdnaError, match=rf"row {rows} out of range \(the file has {rows} rows") as raised:
        decode_row(made["tokens"], rows, tokenizer_dir=made["tokenizer"], windows_path=made["windows"])
    assert "\n" not in str(raised.value) and str(made["tokens"]) in str(raised.value)


def test_missing_windows_file_is_a_one_line_error(made, tmp_path):
    error = _one_line_error(made["tokens"], "--decode", 0, "--tokenizer", made["tokenizer"], cwd=tmp_path)
    assert "results/windows/toy.parquet" in error and "--windows" in error


def test_not_parquet_is_a_one_line_error(made):
    error = _one_line_error(made["folder"] / "toy.fa")
    assert "toy.fa: not a readable Parquet file" in error


def test_a_parquet_file_with_an_intact_footer_and_corrupt_pages_is_one_line(tmp_path):
    """`vqdna inspect` reads the footer, then the pages: a corrupt page was a ZSTD traceback."""
    import pyarrow as pa

    path = tmp_path / "windows.parquet"
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list("ACGT"), 512)) for _ in range(200)]
    pq.write_table(pa.table({"sequence": sequences}), path, compression="zstd")
    footer_start = path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[-8:-4], "little")
    data = bytearray(path.read_bytes())
    middle = footer_start // 2
    data[middle : middle + 64] = bytes(64)  # inside the one column chunk's compressed page
    path.write_bytes(bytes(data))
    pq.ParquetFile(path)  # the footer still reads
    result = subprocess.run([sys.executable, "-m", "vqdna", "inspect", str(path)], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(r"windows\.parquet: corrupt data inside the Parquet file \(.+\); delete it and rerun", result.stderr)
