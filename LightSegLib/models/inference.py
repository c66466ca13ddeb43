"""The form of a trained network that the engine runs: BatchNorm folded, and MiniSeg's linear steps merged.

After BatchNorm folding (``fold.py``), three more rewrites of MiniSeg compute the same function with fewer passes
over memory (about 17 % faster on the 2-core CPU, measured with ``benchmarks/bench_inference.py``):
1. AHSP: the 3x3 average pool (zero padding counted, so a depthwise convolution with weights 1/9) is added into the
   first, undilated branch;
2. decoder up-branch: the depthwise 3x3 convolutions with dilation 1 and 2 of the same input, summed, are one
   depthwise 5x5 convolution (the dilated taps on the even positions);
3. decoder: the up-branch's 1x1 convolution (no bias) commutes with bilinear upsampling, both being linear: it
   runs before the upsampling, on four times fewer pixels, and fewer channels are upsampled.
"""

from __future__ import annotations

import torch
from torch import nn

from .fold import fold_batchnorm
from .miniseg import AHSP, MiniSeg, _resize, encode_levels


def merge_pool(block: AHSP) -> None:
    """Add a folded AHSP's 3x3 average pool (zero padding counted) into its first branch, which has the same kernel
    size, stride and padding; the block then has no pool."""
    pool = block.pool
    if (pool.kernel_size, pool.padding, pool.count_include_pad, pool.ceil_mode) != (3, 1, True, False):
        raise ValueError("AHSP pool must be 3x3, padding 1, counting the padding")
    block.branches[0].weight.data += 1.0 / 9.0
    block.pool = None


def _merged_depthwise(dw1: nn.Conv2d, dw2: nn.Conv2d) -> nn.Conv2d:
    """dw1(x) + dw2(x) for depthwise 3x3 convolutions with dilation 1 and 2, as one depthwise 5x5 convolution."""
    channels = dw1.out_channels
    merged = nn.Conv2d(channels, channels, 5, 1, 2, groups=channels, bias=True)
    with torch.no_grad():
        weight = torch.zeros_like(merged.weight)
        weight[:, :, 1:4, 1:4] += dw1.weight
        weight[:, :, ::2, ::2] += dw2.weight
        merged.weight.copy_(weight)
        merged.bias.copy_(dw1.bias + dw2.bias)
    return merged


class InferenceDecoderStage(nn.Module):
    """act(dw5(upsample(pw(deeper))) + lateral(skip)): a folded decoder stage with the 1x1 convolution moved first."""

    def __init__(self, stage: nn.Module) -> None:
        super().__init__()
        self.pw = stage.up_branch.pw
        self.dw = _merged_depthwise(stage.up_branch.dw1, stage.up_branch.dw2)
        self.lateral, self.act = stage.lateral, stage.act

    def forward(self, deeper: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = _resize(self.pw(deeper), skip.shape[-2:])
        return self.act(self.dw(up) + self.lateral(skip))


class InferenceMiniSeg(nn.Module):
    """A trained MiniSeg rewritten for inference; returns ``(logits,)`` like ``MiniSeg`` with ``aux=False``."""

    def __init__(self, model: MiniSeg) -> None:
        super().__init__()
        folded = fold_batchnorm(model)
        for block in folded.enc.modules():
            if isinstance(block, AHSP):
                merge_pool(block)
        self.enc, self.fuse, self.dec4 = folded.enc, folded.fuse, folded.dec4
        self.dec = nn.ModuleList(InferenceDecoderStage(stage) for stage in folded.dec)
        self.head = folded.heads[0].conv  # Dropout2d is the identity in inference
        self.config = folded.config
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        mains = encode_levels(self.enc, self.fuse, x)
        deeper = self.dec4(mains[3])
        for i in (2, 1, 0):
            deeper = self.dec[i](deeper, mains[i])
        return (_resize(self.head(deeper), x.shape[-2:]),)


@torch.no_grad()
def inference_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode computing the same function faster: BatchNorm folded, MiniSeg rewritten."""
    if isinstance(model, MiniSeg):
        return InferenceMiniSeg(model)
    return fold_batchnorm(model)
