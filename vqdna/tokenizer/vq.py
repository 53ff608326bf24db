"""VQ-VAE tokenizer: ConvNeXt encoder, EMA codebook, straight-through estimator, decoder (eqs. 1-5).

The codebook is written by hand rather than taken from vector-quantize-pytorch
because of two properties its ``Codebook`` lacks (checked against version
1.32.0): (1) dead-code restarts are gradual (a few codes per step, drawn where
the quantization error is largest), where the library replaces every code under
its EMA-count threshold at once with uniformly drawn encoder outputs, and usage
swings with such bulk restarts; (2) restart candidates are drawn from encoder
outputs gathered across ranks with a generator keyed by (seed, step), so every
DDP rank holds the same codebook, a resumed run draws what an uninterrupted one
would, and a 2-rank run equals a 1-process run on the same global batch; the
library draws from torch's global random state. Searching the nearest code in
fp32 under bf16 autocast (eq. 1 ties flip in bf16) is no longer a reason: the
library's ``Codebook.forward`` turns CUDA autocast off and casts to fp32, as
``nearest_code`` does here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqdna import VqdnaError
from vqdna.distributed import all_gather_cat, all_reduce_sum
from vqdna.tokenizer.convnext import NUM_BASES, ConvNeXtDecoder, ConvNeXtEncoder, PatchExpand, PatchMerge


@dataclass
class VQConfig:
    """Architecture of a VQ-VAE tokenizer. Defaults are the paper's sizes."""

    type: str = "vq"
    codebook_size: int = 512  # K
    width: int = 384
    depth: int = 6
    code_dim: int | None = None  # None: the width (Table 7b sweeps 256-1024 with projections)
    stem_kernel: int = 5
    kernel_size: int = 7
    mlp_ratio: int = 4
    beta: float = 0.5  # eq. 4 commitment weight
    ema_decay: float = 0.99  # eq. 5; not published, 0.99 as in VQ-VAE-2 / Jukebox
    ema_eps: float = 1e-5  # Laplace smoothing of cluster sizes
    # A code is dead when its EMA count falls below this fraction of the mean count per code,
    # or when no encoder output (on any rank) has chosen it for this many steps.
    dead_code_threshold: float = 0.03
    dead_code_patience: int = 50
    # At most this fraction of K is restarted per step: gradual, so usage does not swing.
    restart_fraction: float = 0.005
    seed: int = 0  # keys the restart draws (with the step)
    # Nucleotides per code. 1 is the paper's tokenizer. s > 1 (beyond the paper) merges s positions into one code
    # after the encoder blocks, dividing the BERT encoder's sequence length by s; a sequence's tail is padded to a
    # multiple of s, so any length encodes to ceil(L / s) codes.
    stride: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.stride, int) or self.stride < 1:
            raise VqdnaError(f"{self.type}: stride {self.stride!r} must be a whole number >= 1 (nucleotides per code)")

    @property
    def dim(self) -> int:
        return self.code_dim or self.width

    @property
    def level_sizes(self) -> list[int]:
        return [self.codebook_size]


