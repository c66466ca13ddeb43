"""MiniSeg (Qiu et al., AAAI 2021): a two-path encoder with attentive hierarchical spatial pyramid (AHSP) blocks.

Written from ``architectures.md`` section 1. With ``aux=False`` it has 82,666 parameters (3 input channels, 2 classes),
82,912 with the three auxiliary deep-supervision heads used in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (8, 24, 32, 64)
MAIN_BLOCKS = (2, 3, 8, 6)
LONG_BLOCKS = tuple(n // 2 for n in MAIN_BLOCKS)


class ConvBlock(nn.Module):
    """3x3 conv (no bias) -> BN -> per-channel PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class LongBlock(nn.Module):
    """Long-path block: pointwise conv -> depthwise 5x5 (stride s) -> BN -> PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(cout, cout, 5, stride, 2, groups=cout, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.dw(self.pw(x))))


class AHSP(nn.Module):
    """Attentive hierarchical spatial pyramid: four dilated depthwise branches summed hierarchically and gated."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        if cout % 4:
            raise ValueError(f"AHSP output width must be divisible by 4, got {cout}")
        k = cout // 4
        self.k = k
        self.reduce = nn.Conv2d(cin, k, 1, bias=False)
        self.pool: nn.AvgPool2d | None = nn.AvgPool2d(3, stride, 1)  # None once merged into branch 1 (inference)
        self.branches = nn.ModuleList(
            nn.Conv2d(k, k, 3, stride, d, dilation=d, groups=k, bias=False) for d in (1, 2, 4, 8)
        )
        self.gate = nn.Conv2d(4 * k, 4, 1, groups=4, bias=False)
        self.fuse = nn.Conv2d(4 * k, cout, 1, groups=4, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """h1..h4: the pooled reduced input plus the dilated branches, summed hierarchically."""
        r = self.reduce(x)
        level = None if self.pool is None else self.pool(r)
        levels = []
        for branch in self.branches:
            out = branch(r)
            level = out if level is None else level + out
            levels.append(level)
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat(self.pyramid(x), 1)
        # h + h * attention, each level's gate broadcast over its k channels (no repeated copy of the gates)
        n, _, height, width = h.shape
        scale = 1 + torch.sigmoid(self.gate(h))
        h = (h.reshape(n, 4, self.k, height, width) * scale.unsqueeze(2)).reshape(h.shape)
        return self.act(self.norm(self.fuse(h)))


class UpBranch(nn.Module):
    """Decoder up-branch: pointwise conv, then the sum of two depthwise 3x3 convs (dilation 1 and 2), then BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw1 = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False)
        self.dw2 = nn.Conv2d(cout, cout, 3, 1, 2, dilation=2, groups=cout, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pw(x)
        return self.norm(self.dw1(p) + self.dw2(p))


class Fuse(nn.Module):
    """Cross-path fusion: 1x1 conv + BN over [long, main]; halves go back to the long and main paths."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * c, 2 * c, 1, bias=False)
        self.norm = nn.BatchNorm2d(2 * c)

    def forward(self, long: torch.Tensor, main: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        to_long, to_main = self.norm(self.conv(torch.cat([long, main], 1))).chunk(2, dim=1)
        return to_long + long, to_main + main


class EncoderLevel(nn.Module):
    """One encoder level: a strided entry on each path, then blocks that both read z = main + long."""

    def __init__(self, cin: int, cout: int, n_main: int, n_long: int, first: bool) -> None:
        super().__init__()
        main_block = ConvBlock if first else AHSP
        self.main_in = main_block(cin, cout, 2)
        self.main = nn.ModuleList(main_block(cout, cout, 1) for _ in range(n_main))
        self.long_in = LongBlock(cin, cout, 2)
        self.long = nn.ModuleList(LongBlock(cout, cout, 1) for _ in range(n_long))

    def forward(self, x_long: torch.Tensor, x_main: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        long = self.long_in(x_long)
        main = self.main_in(x_main)
        for j, block in enumerate(self.main):
            z = main + long
            main = block(z) + main
            if j < len(self.long):
                long = self.long[j](z) + long
        return long, main


class DecoderStage(nn.Module):
    """Upsampled deeper features through the up-branch plus a lateral 1x1 conv of the skip, then PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up_branch = UpBranch(cin, cout)
        self.lateral = nn.Conv2d(cout, cout, 1)
        self.lateral_norm = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, deeper_up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.act(self.up_branch(deeper_up) + self.lateral_norm(self.lateral(skip)))


class Head(nn.Module):
    """Dropout2d(0.01) then a 1x1 conv to class logits."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.drop = nn.Dropout2d(0.01)
        self.conv = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(x))


class DeepestStage(nn.Module):
    """1x1 conv (with bias) -> BN -> PReLU on the deepest main-path features."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)
        self.norm = nn.BatchNorm2d(c)
        self.act = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.proj(x)))


def encode_levels(levels: nn.ModuleList, fusions: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The two-path encoder: each level's main-path output, the paths fused between levels."""
    x_long = x_main = x
    mains = []
    for i, level in enumerate(levels):
        long, main = level(x_long, x_main)
        mains.append(main)
        if i < len(fusions):
            x_long, x_main = fusions[i](long, main)
    return mains


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MiniSeg(nn.Module):
    """MiniSeg. Returns a tuple of logits: (main,) in inference, (main, aux2, aux3, aux4) when ``aux``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, aux: bool = False) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "aux": aux}
        widths_in = (in_channels,) + WIDTHS[:-1]
        self.enc = nn.ModuleList(
            EncoderLevel(cin, cout, n, m, first=(i == 0))
            for i, (cin, cout, n, m) in enumerate(zip(widths_in, WIDTHS, MAIN_BLOCKS, LONG_BLOCKS))
        )
        self.fuse = nn.ModuleList(Fuse(c) for c in WIDTHS[:-1])
        self.dec4 = DeepestStage(WIDTHS[3])
        self.dec = nn.ModuleList(DecoderStage(WIDTHS[i + 1], WIDTHS[i]) for i in range(3))
        n_heads = 4 if aux else 1
        self.heads = nn.ModuleList(Head(WIDTHS[i], num_classes) for i in range(n_heads))
        self.aux = aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        mains = encode_levels(self.enc, self.fuse, x)
        deeper = self.dec4(mains[3])
        upsampled = {}
        for i in (2, 1, 0):
            up = _resize(deeper, mains[i].shape[-2:])
            upsampled[i + 1] = up
            deeper = self.dec[i](up, mains[i])
        outputs = [_resize(self.heads[0](deeper), size)]
        if self.aux:
            outputs += [_resize(self.heads[j](upsampled[j]), size) for j in (1, 2, 3)]
        return tuple(outputs)
