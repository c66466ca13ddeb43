"""From HU slices to network input: the HU window, per-slice lung crop boxes, and the affine maps between them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .cards import HUWindow
from .geometry import AxialView
from .lungs import LungMask, lung_mask
from .orientation import faces_down

BOX_MARGIN = 0.08  # of the box size, on each side: the training slices show a little chest wall around the lungs
MIN_BOX_FRACTION = 0.6  # of the whole-volume lung box: small apical/basal lungs are not blown up to fill the input


def window_to_unit(hu: torch.Tensor, window: HUWindow) -> torch.Tensor:
    """HU -> [0, 1] with the model's window (the training slices' 8-bit intensity domain, divided by 255)."""
    return ((hu - window.low) / window.width).clamp_(0, 1)


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


def lung_crops(image: sitk.Image) -> LungCrops:
    """Canonical HU view, lung mask and lung crop boxes of a CT volume, turned supine if the anatomy says so."""
    view = AxialView.of(image)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    lungs = lung_mask(hu, view.spacing)
    turned = bool(lungs.lungs.any()) and faces_down(hu, lungs.lungs, view.spacing)
    if turned:
        view, lungs = view.turned(), lungs.turned()
        hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    return LungCrops(view, hu, lungs, lung_boxes(lungs.lungs), image, turned)


def _grow(lo: np.ndarray, hi: np.ndarray, min_size: float, limit: int) -> np.ndarray:
    centre = (lo + hi) / 2
    half = np.maximum(hi - lo, min_size) * (0.5 + BOX_MARGIN)
    start = np.clip(np.floor(centre - half), 0, limit - 1).astype(np.int64)
    stop = np.clip(np.ceil(centre + half), start + 1, limit).astype(np.int64)
    return np.stack([start, stop], 1)


def crop_affines(boxes: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2, 3) thetas for ``affine_grid`` (align_corners=False): slice -> crop, and crop -> slice."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    sy = (boxes[:, 1] - boxes[:, 0]) / height
    cy = (boxes[:, 0] + boxes[:, 1]) / height - 1
    sx = (boxes[:, 3] - boxes[:, 2]) / width
    cx = (boxes[:, 2] + boxes[:, 3]) / width - 1
    zero = torch.zeros_like(sx)
    to_crop = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
    to_slice = torch.stack([torch.stack([1 / sx, zero, -cx / sx], 1), torch.stack([zero, 1 / sy, -cy / sy], 1)], 1)
    return to_crop.float(), to_slice.float()


def restrict_to_window(theta: torch.Tensor, window: tuple[int, int, int, int], height: int, width: int
                       ) -> torch.Tensor:
    """Slice -> crop thetas re-expressed for an output grid covering only ``window`` = [y0, y1, x0, x1) of the slice."""
    y0, y1, x0, x1 = window
    scale_x, shift_x = (x1 - x0) / width, (x0 + x1) / width - 1
    scale_y, shift_y = (y1 - y0) / height, (y0 + y1) / height - 1
    out = theta.clone()  # the thetas are axis-aligned: theta[:, 0, 1] = theta[:, 1, 0] = 0
    out[:, 0, 0] = theta[:, 0, 0] * scale_x
    out[:, 0, 2] = theta[:, 0, 0] * shift_x + theta[:, 0, 2]
    out[:, 1, 1] = theta[:, 1, 1] * scale_y
    out[:, 1, 2] = theta[:, 1, 1] * shift_y + theta[:, 1, 2]
    return out


def crops_for_network(hu_slices: np.ndarray, to_crop: torch.Tensor, window: HUWindow, size: tuple[int, int],
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) HU slices -> (N, 1, *size) [0, 1] network inputs: windowed, then cropped to their lung boxes."""
    hu = torch.from_numpy(np.ascontiguousarray(hu_slices, dtype=np.float32))[:, None].to(device)
    return resample(window_to_unit(hu, window), to_crop, size, "border")


def resample(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], padding: str = "zeros") -> torch.Tensor:
    """Bilinear resampling of (N, C, H, W) through per-sample affines onto an output grid of ``size``."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
