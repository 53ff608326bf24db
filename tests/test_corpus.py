"""The memory-mapped pretraining corpus reads exactly what the token files hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import codes_of_token_files

from vqdna import VqdnaError
from vqdna.artifacts import tokens_schema, with_metadata
from vqdna.lm.corpus import build_corpus, open_corpus

HASH = "a" * 64


def _token_file(path, lengths, splits, seed, levels=2, digest=HASH, rows_per_group=3):
    """Ragged windows of two code levels, written in small row groups so the build streams several batches."""
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, 300, size=(n, levels)) for n in lengths]
    schema = with_metadata(tokens_schema([512] * levels, with_token_starts=False), tokenizer_hash=digest, genome=path.stem)
    columns = {
        "genome": [path.stem] * len(lengths),
        "contig": ["chr1"] * len(lengths),
        "start": list(range(len(lengths))),
        "end": [i + n for i, n in enumerate(lengths)],
        "strand": [1] * len(lengths),
        "split": splits,
    }
    for level in range(levels):
        columns[f"codes_l{level + 1}"] = [c[:, level].tolist() for c in codes]
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, row_group_size=rows_per_group)
    return path


@pytest.fixture
def token_files(tmp_path):
    return [
        _token_file(tmp_path / "a.parquet", [5, 9, 3, 12, 7, 1, 8], ["train", "test", "train", "train", "dev", "train", "test"], seed=1),
        _token_file(tmp_path / "b.parquet", [4, 11, 6], ["train", "train", "test"], seed=2),
    ]


@pytest.mark.parametrize("split", ["train", "test"])
def test_mapped_windows_equal_the_token_files(tmp_path, token_files, split):
    expected = codes_of_token_files(token_files, split)
    mapped = open_corpus(build_corpus(token_files, HASH, split, tmp_path / split))
    assert isinstance(mapped.tokens, np.memmap)
    assert np.array_equal(mapped.lengths, expected.lengths)
    rows = np.array([3, 0, 2]) if split == "train" else np.array([1, 0])
    assert np.array_equal(mapped.padded(rows), expected.padded(rows))
    assert np.array_equal(mapped.take(np.arange(len(mapped))).values, expected.values)


def test_mapped_pieces_equal_chunked_codes_in_order(tmp_path, token_files):
    expected = codes_of_token_files(token_files, "train").chunked(4)
    pieces = open_corpus(build_corpus(token_files, HASH, "train", tmp_path / "train")).chunked(4)
    assert np.array_equal(pieces.lengths, expected.lengths)
    every = np.arange(len(pieces))
    assert np.array_equal(pieces.padded(every), expected.padded(every))


def test_a_split_with_no_windows_maps_to_an_empty_corpus(tmp_path, token_files):
    mapped = open_corpus(build_corpus(token_files, HASH, "nothing", tmp_path / "empty"))
    assert len(mapped) == 0


def test_another_tokenizer_is_refused_and_leaves_no_folder(tmp_path, token_files):
    stranger = _token_file(tmp_path / "c.parquet", [4], ["train"], seed=3, digest="b" * 64)
    with pytest.raises(VqdnaError, match=r"c\.parquet.*another tokenizer"):
        build_corpus([*token_files, stranger], HASH, "train", tmp_path / "train")
    assert not (tmp_path / "train").exists()


def test_files_with_other_levels_are_refused_and_leave_no_folder(tmp_path, token_files):
    one_level = _token_file(tmp_path / "c.parquet", [4], ["train"], seed=3, levels=1)
    with pytest.raises(VqdnaError, match=r"c\.parquet: code levels"):
        build_corpus([*token_files, one_level], HASH, "train", tmp_path / "train")
    assert not any(tmp_path.glob("*train*"))
