"""Token files: windows run through a tokenizer, stamped with its hash, refused under another one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
import torch

from vqdna import VqdnaError
from vqdna.genome import base_ids
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


def _rewritten_windows(windows: Path, output: Path, rows_per_group: int, bad_row: int | None = None) -> Path:
    """The windows file again with small row groups (and an invalid letter in ``bad_row``), schema and metadata kept."""
    table = pq.read_table(windows)
    if bad_row is not None:
        sequences = table.column("sequence").to_pylist()
        sequences[bad_row] = "X" + sequences[bad_row][1:]
        table = table.set_column(table.schema.get_field_index("sequence"), "sequence", pa.array(sequences, pa.string()))
    pq.write_table(table, output, row_group_size=rows_per_group)
    return output


def test_pipelined_codes_over_many_row_groups_equal_encode_ids_of_all_windows_at_once(made, tmp_path):
    windows = _rewritten_windows(made["windows"], tmp_path / "small-groups.parquet", rows_per_group=13)
    assert pq.ParquetFile(windows).num_row_groups >= 20  # several times the pipeline's depth
    rows = tokenize_windows(made["tokenizer"], "tiny", windows, tmp_path / "tokens.parquet", batch_size=5, device="cpu")
    sequences = pq.read_table(windows, columns=["sequence"]).column("sequence").to_pylist()
    expected = load_tokenizer(made["tokenizer"], device="cpu").encode_ids(np.stack([base_ids(s) for s in sequences]))[0]
    written = pq.read_table(tmp_path / "tokens.parquet")
    assert rows == written.num_rows == len(sequences)
    assert np.array_equal(np.array(written.column("codes_l1").to_pylist()), expected)
    assert written.column("start").to_pylist() == pq.read_table(windows).column("start").to_pylist()
    assert pq.read_table(made["tokens"]).to_pydict() == written.to_pydict()  # as from the windows' one row group
    assert pq.read_schema(made["tokens"]).equals(written.schema, check_metadata=True)


class _StageFailed(RuntimeError):
    pass


def _fail_on_call(function, call: int):
    calls = []

    def failing(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise _StageFailed(f"{function.__name__} failed on call {call}")
        return function(*args, **kwargs)

    return failing


@pytest.mark.parametrize("stage", ["reader", "device step", "writer"])
def test_a_failing_stage_raises_its_error_leaves_no_file_and_stops_every_thread(made, tmp_path, monkeypatch, stage):
    bad_row = 150 if stage == "reader" else None  # row group 15 of ~28: the pipeline is full when it fails
    windows = _rewritten_windows(made["windows"], tmp_path / "windows.parquet", rows_per_group=10, bad_row=bad_row)
    expected = {"reader": (VqdnaError, "invalid character 'X'"), "device step": (_StageFailed, "encode_ids failed on call 9"),
                "writer": (_StageFailed, "write_batch failed on call 6")}[stage]
    if stage == "device step":
        monkeypatch.setattr(VQTokenizer, "encode_ids", _fail_on_call(VQTokenizer.encode_ids, 9))
    if stage == "writer":
        monkeypatch.setattr(pq.ParquetWriter, "write_batch", _fail_on_call(pq.ParquetWriter.write_batch, 6))
    threads_before = _threads_besides_tqdm_monitor()
    output = tmp_path / "out" / "tokens.parquet"
    with pytest.raises(expected[0], match=expected[1]):
        tokenize_windows(made["tokenizer"], "tiny", windows, output, batch_size=4, device="cpu")
    assert list(output.parent.iterdir()) == []  # neither the token file nor a temporary
    assert _threads_besides_tqdm_monitor() == threads_before  # the reader and writer threads joined


def _threads_besides_tqdm_monitor() -> list[str]:
    """Live threads by name; tqdm's monitor comes and goes with progress bars on its own."""
    return sorted(t.name for t in threading.enumerate() if t.name != "tqdm_monitor")
