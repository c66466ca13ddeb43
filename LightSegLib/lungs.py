"""A fast classical lung mask from Hounsfield units, split into right and left lung.

Steps, on a canonical (S, P, L) HU array, at about 1.5 mm in-plane (the result is upsampled back):
1. air = HU < -400; air connected to the sides of the field of view is outside the body and dropped;
2. the large remaining air components are the lungs (with the airways);
3. each axial slice is closed and hole-filled so vessels, nodules and dense lesions (consolidation touching the
   pleura included) stay inside the lung;
4. the lungs are split into right and left by their connected components, eroding the mask if they touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

AIR_HU = -400.0
WORKING_SPACING_MM = 1.5
CLOSING_RADIUS_MM = 6.0
MIN_LUNG_ML = 30.0
RIGHT, LEFT = 1, 2


@dataclass
class LungMask:
    """``sides`` is an (S, P, L) uint8 array: 0 outside, 1 right lung, 2 left lung."""

    sides: np.ndarray

    @property
    def lungs(self) -> np.ndarray:
        return self.sides > 0


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius)[None]  # a 2D disk applied slice by slice


def _outside_air(air: np.ndarray) -> np.ndarray:
    """Air components touching the in-plane borders of any slice (the room, the table, outside the body)."""
    labels, _ = ndimage.label(air)
    border = np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                             labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    outside_ids = np.unique(border[border > 0])
    return np.isin(labels, outside_ids)


def _largest_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Keep components with at least ``min_voxels`` and at least 10 % of the largest one."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero((sizes >= min_voxels) & (sizes >= 0.1 * sizes.max())) + 1
    return np.isin(labels, keep)


def _fill_slices(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per axial slice: closing with a disk, then hole filling."""
    pad = radius + 1
    padded = np.pad(mask, ((0, 0), (pad, pad), (pad, pad)))
    closed = ndimage.binary_closing(padded, structure=_disk(radius))[:, pad:-pad, pad:-pad]
    return ndimage.binary_fill_holes(closed | mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))


def _split_sides(lungs: np.ndarray, min_voxels: int) -> np.ndarray:
    """Label right (1) and left (2) lung: two components, eroded apart if needed, grown back by nearest seed."""
    seeds = lungs
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(8):
        labels, n = ndimage.label(seeds)
        sizes = np.bincount(labels.ravel())[1:] if n else np.array([])
        big = np.flatnonzero(sizes >= max(min_voxels // 4, 1)) + 1
        if len(big) >= 2:
            two = big[np.argsort(sizes[big - 1])[-2:]]
            break
        seeds = ndimage.binary_erosion(seeds, structure)
    else:
        return _split_at_midline(lungs)
    centres = [ndimage.center_of_mass(labels == t)[2] for t in two]
    right_id, left_id = (two[0], two[1]) if centres[0] < centres[1] else (two[1], two[0])
    seed_labels = np.where(labels == right_id, RIGHT, np.where(labels == left_id, LEFT, 0)).astype(np.uint8)
    _, (iz, iy, ix) = ndimage.distance_transform_edt(seed_labels == 0, return_indices=True)
    return np.where(lungs, seed_labels[iz, iy, ix], 0).astype(np.uint8)


def _split_at_midline(lungs: np.ndarray) -> np.ndarray:
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    middle = (columns[0] + columns[-1]) // 2 if columns.size else lungs.shape[2] // 2
    sides = np.zeros(lungs.shape, np.uint8)
    sides[:, :, :middle][lungs[:, :, :middle]] = RIGHT
    sides[:, :, middle:][lungs[:, :, middle:]] = LEFT
    return sides


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> LungMask:
    """Right/left lung mask of a canonical (S, P, L) HU volume with ``spacing`` in mm."""
    step = max(1, int(round(WORKING_SPACING_MM / max(min(spacing[1:]), 1e-3))))
    small = hu[:, ::step, ::step]
    work_spacing = (spacing[0], spacing[1] * step, spacing[2] * step)
    voxel_ml = float(np.prod(work_spacing)) / 1000
    min_voxels = int(MIN_LUNG_ML / voxel_ml)

    air = small < AIR_HU
    inside_air = air & ~_outside_air(air)
    lungs = _largest_components(inside_air, min_voxels)
    radius = max(1, int(round(CLOSING_RADIUS_MM / min(work_spacing[1:]))))
    lungs = _fill_slices(lungs, radius)
    sides = _split_sides(lungs, min_voxels) if lungs.any() else np.zeros(lungs.shape, np.uint8)
    if step > 1:
        sides = np.repeat(np.repeat(sides, step, axis=1), step, axis=2)[:, :hu.shape[1], :hu.shape[2]]
    return LungMask(np.ascontiguousarray(sides))
