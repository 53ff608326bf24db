"""Atomic writes: a killed writer leaves nothing that looks complete, and its next run clears what it left."""

from __future__ import annotations

import pytest

from vqdna.artifacts import atomic_dir, atomic_path, clear_leftovers


def test_a_failed_write_leaves_no_file_and_the_next_write_clears_a_killed_ones_temporary(tmp_path):
    target = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    (tmp_path / ".x.parquet.tmp-killed").write_text("what a kill -9 leaves")
    (tmp_path / ".y.parquet.tmp-other").write_text("another output's: not ours to remove")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.parquet.tmp-other", "x.parquet"]


def test_a_folder_write_clears_a_killed_ones_temporary_folder(tmp_path):
    (tmp_path / ".run.tmp-killed" / "adapter").mkdir(parents=True)
    (tmp_path / ".run.tmp-killed" / "adapter" / "weights").write_bytes(b"\0" * 100)
    with atomic_dir(tmp_path / "run") as tmp:
        (tmp / "metrics.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_leftover_names_are_matched_literally(tmp_path):
    (tmp_path / ".a[1].download-x").mkdir()
    (tmp_path / ".a1.download-x").mkdir()
    clear_leftovers(tmp_path, ".a[1].download-")
    assert [p.name for p in tmp_path.iterdir()] == [".a1.download-x"]
