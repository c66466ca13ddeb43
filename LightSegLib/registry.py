"""Where models live: bundled with LightSeg (read-only) and the user's own store (fine-tuned or imported models)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .defaults import DEFAULT_MODEL
from .errors import LightSegError

if TYPE_CHECKING:  # loading a card imports torch; finding one (card_path) does not
    from .cards import ModelCard

__all__ = ["DEFAULT_MODEL", "ModelEntry", "bundled_dir", "card_path", "home_dir", "list_models", "remove_user_model",
           "resolve", "user_dir"]
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def bundled_dir() -> Path:
    """``Resources/Models`` beside the LightSegLib package (repository checkout or installed Slicer module)."""
    return Path(os.environ.get("LIGHTSEG_BUNDLED_MODELS", PACKAGE_ROOT / "Resources" / "Models"))


def home_dir() -> Path:
    """``$LIGHTSEG_HOME``, by default ``~/.lightseg``: the user's models and compiled networks."""
    return Path(os.environ.get("LIGHTSEG_HOME") or Path.home() / ".lightseg")


def user_dir() -> Path:
    """``$LIGHTSEG_HOME/models``, by default ``~/.lightseg/models``."""
    return home_dir() / "models"


@dataclass
class ModelEntry:
    card: ModelCard
    bundled: bool


def _cards_in(directory: Path) -> list[ModelCard]:
    from .cards import ModelCard

    if not directory.is_dir():
        return []
    return [ModelCard.load(p) for p in sorted(directory.glob("*.json"))]


def list_models() -> list[ModelEntry]:
    """Bundled models first, then user models; a user model cannot shadow a bundled id."""
    entries = [ModelEntry(card, True) for card in _cards_in(bundled_dir())]
    taken = {e.card.id for e in entries}
    entries += [ModelEntry(card, False) for card in _cards_in(user_dir()) if card.id not in taken]
    return entries


def _card_ids_in(directory: Path) -> list[tuple[str, Path]]:
    """(id, card path) of the cards in a directory, read as plain JSON (a broken card is skipped here; loading it
    reports it)."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append((json.loads(path.read_text())["id"], path))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def card_path(name_or_path: str | None) -> Path:
    """The card file of a model id (bundled first, then the user store) or card path, without loading it."""
    name = name_or_path or DEFAULT_MODEL
    candidate = Path(name)
    if candidate.suffix == ".json" or candidate.is_file():
        if not candidate.is_file():
            raise LightSegError("model card not found", candidate)
        return candidate
    cards = _card_ids_in(bundled_dir()) + _card_ids_in(user_dir())
    for card_id, path in cards:
        if card_id == name:
            return path
    known = ", ".join(dict.fromkeys(card_id for card_id, _ in cards)) or "none installed"
    raise LightSegError(f"unknown model (known: {known})", name)


def resolve(name_or_path: str | None) -> ModelCard:
    """A model card from an id (bundled, then user store) or from a path to a card .json."""
    from .cards import ModelCard

    return ModelCard.load(card_path(name_or_path))


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
