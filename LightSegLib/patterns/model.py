"""The pattern model on disk: a card (JSON) beside its weights, checked by sha256 like the infection models' cards.

The bundled one is ``Resources/Models/Patterns/covid-patterns.json``; it sits in a folder of its own so that the
infection model registry never lists it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..cards import sha256_of
from ..errors import LightSegError
from .net import PatternNet

PATTERN_CARD = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "Patterns" / "covid-patterns.json"


@dataclass
class PatternCard:
    """What runs the pattern network and what it was trained and measured on."""

    id: str
    version: str
    arch_config: dict[str, Any]
    input_size: int
    mean: float
    std: float
    weights_file: str
    weights_sha256: str
    parameters: int
    licence: str
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def load(cls, path: Path) -> "PatternCard":
        try:
            card = cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise LightSegError(f"not a valid LightSeg pattern model card ({exc})", path) from None
        card.path = Path(path)
        return card


class PatternModel:
    """A loaded PatternNet: consolidation probability of the engine's windowed crops."""

    def __init__(self, card: PatternCard, device: torch.device | str = "cpu") -> None:
        weights = card.path.parent / card.weights_file
        if not weights.is_file():
            raise LightSegError("pattern model weights file is missing", weights)
        if sha256_of(weights) != card.weights_sha256:
            raise LightSegError("pattern model weights are corrupted (sha256 does not match its card)", weights)
        self.card = card
        self.device = torch.device(device)
        self.net = PatternNet(**card.arch_config)
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        self.net.eval().to(self.device)

    @torch.inference_mode()
    def consolidation(self, x01: torch.Tensor, full_size: bool = False) -> torch.Tensor:
        """(B,1,H,W) crops in [0, 1] (the infection network's input) -> (B,h,w) consolidation probability at the
        network's output size, a quarter of its input (the engine maps it back with the crops' affines, which do not
        depend on the resolution), or at (H,W) with ``full_size``."""
        size = (self.card.input_size, self.card.input_size)
        x = x01.float()
        if tuple(x.shape[-2:]) != size:  # antialiased, as the training slices were resized
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        prob = torch.sigmoid(self.net((x - self.card.mean) / self.card.std))
        if full_size:
            prob = F.interpolate(prob, size=x01.shape[-2:], mode="bilinear", align_corners=False)
        return prob[:, 0]


def load_pattern_model(path: Path | None = None, device: torch.device | str = "cpu") -> PatternModel:
    """The pattern model of a card (the bundled one by default)."""
    return PatternModel(PatternCard.load(path or PATTERN_CARD), device)
