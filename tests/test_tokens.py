"""Token files: windows run through a tokenizer, stamped with its hash, refused under another one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
import torch

from vqdna import VqdnaError
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer, tokenizer_hash
from vqdna.tokenizer.tokens import check_token_file, tokenize_windows
from vqdna.tokenizer.vq import VQVAE, VQConfig
from vqdna.windows import WindowSettings, write_windows

KEY_COLUMNS = ["genome", "contig", "start", "end", "strand", "split"]
WINDOW = 32


def _synthetic_genome(folder: Path) -> Path:
    """Two contigs with soft-masked stretches and a few IUPAC letters, so the windows hold N."""
    rng = np.random.default_rng(11)
    records = []
    for name, length in (("chr1", 3000), ("chr2", 1500)):
        letters = rng.choice(list("ACGT"), length)
        letters[rng.choice(length, 20, replace=False)] = "R"
        sequence = "".join(letters)
        sequence = sequence[:500] + sequence[500:800].lower() + sequence[800:]
        records.append(f">{name} synthetic\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)))
    fasta = folder / "toy.fa"
    fasta.write_text("\n".join(records) + "\n")
    pysam.faidx(str(fasta))
    return fasta


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    windows = folder / "toy.windows.parquet"
    write_windows(_synthetic_genome(folder), windows, "toy", WindowSettings(length=WINDOW, step=WINDOW, reverse_complement=True))
    torch.manual_seed(0)
    tokenizer_dir = folder / "tokenizer"
    VQTokenizer(VQVAE(VQConfig(width=16, depth=1, codebook_size=16)), device="cpu").save(tokenizer_dir)
    tokens = folder / "toy.tokens.parquet"
    rows = tokenize_windows(tokenizer_dir, "tiny", windows, tokens, batch_size=7, device="cpu")
    return {"windows": windows, "tokenizer": tokenizer_dir, "tokens": tokens, "rows": rows}


def test_token_file_keeps_the_window_keys(made):
    windows, tokens = pq.read_table(made["windows"]), pq.read_table(made["tokens"])
    assert made["rows"] == tokens.num_rows == windows.num_rows
    for name in KEY_COLUMNS:
        assert tokens.column(name).to_pylist() == windows.column(name).to_pylist(), name
    assert set(tokens.column("split").to_pylist()) == {"train", "dev", "test"}
    assert set(tokens.column("strand").to_pylist()) == {1, -1}


def test_codes_are_list_uint16_one_per_nucleotide(made):
    schema = pq.read_schema(made["tokens"])
    assert schema.field("codes_l1").type == pa.list_(pa.uint16())
    assert "codes_l2" not in schema.names
    codes = pq.read_table(made["tokens"]).column("codes_l1").to_pylist()
    assert all(len(c) == WINDOW for c in codes)
    assert max(max(c) for c in codes) < 16


def test_token_file_carries_the_tokenizer_name_and_hash(made):
    meta = pq.read_schema(made["tokens"]).metadata
    assert meta[b"vqdna.tokenizer"] == b"tiny"
    assert meta[b"vqdna.tokenizer_hash"].decode() == tokenizer_hash(made["tokenizer"])
    assert meta[b"vqdna.genome"] == b"toy"


def test_codes_equal_tokenizer_encode_of_the_window_sequences(made):
    sequences = pq.read_table(made["windows"], columns=["sequence"]).column("sequence").to_pylist()
    assert any("N" in s for s in sequences)
    expected = np.stack([c[0] for c in load_tokenizer(made["tokenizer"], device="cpu").encode(sequences)])
    written = np.array(pq.read_table(made["tokens"]).column("codes_l1").to_pylist())
    assert np.array_equal(written, expected)
    assert written.shape == (len(sequences), WINDOW)


def test_a_token_file_is_checked_against_its_tokenizer(made):
    check_token_file(made["tokens"], tokenizer_hash(made["tokenizer"]))
    with pytest.raises(VqdnaError, match="made with tokenizer hash .* another tokenizer"):
        check_token_file(made["tokens"], "0" * 64)
