"""Helpers shared by the commands: the progress bar and reading a calibrate-window result."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import LightSegError


def progress_bar(description: str):
    """A tqdm bar on a terminal, nothing otherwise; returns (callback, close)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="slice", disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def load_window(path: Path):
    import json

    from ..cards import HUWindow

    try:
        data = json.loads(path.read_text())
        return HUWindow(float(data["level"]), float(data["width"]), data["method"])
    except (OSError, ValueError, KeyError) as exc:
        raise LightSegError(f"not a calibrate-window result ({type(exc).__name__}: {exc})", path) from None
