"""PVTv2-b2 (Wang et al., 2022), the U-Net v2 paper's encoder, written from ``architectures.md`` section 4.1.

24,849,856 parameters with 3 input channels. Returns the four stage outputs at 1/4, 1/8, 1/16 and 1/32 of the input.
Without its ImageNet weights (not available offline) it starts from the official random initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DIMS = (64, 128, 320, 512)
HEADS = (1, 2, 5, 8)
MLP_RATIOS = (8, 8, 4, 4)
DEPTHS = (3, 4, 6, 3)
SR_RATIOS = (8, 4, 2, 1)
DROP_PATH = 0.1


class PatchEmbed(nn.Module):
    """Overlapping patch embedding: strided conv, then tokens, then LayerNorm (eps 1e-5)."""

    def __init__(self, cin: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a token map shrunk by a strided conv (SR ratio)."""

    def __init__(self, dim: int, heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
        source = x
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, d, h, w)
            source = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        k, v = self.kv(source).view(b, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head dim) = 64^-0.5 at every stage
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 on the token map -> GELU -> Linear."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        hidden = dim * ratio
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.fc1(x)
        b, n, c = y.shape
        y = self.dw(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(y))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6): attention and Mix-FFN residuals."""

    def __init__(self, dim: int, heads: int, ratio: int, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class Stage(nn.Module):
    def __init__(self, cin: int, index: int, drop_paths: list[float]) -> None:
        super().__init__()
        dim = DIMS[index]
        self.embed = PatchEmbed(cin, dim, 7 if index == 0 else 3, 4 if index == 0 else 2)
        self.blocks = nn.ModuleList(Block(dim, HEADS[index], MLP_RATIOS[index], SR_RATIOS[index], p)
                                    for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, h, w = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        return self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, h, w)


class PVTv2B2(nn.Module):
    WIDTHS = DIMS

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        rates = torch.linspace(0, DROP_PATH, sum(DEPTHS)).tolist()
        starts = [sum(DEPTHS[:i]) for i in range(4)]
        cins = (in_channels,) + DIMS[:-1]
        self.stages = nn.ModuleList(Stage(cins[i], i, rates[starts[i]:starts[i] + DEPTHS[i]]) for i in range(4))
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _init(module: nn.Module) -> None:
    """Linear: truncated normal 0.02, bias 0; LayerNorm 1/0; Conv: N(0, 2/fan_out), bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
