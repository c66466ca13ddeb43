"""MALUNet (Ruan et al., BIBM 2022): dilated gated attention, inverted external attention and attention bridges.

Written from ``architectures.md`` section 3: 177,943 parameters with 3 input channels and one output channel (177,799
with one input channel). Input height and width must be divisible by 32.

One deliberate difference from the official file: the network returns logits and LightSeg applies the sigmoid
(``output_activation: sigmoid`` in the card), which is the same function and lets training use the numerically safer
BCE-with-logits. The input is LightSeg's normalised intensity, not the official per-image min-max stretch to [0, 255].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (8, 16, 24, 32, 48, 64)
DILATIONS = (7, 5, 2, 1)  # one per channel quarter in DGA


def _group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(4, c)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DWSep(nn.Module):
    """Depthwise k x k (bias) -> GN(4) -> pointwise (bias)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin)
        self.norm = _group_norm(cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.norm(self.dw(x)))


class GAU(nn.Module):
    """Gated attention unit: GELU(DWSep3(sigmoid(DWSep3(x)) * GELU(DWSep5(x)))) + PW(x)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gate = DWSep(cin, cin, 3)
        self.value = DWSep(cin, cin, 5)
        self.out = DWSep(cin, cout, 3)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(gated)) + self.shortcut(x)


class DGA(nn.Module):
    """Dilated gated attention: four dilated depthwise 3x3 convs on channel quarters -> GN -> PW -> GELU -> GAU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        q = cin // 4
        self.quarters = nn.ModuleList(nn.Conv2d(q, q, 3, padding=d, dilation=d, groups=q) for d in DILATIONS)
        self.norm = _group_norm(cin)
        self.pw = nn.Conv2d(cin, cin, 1)
        self.gau = GAU(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(4, dim=1)
        y = torch.cat([conv(part) for conv, part in zip(self.quarters, parts)], 1)
        return self.gau(F.gelu(self.pw(self.norm(y))))


class IEA(nn.Module):
    """Inverted external attention with 4c memory units (spatial softmax, then normalised over the memory axis)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.pw_in = nn.Conv2d(c, c, 1)
        self.memory_keys = nn.Conv1d(c, 4 * c, 1, bias=False)
        self.memory_values = nn.Conv1d(4 * c, c, 1, bias=False)
        self.pw_out = nn.Conv2d(c, c, 1, bias=False)
        self.norm = _group_norm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.pw_in(x).flatten(2)
        attention = torch.softmax(self.memory_keys(y), dim=-1)
        attention = attention / (1e-9 + attention.sum(dim=1, keepdim=True))
        y = self.memory_values(attention).view(b, c, h, w)
        return F.gelu(self.norm(self.pw_out(y)) + x)


class AttentionBridge(nn.Module):
    """Spatial attention bridge (one 7x7 dilated conv shared by all levels) then channel attention bridge."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=9, dilation=3)
        self.channel_mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.channel_out = nn.ModuleList(nn.Linear(sum(widths), c) for c in widths)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        spatial = []
        for t in skips:
            pooled = torch.cat([t.mean(1, keepdim=True), t.amax(1, keepdim=True)], 1)
            spatial.append(torch.sigmoid(self.spatial(pooled)) * t)
        mixed = [s + t for s, t in zip(spatial, skips)]
        pooled = torch.cat([u.mean((2, 3)) for u in mixed], 1)[:, None]  # (B, 1, sum of widths)
        pooled = self.channel_mix(pooled)[:, 0]
        return [torch.sigmoid(linear(pooled))[:, :, None, None] * u + s
                for linear, u, s in zip(self.channel_out, mixed, spatial)]


class EncoderStage(nn.Module):
    """body -> GN -> MaxPool 2x2 -> GELU."""

    def __init__(self, body: nn.Module, cout: int) -> None:
        super().__init__()
        self.body = body
        self.norm = _group_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(F.max_pool2d(self.norm(self.body(x)), 2))


class DecoderStage(nn.Module):
    """body -> GN -> (bilinear x2) -> GELU."""

    def __init__(self, body: nn.Module, cout: int, upsample: bool) -> None:
        super().__init__()
        self.body = body
        self.norm = _group_norm(cout)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.body(x))
        return F.gelu(_up2(y) if self.upsample else y)


class MALUNet(nn.Module):
    """MALUNet. Returns a 1-tuple of logits (B, num_classes, H, W)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1) -> None:
        super().__init__()
        c = WIDTHS
        self.config = {"in_channels": in_channels, "num_classes": num_classes}
        self.encoder = nn.ModuleList([
            EncoderStage(nn.Conv2d(in_channels, c[0], 3, padding=1), c[0]),
            EncoderStage(nn.Conv2d(c[0], c[1], 3, padding=1), c[1]),
            EncoderStage(nn.Conv2d(c[1], c[2], 3, padding=1), c[2]),
            EncoderStage(nn.Sequential(IEA(c[2]), DGA(c[2], c[3])), c[3]),
            EncoderStage(nn.Sequential(IEA(c[3]), DGA(c[3], c[4])), c[4]),
        ])
        self.bridge = AttentionBridge(c[:5])
        self.bottom = nn.Sequential(IEA(c[4]), DGA(c[4], c[5]))
        self.decoder = nn.ModuleList([
            DecoderStage(nn.Sequential(DGA(c[5], c[4]), IEA(c[4])), c[4], upsample=False),
            DecoderStage(nn.Sequential(DGA(c[4], c[3]), IEA(c[3])), c[3], upsample=True),
            DecoderStage(nn.Sequential(DGA(c[3], c[2]), IEA(c[2])), c[2], upsample=True),
            DecoderStage(nn.Conv2d(c[2], c[1], 3, padding=1), c[1], upsample=True),
            DecoderStage(nn.Conv2d(c[1], c[0], 3, padding=1), c[0], upsample=True),
        ])
        self.head = nn.Conv2d(c[0], num_classes, 1)
        self.apply(_official_init)
        for module in self.modules():
            if isinstance(module, IEA):  # the official memory units start as transposes of each other
                module.memory_keys.weight.data.copy_(module.memory_values.weight.data.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"MALUNet needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips = self.bridge(skips)
        y = F.gelu(self.bottom(x))
        for stage, skip in zip(self.decoder, reversed(skips)):
            y = stage(y) + skip
        return (_up2(self.head(y)),)


def _official_init(module: nn.Module) -> None:
    """Linear: truncated normal 0.02; Conv1d: N(0, 2/(k*out)); Conv2d: N(0, 2/fan_out); biases 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
    elif isinstance(module, nn.Conv1d):
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / (module.kernel_size[0] * module.out_channels)))
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)
