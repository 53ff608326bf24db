"""1D ConvNeXt encoder and decoder of the VQDNA tokenizer (paper section 3, Fig. 2).

One-hot A,C,G,T,N -> Conv1d stem (k=5) -> ConvNeXt blocks (depthwise k=7,
LayerNorm, 4x MLP, residual) at a fixed width. No downsampling: one hidden
vector, hence one code, per nucleotide. Tensors are channels-last, (B, L, C).
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

    def forward(self, onehot: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_norm(self.stem(onehot.transpose(1, 2)).transpose(1, 2))  # (B, L, W)
        hidden = []
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return hidden


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
