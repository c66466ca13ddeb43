"""Import the MiniSeg authors' released checkpoints (legacy torch format, 467 tensors) into our MiniSeg.

The official state_dict key names appear only in ``_RULES``: an ordered list of regular expressions that rename each
official key to ours. Import checks that the renamed key set equals our model's, with identical shapes, and loads it
strictly, so every tensor is used and none is left over.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import LightSegError
from .miniseg import MiniSeg

_DB = {"conv0": "pw", "conv1": "dw", "bn": "norm", "act": "act"}
_CB = {"conv": "conv", "bn": "norm", "act": "act"}
_AHSP = {"conv1x1_down": "reduce", "conv1": "branches.0", "conv2": "branches.1", "conv3": "branches.2",
         "conv4": "branches.3", "attention": "gate", "conv1x1_fuse": "fuse", "bn": "norm", "act": "act"}
_D2 = {"conv0": "pw", "conv1": "dw1", "conv2": "dw2", "bn": "norm"}


def _level(m: re.Match) -> int:
    return int(m["L"]) - 1


_RULES: list[tuple[str, callable]] = [
    (r"long(?P<L>\d)\.(?P<p>\w+)\.(?P<t>.+)", lambda m: f"enc.{_level(m)}.long_in.{_DB[m['p']]}.{m['t']}"),
    (r"down1\.(?P<p>\w+)\.(?P<t>.+)", lambda m: f"enc.0.main_in.{_CB[m['p']]}.{m['t']}"),
    (r"down(?P<L>\d)\.(?P<p>\w+)\.(?P<t>.+)", lambda m: f"enc.{_level(m)}.main_in.{_AHSP[m['p']]}.{m['t']}"),
    (r"level1\.(?P<i>\d+)\.(?P<p>\w+)\.(?P<t>.+)", lambda m: f"enc.0.main.{m['i']}.{_CB[m['p']]}.{m['t']}"),
    (r"level(?P<L>\d)\.(?P<i>\d+)\.(?P<p>\w+)\.(?P<t>.+)",
     lambda m: f"enc.{_level(m)}.main.{m['i']}.{_AHSP[m['p']]}.{m['t']}"),
    (r"level(?P<L>\d)_long\.(?P<i>\d+)\.(?P<p>\w+)\.(?P<t>.+)",
     lambda m: f"enc.{_level(m)}.long.{m['i']}.{_DB[m['p']]}.{m['t']}"),
    (r"cat(?P<L>\d)\.0\.(?P<t>.+)", lambda m: f"fuse.{_level(m)}.conv.{m['t']}"),
    (r"cat(?P<L>\d)\.1\.(?P<t>.+)", lambda m: f"fuse.{_level(m)}.norm.{m['t']}"),
    (r"up4_conv4\.(?P<t>.+)", lambda m: f"dec4.proj.{m['t']}"),
    (r"up4_bn4\.(?P<t>.+)", lambda m: f"dec4.norm.{m['t']}"),
    (r"up4_act\.(?P<t>.+)", lambda m: f"dec4.act.{m['t']}"),
    (r"up(?P<L>[123])_conv(?P<X>\d)\.(?P<p>\w+)\.(?P<t>.+)",
     lambda m: f"dec.{_level(m)}.up_branch.{_D2[m['p']]}.{m['t']}" if int(m["X"]) == int(m["L"]) + 1 else None),
    (r"up(?P<L>[123])_conv(?P<X>\d)\.(?P<t>weight|bias)", lambda m: f"dec.{_level(m)}.lateral.{m['t']}"),
    (r"up(?P<L>[123])_bn\d\.(?P<t>.+)", lambda m: f"dec.{_level(m)}.lateral_norm.{m['t']}"),
    (r"up(?P<L>[123])_act\.(?P<t>.+)", lambda m: f"dec.{_level(m)}.act.{m['t']}"),
    (r"pred(?P<j>\d)\.1\.(?P<t>.+)", lambda m: f"heads.{int(m['j']) - 1}.conv.{m['t']}"),
]
_COMPILED = [(re.compile(pattern), rename) for pattern, rename in _RULES]


def official_key_to_ours(key: str) -> str:
    """Our state_dict name of one official key; raises KeyError for a key no rule knows."""
    for pattern, rename in _COMPILED:
        match = pattern.fullmatch(key)
        if match:
            try:
                ours = rename(match)
            except KeyError:
                continue
            if ours is not None:
                return ours
    raise KeyError(key)


def convert_official_state(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every official tensor; the result loads strictly into ``MiniSeg(3, 2, aux=True)``."""
    model = MiniSeg(in_channels=3, num_classes=2, aux=True)
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in official.items():
        ours = official_key_to_ours(key)
        if ours in converted:
            raise ValueError(f"two official keys map to {ours}")
        converted[ours] = tensor
    missing, extra = set(expected) - set(converted), set(converted) - set(expected)
    if missing or extra:
        raise ValueError(f"key sets differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}")
    for key, tensor in converted.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{key}: shape {tuple(tensor.shape)} != {tuple(expected[key].shape)}")
    return converted


def load_official_checkpoint(path: Path) -> MiniSeg:
    """Read an official checkpoint (no code execution) into our MiniSeg with its auxiliary heads."""
    try:
        official = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # legacy and zip formats raise different types
        raise LightSegError(f"cannot read as a torch checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(official, dict):
        raise LightSegError("is not a MiniSeg state_dict", path)
    try:
        converted = convert_official_state(official)
    except (KeyError, ValueError) as exc:
        raise LightSegError(f"is not an official MiniSeg checkpoint ({exc})", path) from None
    model = MiniSeg(in_channels=3, num_classes=2, aux=True)
    model.load_state_dict(converted, strict=True)
    return model.eval()
