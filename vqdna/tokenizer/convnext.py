"""1D ConvNeXt encoder and decoder of the VQDNA tokenizer (paper section 3, Fig. 2).

One-hot A,C,G,T,N -> Conv1d stem (k=5) -> ConvNeXt blocks (depthwise k=7,
LayerNorm, 4x MLP, residual) at a fixed width. The blocks never downsample: one
hidden vector per nucleotide. The paper quantizes those, one code per
nucleotide; a tokenizer with ``stride`` s > 1 (beyond the paper) merges each s
consecutive vectors into one before quantizing (:class:`PatchMerge`) and the
decoder expands each code back into s (:class:`PatchExpand`). Tensors are
channels-last, (B, L, C).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_BASES = 5  # A, C, G, T, N


class ConvNeXtBlock(nn.Module):
    def __init__(self, width: int, kernel_size: int = 7, mlp_ratio: int = 4, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        # ConvNeXt's layer scale: each block starts close to the identity, so deep stacks train stably.
        self.gamma = nn.Parameter(torch.full((width,), layer_scale_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, C)
        y = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        return x + self.gamma * y


class ConvNeXtEncoder(nn.Module):
    """E_theta: one-hot (B, L, 5) -> hidden states after each block, each (B, L, width)."""

    def __init__(self, width: int, depth: int, *, stem_kernel: int = 5, kernel_size: int = 7, mlp_ratio: int = 4):
        super().__init__()
        self.stem = nn.Conv1d(NUM_BASES, width, stem_kernel, padding=stem_kernel // 2)
        self.stem_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(ConvNeXtBlock(width, kernel_size, mlp_ratio) for _ in range(depth))

    def forward(self, onehot: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``mask`` (B, L, 1) bool, False on tail padding: padded positions are held at zero after every layer,
        as a convolution's own zero padding is, so real positions see exactly what they would unpadded."""
        x = self.stem_norm(self.stem(onehot.transpose(1, 2)).transpose(1, 2))  # (B, L, W)
        x = x if mask is None else x * mask
        hidden = []
        for block in self.blocks:
            x = block(x)
            x = x if mask is None else x * mask
            hidden.append(x)
        return hidden


class PatchMerge(nn.Module):
    """Downsampling by ``stride`` s: s consecutive vectors -> LayerNorm -> Linear -> one (Swin's patch merging, in 1D).

    (B, L, W) -> (B, L / s, W); L must be a multiple of s (the tokenizer pads the tail).
    """

    def __init__(self, width: int, stride: int):
        super().__init__()
        self.stride = stride
        self.norm = nn.LayerNorm(stride * width)
        self.reduction = nn.Linear(stride * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return self.reduction(self.norm(x.reshape(batch, length // self.stride, self.stride * width)))


class PatchExpand(nn.Module):
    """Upsampling by ``stride`` s: one vector -> Linear -> s vectors, one per nucleotide. (B, L, W) -> (B, L * s, W)."""

    def __init__(self, width: int, stride: int):
        super().__init__()
        self.stride = stride
        self.expansion = nn.Linear(width, stride * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return self.expansion(x).reshape(batch, length * self.stride, width)


class ConvNeXtDecoder(nn.Module):
    """G_phi: quantized embedding (B, L, width) -> logits over A,C,G,T,N (B, L, 5)."""

    def __init__(self, width: int, depth: int, *, kernel_size: int = 7, mlp_ratio: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(ConvNeXtBlock(width, kernel_size, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, NUM_BASES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
