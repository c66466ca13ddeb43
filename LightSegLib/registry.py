"""Where models live: bundled with LightSeg (read-only) and the user's own store (fine-tuned or imported models)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .cards import ModelCard
from .defaults import DEFAULT_MODEL
from .errors import LightSegError

__all__ = ["DEFAULT_MODEL", "ModelEntry", "bundled_dir", "list_models", "remove_user_model", "resolve", "user_dir"]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def bundled_dir() -> Path:
    """``Resources/Models`` beside the LightSegLib package (repository checkout or installed Slicer module)."""
    return Path(os.environ.get("LIGHTSEG_BUNDLED_MODELS", PACKAGE_ROOT / "Resources" / "Models"))


def user_dir() -> Path:
    """``$LIGHTSEG_HOME/models``, by default ``~/.lightseg/models``."""
    home = os.environ.get("LIGHTSEG_HOME") or Path.home() / ".lightseg"
    return Path(home) / "models"


@dataclass
class ModelEntry:
    card: ModelCard
    bundled: bool


def _cards_in(directory: Path) -> list[ModelCard]:
    if not directory.is_dir():
        return []
    return [ModelCard.load(p) for p in sorted(directory.glob("*.json"))]


def list_models() -> list[ModelEntry]:
    """Bundled models first, then user models; a user model cannot shadow a bundled id."""
    entries = [ModelEntry(card, True) for card in _cards_in(bundled_dir())]
    taken = {e.card.id for e in entries}
    entries += [ModelEntry(card, False) for card in _cards_in(user_dir()) if card.id not in taken]
    return entries


def resolve(name_or_path: str | None) -> ModelCard:
    """A model card from an id (bundled, then user store) or from a path to a card .json."""
    name = name_or_path or DEFAULT_MODEL
    candidate = Path(name)
    if candidate.suffix == ".json" or candidate.is_file():
        if not candidate.is_file():
            raise LightSegError("model card not found", candidate)
        return ModelCard.load(candidate)
    for entry in list_models():
        if entry.card.id == name:
            return entry.card
    known = ", ".join(e.card.id for e in list_models()) or "none installed"
    raise LightSegError(f"unknown model (known: {known})", name)


def remove_user_model(name: str) -> list[Path]:
    """Delete a user model's card and weights; bundled models cannot be removed."""
    card = resolve(name)
    if card.path is None or card.path.parent.resolve() != user_dir().resolve():
        raise LightSegError("is a bundled model and cannot be removed", name)
    removed = []
    for path in (card.weights_path, card.path):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
