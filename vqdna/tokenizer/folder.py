"""A saved tokenizer's folder: which files make it, and their hash, the tokenizer's identity.

``config.json`` (type and architecture) and the model file of its kind:
``model.safetensors`` for the learned VQ/HRQ tokenizers, ``tokenizer.json`` for
BPE, nothing for k-mer and char. The hash covers exactly these files, so a
measurement written beside them (metrics.json, curves) changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vqdna import VqdnaError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BPE_FILE = "tokenizer.json"
MODEL_FILES = (WEIGHTS_FILE, BPE_FILE)


def tokenizer_hash(directory: str | Path) -> str:
    """sha256 of config.json and the model file(s) beside it: the tokenizer's identity."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise VqdnaError(f"{directory}: not a saved tokenizer ({CONFIG_FILE} missing)")
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, *MODEL_FILES):
        if (directory / name).is_file():
            digest.update(name.encode())
            digest.update((directory / name).read_bytes())
    return digest.hexdigest()
