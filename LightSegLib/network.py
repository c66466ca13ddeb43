"""The tensor-level contract between preprocessing and a network: input normalisation and output probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class InputSpec:
    """How a network reads its input and reports infection: normalisation, input size, output activation."""

    mean: list[float]
    std: list[float]
    activation: str = "softmax"
    infection_channel: int = 1
    size: tuple[int, int] = (288, 288)
    flips: tuple[str, ...] = ()  # test-time flips: probabilities averaged over the plain and each flipped pass
    # 0: each input channel is the slice itself; else the channels are the slices this far below, at and above it
    neighbour_mm: float = 0.0


# Image axis of (B, C, H, W) input that each test-time flip reverses.
FLIP_AXES = {"horizontal": -1, "vertical": -2}


def check_flips(flips: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The flips as a tuple, each known and none repeated; raises ValueError naming a bad one."""
    for flip in flips:
        if flip not in FLIP_AXES:
            raise ValueError(f"unknown test-time flip {flip!r} (use {', '.join(FLIP_AXES)} or none)")
    if len(set(flips)) != len(flips):
        raise ValueError(f"test-time flips repeated: {', '.join(flips)}")
    return tuple(flips)


def parse_flips(text: str) -> tuple[str, ...]:
    """``"horizontal,vertical"`` (or ``"none"``) -> the flips, checked."""
    return check_flips([] if text.strip() in ("", "none") else [part.strip() for part in text.split(",")])


def normalise_input(x01: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B,1,H,W) intensities in [0, 1] -> (B,C,H,W) network input: gray replicated to C channels, (x - mean_c)/std_c."""
    channels = len(mean)
    mean_t = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(1, channels, 1, 1)
    return (x01.expand(-1, channels, -1, -1) - mean_t) / std_t


def infection_probability(logits: torch.Tensor, activation: str, channel: int = 1) -> torch.Tensor:
    """(B,K,H,W) logits -> (B,H,W) infection probability."""
    if activation == "sigmoid":
        return torch.sigmoid(logits[:, 0].float())
    return torch.softmax(logits.float(), dim=1)[:, channel]


def forward_probability(model: torch.nn.Module, spec: InputSpec, x01: torch.Tensor,
                        memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Run ``model`` on (B,1,H,W) [0, 1] intensities already at the input size; returns (B,H,W) probabilities,
    averaged over the plain pass and one pass per test-time flip in ``spec.flips`` (each flipped back).
    ``memory_format`` is the model's (the engine's is channels_last: its input then needs no conversion)."""
    x = normalise_input(x01, spec.mean, spec.std).contiguous(memory_format=memory_format)
    total = infection_probability(model(x)[0], spec.activation, spec.infection_channel)
    for flip in spec.flips:
        axis = FLIP_AXES[flip]
        flipped = infection_probability(model(x.flip(axis))[0], spec.activation, spec.infection_channel)
        total = total + flipped.flip(axis)  # (B,H,W): the same negative axis is the same image axis
    return total / (1 + len(spec.flips))


@torch.inference_mode()
def predict_image(model: torch.nn.Module, spec: InputSpec, image01: np.ndarray, device: torch.device) -> np.ndarray:
    """Infection probability of one 2D [0, 1] image, resized to the network input and back to its own size."""
    x = torch.from_numpy(np.ascontiguousarray(image01, np.float32))[None, None].to(device)
    if tuple(x.shape[-2:]) != tuple(spec.size):
        x = F.interpolate(x, size=tuple(spec.size), mode="bilinear", align_corners=False, antialias=True)
    prob = forward_probability(model, spec, x)[:, None]
    if tuple(prob.shape[-2:]) != image01.shape:
        prob = F.interpolate(prob, size=image01.shape, mode="bilinear", align_corners=False)
    return prob[0, 0].clamp(0, 1).cpu().numpy()
