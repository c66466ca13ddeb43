"""PatternNet: which infection pixels are consolidation rather than ground-glass opacity.

Consolidation is denser than ground-glass and hides the vessels that ground-glass leaves visible, so the decision is
local. The 288 x 288 crop is folded into 16 channels at a quarter of its size (each 4 x 4 block of pixels, nothing
averaged away), where four 3x3 convolutions, three of them dilated, see about 70 crop pixels around each point. The
output stays at that quarter size: the engine maps it back onto the CT slice with the same affine as the infection
probability. About 2,600 parameters and a few per cent of MiniSeg's arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(channels_in: int, channels_out: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, padding=dilation, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class PatternNet(nn.Module):
    """(B,1,H,W) normalised crop (H and W multiples of 4) -> (B,1,H/4,W/4) consolidation logit, meaningful inside
    the infection only; ``full_size`` brings it back to (B,1,H,W)."""

    FOLD = 4

    def __init__(self, width: int = 8, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        layers = [_block(self.FOLD ** 2, width)] + [_block(width, width, d) for d in dilations]
        self.body = nn.Sequential(nn.PixelUnshuffle(self.FOLD), *layers)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def full_size(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
