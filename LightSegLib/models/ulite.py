"""U-Lite (Dinh et al., APSIPA ASC 2023): a U-Net of axial depthwise convolutions.

Written from ``architectures.md`` section 2: 878,417 parameters with 3 input channels, one logit output.
Input height and width must be divisible by 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (16, 32, 64, 128, 256, 512)


class AxialDW(nn.Module):
    """x + depthwise (k x 1)(x) + depthwise (1 x k)(x), 'same' padding, optional dilation."""

    def __init__(self, c: int, k: int, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (k - 1) // 2
        self.vertical = nn.Conv2d(c, c, (k, 1), padding=(pad, 0), dilation=dilation, groups=c)
        self.horizontal = nn.Conv2d(c, c, (1, k), padding=(0, pad), dilation=dilation, groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.vertical(x) + self.horizontal(x)


class EncoderBlock(nn.Module):
    """skip = BN(AxialDW(x)); out = GELU(MaxPool(PW(skip)))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.axial = AxialDW(cin, 7)
        self.norm = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.norm(self.axial(x))
        return self.act(self.pool(self.pw(skip))), skip


class Bottleneck(nn.Module):
    """Squeeze to c/4, concatenate with three dilated axial versions, BN, PW, GELU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        q = c // 4
        self.squeeze = nn.Conv2d(c, q, 1)
        self.dilated = nn.ModuleList(AxialDW(q, 3, d) for d in (1, 2, 3))
        self.norm = nn.BatchNorm2d(4 * q)
        self.pw = nn.Conv2d(4 * q, c, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.squeeze(x)
        y = torch.cat([r] + [branch(r) for branch in self.dilated], 1)
        return self.act(self.pw(self.norm(y)))


class DecoderBlock(nn.Module):
    """Nearest x2 upsample, concat [up, skip], PW -> BN -> AxialDW -> PW -> GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pw_in = nn.Conv2d(cin + cout, cout, 1)
        self.norm = nn.BatchNorm2d(cout)
        self.axial = AxialDW(cout, 7)
        self.pw_out = nn.Conv2d(cout, cout, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        y = self.axial(self.norm(self.pw_in(torch.cat([up, skip], 1))))
        return self.act(self.pw_out(y))


class ULite(nn.Module):
    """U-Lite. Returns a 1-tuple of logits (B, num_classes, H, W); one class means a sigmoid output."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes}
        self.stem = nn.Conv2d(in_channels, WIDTHS[0], 7, padding=3)
        self.enc = nn.ModuleList(EncoderBlock(WIDTHS[i], WIDTHS[i + 1]) for i in range(5))
        self.bottleneck = Bottleneck(WIDTHS[5])
        self.dec = nn.ModuleList(DecoderBlock(WIDTHS[i + 1], WIDTHS[i]) for i in reversed(range(5)))
        self.head = nn.Conv2d(WIDTHS[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"U-Lite needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        y = self.stem(x)
        skips = []
        for block in self.enc:
            y, skip = block(y)
            skips.append(skip)
        y = self.bottleneck(y)
        for block, skip in zip(self.dec, reversed(skips)):
            y = block(y, skip)
        return (self.head(y),)
