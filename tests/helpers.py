"""Independent expectations shared by several test modules."""

from __future__ import annotations

import math
from fractions import Fraction

from vqdna.windows import WindowSettings


def expected_windows(sequences: dict[str, str], settings: WindowSettings) -> list[tuple[str, int, str]]:
    """(contig, start, split) of every window the settings imply, computed with exact fractions."""
    dev, test = Fraction(str(settings.dev_fraction)), Fraction(str(settings.test_fraction))
    max_n = Fraction(str(settings.max_n_fraction))
    expected = []
    for contig, sequence in sequences.items():
        length = len(sequence)
        train_end = math.floor(length * (1 - dev - test))
        dev_end = math.floor(length * (1 - test))
        regions = [("train", 0, train_end), ("dev", train_end, dev_end), ("test", dev_end, length)]
        for start in range(0, length, settings.step):
            end = start + settings.length
            inside = [split for split, a, b in regions if a <= start and end <= b]
            if not inside:
                continue
            n_count = sum(1 for base in sequence[start:end].upper() if base not in "ACGT")
            if Fraction(n_count, settings.length) <= max_n:
                expected.append((contig, start, inside[0]))
    return expected
