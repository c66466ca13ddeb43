"""Where the network looks in a CT: the canonical axial view, the lung mask, and one lung crop box per slice.

Numpy and SimpleITK only (no torch), so that ``lightseg segment`` computes it while torch is still being imported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .geometry import AxialView
from .lungs import LungMask, lung_mask
from .orientation import faces_down

BOX_MARGIN = 0.08  # of the box size, on each side: the training slices show a little chest wall around the lungs
MIN_BOX_FRACTION = 0.6  # of the whole-volume lung box: small apical/basal lungs are not blown up to fill the input


@dataclass
class SliceBoxes:
    """Slices that contain lung (indices into the canonical S axis) and their crop boxes [y0, y1, x0, x1)."""

    slices: np.ndarray
    boxes: np.ndarray


def lung_boxes(lungs: np.ndarray) -> SliceBoxes:
    """One crop box per slice with lung: the slice's lung box, grown to a minimum size and by a margin."""
    rows = lungs.any(axis=2)  # (S, P)
    cols = lungs.any(axis=1)  # (S, L)
    slices = np.flatnonzero(rows.any(axis=1))
    if slices.size == 0:
        return SliceBoxes(slices, np.zeros((0, 4), np.int64))
    rows, cols = rows[slices], cols[slices]
    height, width = lungs.shape[1:]
    y0, y1 = rows.argmax(1), height - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), width - cols[:, ::-1].argmax(1)
    min_h = MIN_BOX_FRACTION * (y1.max() - y0.min())
    min_w = MIN_BOX_FRACTION * (x1.max() - x0.min())
    boxes = np.stack([_grow(y0, y1, min_h, height), _grow(x0, x1, min_w, width)], 1).reshape(-1, 4)
    return SliceBoxes(slices, boxes)


@dataclass
class LungCrops:
    """A CT seen as the engine sees it: canonical axial HU view, lung mask and per-slice crop boxes."""

    view: AxialView
    hu: np.ndarray  # (S, P, L) view of the image's HU array, no copy
    lungs: LungMask
    crops: SliceBoxes
    image: sitk.Image  # held so that ``hu``, a view into its buffer, stays valid
    turned: bool = False  # the header's view showed the patient upside down (prone): turned by anatomy
    seconds: float = 0.0  # how long finding the lungs and boxes took


def lung_crops(image: sitk.Image) -> LungCrops:
    """Canonical HU view, lung mask and lung crop boxes of a CT volume, turned supine if the anatomy says so."""
    start = time.perf_counter()
    view = AxialView.of(image)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    lungs = lung_mask(hu, view.spacing)
    turned = bool(lungs.lungs.any()) and faces_down(hu, lungs.lungs, view.spacing)
    if turned:
        view, lungs = view.turned(), lungs.turned()
        hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    boxes = lung_boxes(lungs.lungs)
    return LungCrops(view, hu, lungs, boxes, image, turned, time.perf_counter() - start)


def _grow(lo: np.ndarray, hi: np.ndarray, min_size: float, limit: int) -> np.ndarray:
    centre = (lo + hi) / 2
    half = np.maximum(hi - lo, min_size) * (0.5 + BOX_MARGIN)
    start = np.clip(np.floor(centre - half), 0, limit - 1).astype(np.int64)
    stop = np.clip(np.ceil(centre + half), start + 1, limit).astype(np.int64)
    return np.stack([start, stop], 1)
