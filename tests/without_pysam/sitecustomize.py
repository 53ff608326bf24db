"""Makes pysam and Snakemake unimportable, as on the bare GPU machine, which has neither.

A folder on ``PYTHONPATH`` that holds ``sitecustomize.py`` is read at every
interpreter start, so a test that puts this folder first on ``PYTHONPATH``
blocks the two in the process it starts and in every process that one starts.
"""

import importlib.abc
import sys

BLOCKED = ("pysam", "snakemake")


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the GPU machine has no {top})", name=name)
        return None


sys.meta_path.insert(0, _Blocked())