def nearest_code(z: torch.Tensor, embed: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1: M_i = argmin_k ||Z_i - e(k)||_2, in fp32. z (N, D), embed (K, D) -> (indices (N,), sq. distance (N,)).

    Rows go in chunks so the (N, K) distance matrix stays small at paper batch sizes.
    """
    indices, distances = [], []
    with torch.autocast(device_type=z.device.type, enabled=False):
        embed = embed.float()
        embed_sq = embed.pow(2).sum(1)
        for part in z.float().split(chunk):
            distance = part.pow(2).sum(1, keepdim=True) - 2 * part @ embed.t() + embed_sq[None, :]
            best, index = distance.min(dim=1)
            indices.append(index)
            distances.append(best.clamp_min(0))
    return torch.cat(indices), torch.cat(distances)


class EMACodebook(nn.Module):
    """K code vectors e(k) learned by exponential moving averages (eq. 5) instead of L_code."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.03,
        dead_code_patience: int = 50,
        restart_fraction: float = 0.005,
        seed: int = 0,
    ):
        super().__init__()
        self.codebook_size, self.dim = codebook_size, dim
        self.decay, self.eps = decay, eps
        self.dead_code_threshold, self.dead_code_patience = dead_code_threshold, dead_code_patience
        self.restart_fraction, self.seed = restart_fraction, seed
        self.restarts_enabled = True
        self.register_buffer("embed", torch.randn(codebook_size, dim))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        # Steps since any encoder output chose each code: the EMA count of a code that was popular
        # early decays too slowly to flag it within a short run, this does not.
        self.register_buffer("unused_steps", torch.zeros(codebook_size, dtype=torch.long))
        self.last_restarts = 0

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Eq. 2: Z~ = e(M)."""
        return F.embedding(indices, self.embed)

    def _generator(self) -> torch.Generator:
        # Keyed by (seed, step): identical on every rank and after a resume, no state to carry.
        key = np.random.SeedSequence([self.seed, int(self.step)]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(key))

    @torch.no_grad()
    def _initialize(self, z: torch.Tensor) -> None:
        """Data-dependent init: K distinct encoder outputs drawn from the (gathered) first batch.

        Drawn without replacement where the batch allows: a duplicated code loses
        every tie to its twin and would be dead from the first step.
        """
        candidates = all_gather_cat(z)
        if len(candidates) >= self.codebook_size:
            pick = torch.randperm(len(candidates), generator=self._generator())[: self.codebook_size]
        else:
            pick = torch.randint(len(candidates), (self.codebook_size,), generator=self._generator())
        pick = pick.to(z.device)
        self.embed.copy_(candidates[pick])
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Eq. 5 with Laplace smoothing; counts and sums are all-reduced so ranks agree."""
        counts = all_reduce_sum(torch.bincount(indices, minlength=self.codebook_size).to(z.dtype))  # (K,)
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        sums = all_reduce_sum(torch.zeros_like(self.embed_avg).index_add_(0, indices, z))  # (K, D)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor, distance: torch.Tensor) -> int:
        """Move up to ``restart_fraction * K`` dead codes onto poorly quantized encoder outputs.

        Candidates are drawn with probability proportional to their squared
        quantization error (as k-means++ seeds), so restarted codes split the
        clusters that reconstruct worst instead of landing where codes already are.
        """
        mean_count = self.cluster_size.sum() / self.codebook_size
        rare = self.cluster_size < self.dead_code_threshold * mean_count
        dead = torch.nonzero(rare | (self.unused_steps >= self.dead_code_patience)).flatten()
        budget = max(1, math.ceil(self.restart_fraction * self.codebook_size))
        if len(dead) == 0:
            return 0
        generator = self._generator()
        candidates, weights = all_gather_cat(z), all_gather_cat(distance)
        budget = min(budget, len(candidates))
        dead = dead[torch.randperm(len(dead), generator=generator)[:budget].to(dead.device)]
        pick = torch.multinomial(weights.cpu().double() + 1e-12, len(dead), replacement=False, generator=generator)
        pick = pick.to(z.device)
        self.embed[dead] = candidates[pick]
        self.cluster_size[dead] = self.dead_code_threshold * mean_count * 2
        self.embed_avg[dead] = self.embed[dead] * self.cluster_size[dead, None]
        self.unused_steps[dead] = 0
        return len(dead)

    def forward(self, z: torch.Tensor, update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, L, D) -> (e(M) with straight-through gradients (B, L, D), codes M (B, L)).

        In training mode (and with ``update``) the codebook also takes one EMA
        step (eq. 5) and may restart a few dead codes.
        """
        flat = z.reshape(-1, self.dim)
        update = update and self.training
        if update and not bool(self.initialized):
            self._initialize(flat.detach().float())
        indices, distance = nearest_code(flat.detach(), self.embed)  # eq. 1
        quantized = self.lookup(indices).view_as(z).to(z.dtype)  # eq. 2
        if update:
            self._ema_update(flat.detach().float(), indices)
            self.last_restarts = (
                self._restart_dead_codes(flat.detach().float(), distance) if self.restarts_enabled else 0
            )
            self.step += 1
        quantized = z + (quantized - z).detach()  # straight-through estimator: dL/dZ := dL/dZ~
        return quantized, indices.view(z.shape[:-1])


@dataclass
class Quantized:
    embedding: torch.Tensor  # the tokenizer embedding the decoder reads, straight-through (B, L, D)
    codes: list[torch.Tensor]  # per level, (B, L)
    commitment: torch.Tensor  # the beta-weighted term of the loss, before beta
    partial_embeddings: list[torch.Tensor]  # per level n, the embedding after n levels (no gradient)


@dataclass
class TokenizerOutput:
    logits: torch.Tensor  # (B, L, 5) reconstruction X^
    codes: list[torch.Tensor]  # per level, (B, L)
    loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None


class VQVAE(nn.Module):
    """X -> Z = E(X) -> M (eq. 1) -> Z~ = e(M) (eq. 2) -> X^ = G(Z~) (eq. 3); loss eq. 4.

    One level of codes, read after the encoder's last block. :class:`~vqdna.tokenizer.hrq.HRQ`
    reuses everything here but :meth:`quantize`.
    """

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = ConvNeXtEncoder(c.width, c.depth, stem_kernel=c.stem_kernel, kernel_size=c.kernel_size, mlp_ratio=c.mlp_ratio)
        # stride s > 1: each level merges s positions into one before its code search; Identity (no weights) at s = 1.
        self.downsample = nn.ModuleList(PatchMerge(c.width, c.stride) if c.stride > 1 else nn.Identity() for _ in c.level_sizes)
        # Linear maps into and out of the code space when code dim != width (Table 7b).
        self.to_code = nn.ModuleList(
            nn.Linear(c.width, c.dim) if c.dim != c.width else nn.Identity() for _ in c.level_sizes
        )
        self.codebooks = nn.ModuleList(
            EMACodebook(
                size,
                c.dim,
                decay=c.ema_decay,
                eps=c.ema_eps,
                dead_code_threshold=c.dead_code_threshold,
                dead_code_patience=c.dead_code_patience,
                restart_fraction=c.restart_fraction,
                seed=c.seed + level,
            )
            for level, size in enumerate(c.level_sizes)
        )
        self.from_code = nn.Linear(c.dim, c.width) if c.dim != c.width else nn.Identity()
        self.upsample = PatchExpand(c.width, c.stride) if c.stride > 1 else nn.Identity()
        self.decoder = ConvNeXtDecoder(c.width, c.depth, kernel_size=c.kernel_size, mlp_ratio=c.mlp_ratio)

    def quantize(self, hidden: list[torch.Tensor], update: bool = True) -> Quantized:
        z = self.to_code[0](self.downsample[0](hidden[-1]))  # Z = E(X), (B, L / s, D)
        z_q, codes = self.codebooks[0](z, update)  # eqs. 1-2, straight-through
        commitment = F.mse_loss(z, z_q.detach())  # eq. 4: ||Z - sg[Z~]||^2 (mean over elements)
        return Quantized(z_q, [codes], commitment, [z_q.detach()])

    def pad_to_stride(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, 5) -> zeros after the last base up to a multiple of the stride, and the mask (B, L', 1) of real positions.

        All-zero one-hot rows are what the stem's own zero padding feeds it; the encoder holds
        the padded positions at zero after every layer, so only the last code sees the padding.
        """
        length = onehot.shape[1]
        tail = -length % self.config.stride
        if tail == 0:
            return onehot, None
        mask = torch.arange(length + tail, device=onehot.device) < length
        return F.pad(onehot, (0, 0, 0, tail)), mask[None, :, None]

    def reconstruct(self, embedding: torch.Tensor) -> torch.Tensor:
        """Eq. 3: X^ = G(Z~), (B, L / s, D) -> logits (B, L, 5); at s > 1 each code expands back into s positions first."""
        return self.decoder(self.upsample(self.from_code(embedding)))

    def forward(self, onehot: torch.Tensor, targets: torch.Tensor | None = None) -> TokenizerOutput:
        length = onehot.shape[1]
        padded, mask = self.pad_to_stride(onehot)
        q = self.quantize(self.encoder(padded, mask))
        logits = self.reconstruct(q.embedding)[:, :length]  # eq. 3; the padded tail is not scored
        if targets is None:
            return TokenizerOutput(logits, q.codes)
        reconstruction = F.cross_entropy(logits.reshape(-1, NUM_BASES), targets.reshape(-1))
        loss = reconstruction + self.config.beta * q.commitment  # eq. 4 (eq. 11); code term replaced by EMA
        return TokenizerOutput(logits, q.codes, loss, reconstruction, q.commitment)

    @torch.no_grad()
    def encode(self, onehot: torch.Tensor) -> list[torch.Tensor]:
        """Codes per level, each (B, ceil(L / s)). Never updates the codebooks."""
        padded, mask = self.pad_to_stride(onehot)
        return self.quantize(self.encoder(padded, mask), update=False).codes

    @torch.no_grad()
    def embed(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The tokenizer embedding of codes, (B, L, D): e(M) (eq. 2); HRQ: the mean over levels (eq. 10)."""
        return torch.stack([cb.lookup(c) for cb, c in zip(self.codebooks, codes, strict=True)]).mean(0)

    @torch.no_grad()
    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Logits over A,C,G,T,N, (B, L * s, 5): s positions per code; the caller cuts a padded tail."""
        return self.reconstruct(self.embed(codes))

    @torch.no_grad()
    def decode_levels(self, onehot: torch.Tensor) -> list[torch.Tensor]:
        """Per level n, the logits decoded from the embedding after n levels (per-level reconstruction)."""
        length = onehot.shape[1]
        padded, mask = self.pad_to_stride(onehot)
        q = self.quantize(self.encoder(padded, mask), update=False)
        return [self.reconstruct(e)[:, :length] for e in q.partial_embeddings]
