"""Choosing the torch device, and a one-line description of what torch sees (for 'GPU not found' questions)."""

from __future__ import annotations

import torch

from .errors import LightSegError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available, else the CPU; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LightSegError(f"CUDA was requested but torch {torch.__version__} sees no CUDA device")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise LightSegError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


def diagnostics() -> dict[str, object]:
    """torch version, CUDA build and availability, device name and memory."""
    info: dict[str, object] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                               "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, memory_gb=round(props.total_memory / 2**30, 1))
    return info
