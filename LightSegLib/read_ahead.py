"""Reading an input and finding its lungs on a background thread, while something else runs: torch being imported
(``lightseg segment``) or the previous study's network (``lightseg batch`` with one worker).

Decoding (SimpleITK), the lung mask (numpy, scipy, cc3d) release the GIL, so the overlap is real. No torch here.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .dicom_series import SeriesChoice
from .io import LoadedImage, read_image
from .lung_crops import LungCrops, lung_crops


@dataclass
class ReadAhead:
    """An input being read, and then its lung crops being computed (None for a 2D slice)."""

    path: Path
    reading: Future[LoadedImage]
    scanning: Future[LungCrops | None]


def start_reading(pool: ThreadPoolExecutor, path: Path, series: SeriesChoice | None = None) -> ReadAhead:
    """Queue the reading of ``path`` and its lung crops on ``pool``; errors surface from the futures' ``result()``."""
    reading = pool.submit(read_image, path, series)

    def scan() -> LungCrops | None:
        loaded = reading.result()
        return None if loaded.is_2d else lung_crops(loaded.image)

    return ReadAhead(path, reading, pool.submit(scan))
