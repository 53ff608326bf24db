"""What a tokenizer's codes are worth, measured on held-out windows.

- reconstruction accuracy: decoded base == input base, N positions excluded;
- usage: fraction of the K codes that occur at least once;
- perplexity: exp of the entropy of the code distribution (K if uniform);
- neighbour probe: from a position's code alone, predict the base at offset d
  (d = -2, -1, +1, +2) with a lookup table fitted on training windows. Chance is
  about 25%; a code that only names its own base gets about 30% from
  dinucleotide statistics; codes that carry context get more.
"""

from __future__ import annotations

import numpy as np

N_ID = 4
PROBE_OFFSETS = (-2, -1, 1, 2)


def reconstruction_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    called = truth != N_ID
    return float((predicted[called] == truth[called]).mean()) if called.any() else float("nan")


def code_distribution(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    counts = np.bincount(codes.ravel().astype(np.int64), minlength=codebook_size)
    return counts / max(1, counts.sum())


def usage(codes: np.ndarray, codebook_size: int) -> float:
    return float((code_distribution(codes, codebook_size) > 0).mean())


def perplexity(codes: np.ndarray, codebook_size: int) -> float:
    return perplexity_of_counts(np.bincount(codes.ravel().astype(np.int64), minlength=codebook_size))


def perplexity_of_counts(counts: np.ndarray) -> float:
    """exp(entropy) of the distribution that occurrence counts imply; counts accumulate over a file streamed in parts."""
    p = counts[counts > 0] / max(1, counts.sum())
    return float(np.exp(-(p * np.log(p)).sum()))


def _pairs(codes: np.ndarray, bases: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(code at i, base at i + offset) for every i where both lie in the window and the base is called."""
    if offset > 0:
        c, b = codes[:, :-offset], bases[:, offset:]
    else:
        c, b = codes[:, -offset:], bases[:, :offset]
    keep = b != N_ID
    return c[keep].astype(np.int64), b[keep].astype(np.int64)


def neighbour_probe(
    train_codes: np.ndarray,
    train_bases: np.ndarray,
    test_codes: np.ndarray,
    test_bases: np.ndarray,
    codebook_size: int,
    offsets: tuple[int, ...] = PROBE_OFFSETS,
) -> dict[str, float]:
    """Accuracy of the best code -> neighbouring base lookup table, per offset and mean.

    Arrays are (windows, length). Codes unseen in training fall back to the
    most frequent base at that offset.
    """
    result = {}
    for offset in offsets:
        c, b = _pairs(train_codes, train_bases, offset)
        table = np.zeros((codebook_size, 4), dtype=np.int64)
        np.add.at(table, (c, b), 1)
        fallback = int(table.sum(0).argmax())
        prediction = np.where(table.sum(1) > 0, table.argmax(1), fallback)
        c, b = _pairs(test_codes, test_bases, offset)
        result[f"{offset:+d}"] = float((prediction[c] == b).mean())
    result["mean"] = float(np.mean([result[f"{d:+d}"] for d in offsets]))
    return result
