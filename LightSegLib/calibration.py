"""Choosing the HU window that maps CT volumes into the 8-bit domain of the training slices, by measurement.

The training slices were windowed and lung-cropped by their publishers with an unpublished window. We take the
intensity distribution of the training slices (pixel / 255) and the HU distribution inside the crop boxes that the
engine itself feeds to the network on a real CT, and choose the window (level, width) whose mapping
clip((HU - level + width / 2) / width, 0, 1) makes the two distributions closest in 1-Wasserstein distance
(mean absolute difference of quantile functions). A window is monotone, so the quantiles of mapped values are the
mapped quantiles: the whole grid search is one array expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .lung_crops import lung_crops

QUANTILES = np.linspace(0.0005, 0.9995, 1000)
LEVELS = np.arange(-1000.0, 200.0 + 1, 5.0)
WIDTHS = np.arange(400.0, 2400.0 + 1, 10.0)


@dataclass
class WindowFit:
    level: float
    width: float
    distance: float  # mean |quantile difference| in units of the [0, 1] intensity range
    reference_distances: dict[str, float]

    def method(self, volume_name: str, slices: int) -> str:
        return (f"1-Wasserstein match of the HU distribution inside LightSeg's lung crop boxes of {volume_name} "
                f"({slices} slices) to the training slices' 8-bit distribution; grid L {LEVELS[0]:.0f}..{LEVELS[-1]:.0f} "
                f"step 5, W {WIDTHS[0]:.0f}..{WIDTHS[-1]:.0f} step 10; distance {self.distance:.4f}")


def training_quantiles(images: list[np.ndarray]) -> np.ndarray:
    """Quantiles of all training pixels in [0, 1] (each image weighted by its pixel count)."""
    return np.quantile(np.concatenate([im.ravel() for im in images]), QUANTILES)


def crop_hu_values(image: sitk.Image, max_values: int = 2_000_000) -> tuple[np.ndarray, int]:
    """HU values inside the engine's per-slice lung crop boxes (evenly subsampled), and the slice count."""
    scan = lung_crops(image)
    hu, crops = scan.hu, scan.crops
    values = np.concatenate([hu[z, y0:y1, x0:x1].ravel() for z, (y0, y1, x0, x1) in zip(crops.slices, crops.boxes)])
    step = max(1, values.size // max_values)
    return values[::step].astype(np.float32), len(crops.slices)


def window_distance(train_q: np.ndarray, hu_q: np.ndarray, level: np.ndarray, width: np.ndarray) -> np.ndarray:
    """1-Wasserstein distance for every (level, width) pair broadcast together."""
    low = level - width / 2
    mapped = np.clip((hu_q - low[..., None]) / width[..., None], 0, 1)
    return np.abs(mapped - train_q).mean(axis=-1)


def fit_window(train_q: np.ndarray, hu_values: np.ndarray) -> WindowFit:
    hu_q = np.quantile(hu_values, QUANTILES)
    levels, widths = np.meshgrid(LEVELS, WIDTHS, indexing="ij")
    distances = window_distance(train_q, hu_q, levels, widths)
    i, j = np.unravel_index(distances.argmin(), distances.shape)
    references = {f"L{lv:.0f}/W{wd:.0f}": float(window_distance(train_q, hu_q, np.array(lv), np.array(wd)))
                  for lv, wd in ((-600, 1500), (-500, 1500), (-600, 1200), (-400, 1600))}
    return WindowFit(float(LEVELS[i]), float(WIDTHS[j]), float(distances[i, j]), references)
