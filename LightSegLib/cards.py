"""Model cards: the JSON that describes a model's weights, input domain, training and validation.

A model is two files side by side: ``<id>.json`` (the card) and the weights file it names (a plain ``state_dict``
saved with ``torch.save`` and loaded with ``weights_only=True``, so loading never executes code). The card holds the
sha256 of the weights, checked before they are used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import LightSegError
from .models import build_model
from .network import InputSpec, check_flips
from .postprocess import PostProcessing

CARD_SCHEMA_VERSION = 1


@dataclass
class HUWindow:
    """Maps Hounsfield units to the model's [0, 1] input: (HU - (level - width/2)) / width, clipped."""

    level: float
    width: float
    method: str = ""

    @property
    def low(self) -> float:
        return self.level - self.width / 2


@dataclass
class ModelCard:
    """Everything needed to run a model and to judge whether to trust it."""

    id: str
    version: str
    architecture: str
    arch_config: dict[str, Any]
    input_size: list[int]
    normalisation: dict[str, list[float]]
    hu_window: HUWindow | None
    weights_file: str
    weights_sha256: str
    parameters: int
    licence: str
    description: str = ""
    output_activation: str = "softmax"
    infection_channel: int = 1
    # Test-time flips ("horizontal", "vertical"): inference averages the plain pass with one pass per flip.
    test_time_flips: list[str] = field(default_factory=list)
    # 3D clean-up of the infection mask on volumes (postprocess.PostProcessing's fields); empty: none
    postprocessing: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=lambda: ["background", "infection"])
    # 0: the slice in every input channel; else the slices this many mm below, at and above it (volumes only)
    neighbour_slices_mm: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    schema_version: int = CARD_SCHEMA_VERSION
    path: Path | None = field(default=None, compare=False)

    @property
    def in_channels(self) -> int:
        return int(self.arch_config.get("in_channels", 1))

    @property
    def weights_path(self) -> Path:
        if self.path is None:
            raise ValueError(f"card {self.id} has no location on disk")
        return self.path.parent / self.weights_file

    def input_spec(self) -> InputSpec:
        return InputSpec(self.normalisation["mean"], self.normalisation["std"], self.output_activation,
                         self.infection_channel, (int(self.input_size[0]), int(self.input_size[1])),
                         tuple(self.test_time_flips), float(self.neighbour_slices_mm))

    def postprocessing_settings(self) -> PostProcessing:
        return PostProcessing.from_card(self.postprocessing)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        self.path = path

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        try:
            data = json.loads(Path(path).read_text())
            window = data.pop("hu_window", None)
            card = cls(**data, hu_window=HUWindow(**window) if window else None)
            if not isinstance(card.test_time_flips, list):
                raise TypeError(f"test_time_flips must be a list, not {card.test_time_flips!r}")
            check_flips(card.test_time_flips)
            card.postprocessing_settings()
        except (OSError, ValueError, TypeError) as exc:
            raise LightSegError(f"not a valid LightSeg model card ({exc})", path) from None
        card.path = Path(path)
        return card


def validation_summary(card: ModelCard) -> str:
    """The card's accuracy in one line: the cross-validated estimate for unseen slices first, where recorded, then the
    figure on the model's own validation fold (optimistic when that fold also chose the kept epoch)."""
    parts = []
    cv = card.validation.get("cross_validation")
    if cv:
        parts.append(f"Inf-Net Dice {cv['infnet_dice']:.3f} (standard error {cv['infnet_dice_standard_error']:.3f}), "
                     f"Dice@0.5 {cv['dice']:.3f} on unseen slices ({cv['folds']}-fold cross-validation of its recipe, "
                     f"{cv['images']} slices)")
    kept = card.validation.get("kept")
    if kept:
        parts.append(f"Inf-Net Dice {kept['infnet_dice']:.3f}, Dice@0.5 {kept['dice']:.3f} on its "
                     f"{kept['images']}-slice validation fold")
    return "; ".join(parts) or "no validation figures"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_network(card: ModelCard) -> nn.Module:
    """Build the card's network and load its weights after checking their sha256; returns it in eval mode."""
    weights = card.weights_path
    if not weights.is_file():
        raise LightSegError("model weights file is missing", weights)
    if sha256_of(weights) != card.weights_sha256:
        raise LightSegError("model weights are corrupted (sha256 does not match the model card)", weights)
    model = build_model(card.architecture, card.arch_config)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # torch raises several types for unreadable or mismatched files
        raise LightSegError(f"cannot load model weights ({type(exc).__name__})", weights) from None
    if hasattr(model, "aux"):
        model.aux = False  # auxiliary deep-supervision heads are loaded (for fine-tuning) but not run
    return model.eval()


def save_model(card: ModelCard, state_dict: dict[str, torch.Tensor], directory: Path) -> Path:
    """Write weights and card into ``directory`` (weights first, card last, so a crash leaves no usable card)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / card.weights_file
    tmp = weights.with_suffix(weights.suffix + ".partial")
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp)
    tmp.replace(weights)
    card.weights_sha256 = sha256_of(weights)
    card_path = directory / f"{card.id}.json"
    tmp_card = card_path.with_suffix(".json.partial")
    card.save(tmp_card)
    tmp_card.replace(card_path)
    card.path = card_path
    return card_path
