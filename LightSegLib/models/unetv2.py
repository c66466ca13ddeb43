"""U-Net v2 (Peng, Sonka, Chen, arXiv 2311.17791): per-level attention, then SDI skip fusion and a small decoder.

Written from ``architectures.md`` section 4. Two encoders:

* ``encoder="pvtv2_b2"``: the paper's PVTv2-b2 (``pvtv2.py``); 25,145,036 parameters for 3 input channels and one
  class. Its ImageNet weights are not available offline, so LightSeg trains it from scratch.
* ``encoder="miniseg"``: MiniSeg's two-path encoder (widths 8/24/32/64 at 1/2 to 1/16 of the input), with an SDI head
  of ``head_channels`` channels, for a network that keeps the lightweight promise. The channel-attention hidden width
  is max(1, C // 16) so the 8-channel level has one.

Returns logits: (finest,) in inference and (finest, next finer) when ``aux`` (the paper's polyp-training deep
supervision), both upsampled to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .miniseg import WIDTHS as MINISEG_WIDTHS
from .miniseg import MiniSeg, encode_levels
from .pvtv2 import PVTv2B2


class ChannelAttention(nn.Module):
    """sigmoid(MLP(avg pool) + MLP(max pool)) with one shared two-layer 1x1 MLP (hidden C / 16)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        hidden = max(1, c // 16)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(hidden, c, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))


class SpatialAttention(nn.Module):
    """sigmoid(7x7 conv of [channel mean, channel max])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class LevelAdapter(nn.Module):
    """Channel then spatial attention on one encoder level, then 1x1 conv + BN down to the head width."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.channel = ChannelAttention(cin)
        self.spatial = SpatialAttention()
        self.reduce = nn.Conv2d(cin, c, 1, bias=False)
        self.norm = nn.BatchNorm2d(c)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = self.channel(f) * f
        f = self.spatial(f) * f
        return self.norm(self.reduce(f))


class SDI(nn.Module):
    """Semantics and detail infusion: every level resized to the anchor's size, smoothed, multiplied together."""

    def __init__(self, c: int, levels: int = 4) -> None:
        super().__init__()
        self.smooth = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(levels))

    def forward(self, features: list[torch.Tensor], anchor_side: int) -> torch.Tensor:
        product = None
        for conv, g in zip(self.smooth, features):
            side = g.shape[-1]
            if side > anchor_side:
                g = F.adaptive_avg_pool2d(g, anchor_side)
            elif side < anchor_side:
                g = F.interpolate(g, size=(anchor_side, anchor_side), mode="bilinear", align_corners=True)
            g = conv(g)
            product = g if product is None else product * g
        return product


class SDIHead(nn.Module):
    """Attention adapters, one SDI per level, three transposed-conv up steps and four 1x1 heads (finest first)."""

    def __init__(self, widths: tuple[int, ...], c: int, num_classes: int) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(LevelAdapter(w, c) for w in widths)
        self.sdi = nn.ModuleList(SDI(c, len(widths)) for _ in widths)
        # the official head builds a fourth transposed conv that it never uses; kept so the count matches the paper
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c, 4, 2, 1, bias=False) for _ in range(4))
        self.heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for _ in widths)

    def forward(self, features: list[torch.Tensor], outputs: int) -> list[torch.Tensor]:
        """Logits of the ``outputs`` finest decoder levels, finest first, each at its own resolution."""
        g = [adapter(f) for adapter, f in zip(self.adapters, features)]
        fused = [sdi(g, level.shape[-1]) for sdi, level in zip(self.sdi, g)]
        y = fused[-1]
        decoded = [y]
        for j, skip in enumerate(reversed(fused[:-1])):
            y = self.up[j](y) + skip
            decoded.append(y)
        # heads[0] reads the coarsest level, heads[-1] the finest
        n = len(decoded)
        return [self.heads[n - 1 - k](decoded[n - 1 - k]) for k in range(outputs)]


class MiniSegEncoder(nn.Module):
    """MiniSeg's encoder levels and cross-path fusions; returns the main-path features of the four levels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        donor = MiniSeg(in_channels=in_channels)
        self.enc, self.fuse = donor.enc, donor.fuse

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return encode_levels(self.enc, self.fuse, x)


ENCODERS = {
    # name -> (builder, widths, stride of the finest level)
    "pvtv2_b2": (PVTv2B2, PVTv2B2.WIDTHS, 4),
    "miniseg": (MiniSegEncoder, MINISEG_WIDTHS, 2),
}


class UNetV2(nn.Module):
    """U-Net v2 with a PVTv2-b2 (paper) or MiniSeg (lightweight) encoder. Input must be square, side divisible by 32."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, encoder: str = "pvtv2_b2",
                 head_channels: int = 32, aux: bool = False) -> None:
        super().__init__()
        builder, widths, self.stride = ENCODERS[encoder]
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "encoder": encoder,
                       "head_channels": head_channels, "aux": aux}
        self.encoder = builder(in_channels)
        self.head = SDIHead(widths, head_channels, num_classes)
        self.aux = aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = x.shape[-2:]
        if height != width or width % 32:
            raise ValueError(f"U-Net v2 needs a square input with side divisible by 32, got {(height, width)}")
        logits = self.head(self.encoder(x), outputs=2 if self.aux else 1)
        # the official head upsamples each output x4 (ac=False); LightSeg goes straight to the input size
        return tuple(F.interpolate(o, size=(height, width), mode="bilinear", align_corners=False) for o in logits)
