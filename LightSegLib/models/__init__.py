"""Network architectures, selected by name from a model card."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .malunet import MALUNet
from .miniseg import MiniSeg
from .ulite import ULite
from .unetv2 import UNetV2

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "miniseg": MiniSeg,
    "ulite": ULite,
    "malunet": MALUNet,
    "unetv2": UNetV2,
}

# Height/width multiple each architecture needs (MiniSeg takes any size; U-Net v2 also needs a square input).
SIZE_MULTIPLE = {"miniseg": 1, "ulite": 32, "malunet": 32, "unetv2": 32}


def build_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate ``architecture`` with the keyword ``config`` stored in its model card."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return builder(**config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
