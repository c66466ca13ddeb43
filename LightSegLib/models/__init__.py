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


def _unknown(architecture: str) -> ValueError:
    return ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")


def input_stages(architecture: str, config: dict[str, Any]) -> tuple[str, ...]:
    """Parameter-name prefixes of the layers that work at full to quarter resolution (the first two encoder stages).

    Fine-tuning only these adapts a model to a new scanner, kernel or protocol (the images look different, the
    anatomy and the labelling do not) while the deeper layers keep what they learned.
    """
    if architecture == "miniseg":
        return ("enc.0", "enc.1")
    if architecture == "ulite":
        return ("stem", "enc.0", "enc.1")
    if architecture == "malunet":
        return ("encoder.0", "encoder.1")
    if architecture == "unetv2":
        return ("encoder.enc.0", "encoder.enc.1") if config.get("encoder") == "miniseg" else ("encoder.stages.0",)
    raise _unknown(architecture)


def build_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate ``architecture`` with the keyword ``config`` stored in its model card."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise _unknown(architecture) from None
    return builder(**config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
