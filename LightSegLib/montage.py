"""A PNG montage of axial slices with the lungs outlined and the infection overlaid, for a quick visual check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from .engine import Segmentation
from .io import INFECTION, write_atomically

DISPLAY_WINDOW = (-600.0, 1500.0)  # lung window (level, width) for display only
INFECTION_RGB = np.array([255, 60, 40], np.float32)
LUNG_RGB = np.array([80, 200, 255], np.float32)
GROUND_GLASS_RGB = np.array([255, 215, 40], np.float32)


def montage_slices(infection_per_slice: np.ndarray, lung_per_slice: np.ndarray, count: int) -> list[int]:
    """Evenly spaced slices across the lungs (always including the one with most infection)."""
    with_lung = np.flatnonzero(lung_per_slice)
    if with_lung.size == 0:
        return []
    picks = set(with_lung[np.linspace(0, with_lung.size - 1, count + 2)[1:-1].round().astype(int)].tolist())
    if infection_per_slice.any():
        picks.add(int(infection_per_slice.argmax()))
    return sorted(picks)[:count]


def render_slice(hu: np.ndarray, infection: np.ndarray, lungs: np.ndarray, consolidation: np.ndarray | None = None
                 ) -> np.ndarray:
    """Lung window, infection overlaid in red and the lungs outlined; given the ``consolidation`` mask, the
    infection is drawn as ground-glass (yellow) and consolidation (red)."""
    level, width = DISPLAY_WINDOW
    gray = np.clip((hu - (level - width / 2)) / width, 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    rgb[infection] = 0.45 * rgb[infection] + 0.55 * (INFECTION_RGB if consolidation is None else GROUND_GLASS_RGB)
    if consolidation is not None:
        rgb[consolidation] = 0.45 * rgb[consolidation] + 0.55 * INFECTION_RGB
    outline = lungs & ~ndimage.binary_erosion(lungs, iterations=2)
    rgb[outline] = LUNG_RGB
    return rgb.astype(np.uint8)


def write_montage(image: sitk.Image, result: Segmentation, path: Path, count: int = 6) -> list[int]:
    """Write the montage (up to ``count`` slices in a row pair); returns the canonical slice indices shown."""
    assert result.view is not None and result.lungs is not None
    hu = result.view.to_canonical(sitk.GetArrayViewFromImage(image))
    labels = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
    infection_per_slice = (labels == INFECTION).sum(axis=(1, 2))
    picks = montage_slices(infection_per_slice, result.lungs.lungs.any(axis=(1, 2)), count)
    if not picks:
        picks = [hu.shape[0] // 2]
    tiles = [render_slice(hu[z], labels[z] == INFECTION, result.lungs.lungs[z]) for z in picks]
    columns = (len(tiles) + 1) // 2 if len(tiles) > 3 else len(tiles)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    write_atomically(path, lambda tmp: picture.save(tmp, format="PNG"))
    return picks
