"""``--smoke`` for the benchmark scripts: the real run's code at tiny sizes, a few seconds on a CPU.

CI runs every script this way (tests/test_benchmarks.py), so a script whose
imports or calls into the package go stale fails there, not on the day it is
next run for its numbers.
"""

from __future__ import annotations

import argparse


def parse_args(parser: argparse.ArgumentParser, smoke_sizes: dict) -> argparse.Namespace:
    """The command line, with ``--smoke``: it makes ``smoke_sizes`` the defaults (an option given still wins).

    Only sizes change, so a smoke run goes through the same code as a real one. It
    needs ``--output``: its numbers must never replace a real result.
    """
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds on a CPU (what CI runs); needs --output")
    args = parser.parse_args()
    if args.smoke:
        if args.output == parser.get_default("output"):
            parser.error("--smoke needs --output: a smoke run's numbers must not replace a real result")
        parser.set_defaults(**smoke_sizes)
        args = parser.parse_args()
    return args
