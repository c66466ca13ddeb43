"""Helpers shared by the commands: start-up imports, the progress bar and reading a calibrate-window result."""

from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LightSegError


@contextmanager
def startup_imports() -> Iterator[None]:
    """Import torch and the engine with the garbage collector off, then freeze what they allocated.

    Importing torch creates hundreds of thousands of objects that live until exit; collecting while they are being
    created only scans them (0.08 s of a 4 s ``lightseg segment``), and freezing keeps later collections off them.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


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


FLIPS_HELP = ("test-time flips averaged with the plain pass: horizontal, vertical, horizontal,vertical or none "
              "(default: the model card's; none is fastest)")


def parse_flips_option(text: str | None) -> tuple[str, ...] | None:
    """A ``--test-time-flips`` value -> the flips (None when the option was not given); one-line error if unknown."""
    if text is None:
        return None
    from ..network import parse_flips

    try:
        return parse_flips(text)
    except ValueError as exc:
        raise LightSegError(str(exc), "--test-time-flips") from None
