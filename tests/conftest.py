"""Shared fixtures: the real public test data, found through ``$VQDNA_TEST_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The read-only data folder; skip when the variable is unset, fail when it names a missing folder."""
    value = os.environ.get("VQDNA_TEST_DATA")
    if not value:
        pytest.skip("VQDNA_TEST_DATA not set")
    folder = Path(value)
    if not folder.is_dir():
        pytest.fail(f"VQDNA_TEST_DATA={value} is not a folder; missing test data is an error, not a skip")
    return folder
