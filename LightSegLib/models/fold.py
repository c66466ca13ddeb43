"""Inference-time BatchNorm folding: each BN that follows a convolution becomes part of that convolution.

BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta is affine per channel, so for y = conv(x) it folds into the
convolution's weight and bias. For MiniSeg's decoder up-branch, BN follows a sum of two convolutions of the same
input, which folds into both (the shift goes into one of them). U-Lite's encoder BN follows an AxialDW
(x + conv_v(x) + conv_h(x)), whose identity term is folded as an extra centre tap of the vertical convolution; its
bottleneck BN comes before a 1x1 convolution and folds forward into it.
The folded model computes the same function up to float rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .miniseg import AHSP, ConvBlock, DecoderStage, DeepestStage, Fuse, LongBlock, MiniSeg, UpBranch
from .ulite import Bottleneck, DecoderBlock, EncoderBlock, ULite


# Blocks whose BatchNorm directly follows one convolution: block type -> (convolution attribute, norm attribute)
CONV_THEN_NORM: dict[type, tuple[str, str]] = {
    ConvBlock: ("conv", "norm"), LongBlock: ("dw", "norm"), AHSP: ("fuse", "norm"), Fuse: ("conv", "norm"),
    DeepestStage: ("proj", "norm"), DecoderStage: ("lateral", "lateral_norm"), DecoderBlock: ("pw_in", "norm"),
}


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold_into(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
    """conv <- scale * conv + shift (per output channel)."""
    conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias.data * scale if conv.bias is not None else torch.zeros_like(scale)
    if shift is not None:
        bias = bias + shift
    conv.bias = nn.Parameter(bias)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm folded away (replaced by Identity)."""
    model = copy.deepcopy(model).eval()
    if not isinstance(model, (MiniSeg, ULite)):
        return model
    for module in model.modules():
        pair = CONV_THEN_NORM.get(type(module))
        if pair is not None:
            conv_name, norm_name = pair
            _fold_into(getattr(module, conv_name), *_bn_scale_shift(getattr(module, norm_name)))
            setattr(module, norm_name, nn.Identity())
        elif isinstance(module, UpBranch):
            scale, shift = _bn_scale_shift(module.norm)
            _fold_into(module.dw1, scale, shift)
            _fold_into(module.dw2, scale, None)
            module.norm = nn.Identity()
        elif isinstance(module, EncoderBlock):
            _fold_axial(module)
        elif isinstance(module, Bottleneck):
            _fold_before(module.pw, *_bn_scale_shift(module.norm))
            module.norm = nn.Identity()
    return model


def _fold_before(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """conv(scale * x + shift) for a 1x1 convolution: scale its input columns, move the shift into its bias."""
    weight = conv.weight.data  # (out, in, 1, 1)
    bias = conv.bias.data if conv.bias is not None else torch.zeros(weight.shape[0])
    conv.bias = nn.Parameter(bias + weight[:, :, 0, 0] @ shift)
    weight.mul_(scale.view(1, -1, 1, 1))


def _fold_axial(block: EncoderBlock) -> None:
    """BN(x + v(x) + h(x)): fold the identity into v's centre tap, then BN into both convolutions."""
    axial, scale, shift = block.axial, *_bn_scale_shift(block.norm)
    vertical, horizontal = axial.vertical, axial.horizontal
    centre = vertical.weight.shape[2] // 2
    vertical.weight.data[:, 0, centre, 0] += 1.0  # depthwise: one input channel per output channel
    _fold_into(vertical, scale, shift)
    _fold_into(horizontal, scale, None)
    block.axial = _NoIdentityAxial(vertical, horizontal)
    block.norm = nn.Identity()


class _NoIdentityAxial(nn.Module):
    """v(x) + h(x), the identity having been folded into v."""

    def __init__(self, vertical: nn.Conv2d, horizontal: nn.Conv2d) -> None:
        super().__init__()
        self.vertical, self.horizontal = vertical, horizontal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vertical(x) + self.horizontal(x)
