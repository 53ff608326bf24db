"""Hierarchical Residual Quantization (HRQ, eqs. 6-11): one codebook per encoder tap, coarse to fine.

Level n quantizes H^(n), built from the encoder's hidden state Z^(n) at its tap
(after blocks 3 and 6 by default) and the previous level's code vector:

    H^(1) = Z^(1);   H^(n) = 2 Z^(n) - e(M^(n-1))   for n >= 2        (eq. 8)
    M^(n) = argmin_k ||H^(n) - e_n(k)||;   H^^(n) = e_n(M^(n))         (eqs. 6-7)
    Z^ = (1/N) sum_n H^^(n)                                           (eqs. 9-10)
    L_HRQ = CE(X, G(Z^)) + beta sum_n ||Z^(n) - sg[Z^^(n)]||^2         (eq. 11)

where Z^^(n) is the mean of H^^(1..n), "the embedding after n levels"; since
H^^(n) ~ 2 Z^(n) - H^^(n-1), Z^^(2) ~ Z^(2): each level's target is its own
hidden state. The encoder stack is not quantized in between: taps only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vqdna import VqdnaError
from vqdna.tokenizer.vq import VQVAE, Quantized, VQConfig


@dataclass
class HRQConfig(VQConfig):
    """HRQ architecture. Level n (from 1) has 2^n * ``codebook_size`` codes unless ``codebook_sizes`` lists them.

    The paper's Table 7a sweeps a "code size" of 128-1024 without saying whether
    it is the base K or the total over levels. Here ``codebook_size`` is the base
    K (paper default K = 512 gives levels of 1024 and 2048 codes); to read it as
    a total, list the sizes, e.g. ``codebook_sizes: [170, 342]`` for 512.
    """

    type: str = "hrq"
    taps: list[int] = field(default_factory=lambda: [3, 6])  # encoder blocks (1-based) read by each level
    codebook_sizes: list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        increasing = all(a < b for a, b in zip(self.taps, self.taps[1:]))
        if not self.taps or not increasing or not all(1 <= t <= self.depth for t in self.taps):
            raise VqdnaError(f"hrq: taps {self.taps} must be increasing block numbers in 1..{self.depth}")
        if self.codebook_sizes is not None and len(self.codebook_sizes) != len(self.taps):
            raise VqdnaError(f"hrq: {len(self.codebook_sizes)} codebook_sizes for {len(self.taps)} taps")

    @property
    def level_sizes(self) -> list[int]:
        if self.codebook_sizes is not None:
            return list(self.codebook_sizes)
        return [2**n * self.codebook_size for n in range(1, len(self.taps) + 1)]


class HRQ(VQVAE):
    """A VQ-VAE whose quantizer is a hierarchy of codebooks read at several encoder depths."""

    config: HRQConfig

    def quantize(self, hidden: list[torch.Tensor], update: bool = True) -> Quantized:
        # Z^(n), (B, L / s, D); one stride for all levels, so eq. 10 averages them position by position
        z = [to_code(down(hidden[tap - 1])) for to_code, down, tap in zip(self.to_code, self.downsample, self.config.taps)]
        quantized, levels, codes = [], [], []
        for n, codebook in enumerate(self.codebooks):
            h = z[0] if n == 0 else 2 * z[n] - levels[-1]  # eq. 8; e(M^(n-1)) carries no gradient
            h_q, m = codebook(h, update)  # eqs. 6-7, straight-through
            quantized.append(h_q)
            levels.append(h_q.detach())
            codes.append(m)
        embedding = torch.stack(quantized).mean(0)  # eqs. 9-10: Z^ = (1/N) sum_n H^^(n)
        counts = torch.arange(1, len(levels) + 1, device=embedding.device, dtype=embedding.dtype)
        partial = torch.stack(levels).cumsum(0) / counts[:, None, None, None]  # Z^^(n) = mean of H^^(1..n)
        commitment = sum(F.mse_loss(z[n], partial[n]) for n in range(len(levels)))  # eq. 11's beta term
        return Quantized(embedding, codes, commitment, list(partial))
