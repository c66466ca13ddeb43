"""A fast classical lung mask from Hounsfield units, split into right and left lung.

Steps, on a canonical (S, P, L) HU array, at about 1.5 mm in-plane (the result is upsampled back):
1. air = HU < -400; air that reaches the edge of the field of view is outside the body and dropped, unless the body
   (the largest component of non-air) encloses most of it along rows or columns: a lung cut by a tight field of view;
2. the large remaining air components are the lungs (with the airways);
3. the lungs are split into right and left by their connected components, eroding the mask if they touch;
4. each lung, slice by slice, is closed with a 20 mm octagon (close to a disk) and hole-filled, so vessels and
   lesions (consolidation touching the pleura included) stay inside it. Closing each lung alone keeps the two lungs
   from merging across the mediastinum; holes larger than a vessel are filled only when they are not solid, which
   keeps the liver and spleen domes (surrounded by lung in the basal slices) out, at the price of leaving out a large
   dense consolidation that aerated lung surrounds completely.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import cc3d
import numpy as np
from scipy import ndimage

from .slice_morphology import close_octagon, dilate_octagon, pack_slices, unpack_slices

AIR_HU = -400.0
WORKING_SPACING_MM = 1.5
CLOSING_RADIUS_MM = 20.0
CLOSING_REACH_MM = 8.0  # farther than this from aerated lung, closing keeps only ground-glass-like voxels
GGO_MAX_HU = -300.0
SMALL_HOLE_MM2 = 100.0  # holes up to this area in a slice are always filled (vessel cross-sections)
SOLID_MIN_HU = -100.0  # larger holes whose mean is above this are solid organ (liver/spleen dome), not lung
MIN_LUNG_ML = 30.0
CUT_SLICES_FRACTION = 0.05
CUT_END_FRACTION = 0.1
BODY_ENCLOSED_FRACTION = 0.5  # air touching the field of view's edge is lung when the body encloses this much of it
RIGHT, LEFT = 1, 2
WORKERS = 2  # threads for the steps that split into independent parts (the laptops we aim at have 2-8 cores)
CHUNK_SLICES = 40  # slices closed at a time: bounds the temporaries on long scans, and spreads the work


@dataclass
class LungMask:
    """``sides`` is an (S, P, L) uint8 array: 0 outside, 1 right lung, 2 left lung."""

    sides: np.ndarray

    @cached_property
    def lungs(self) -> np.ndarray:
        """Both lungs, computed once (the engine reads it for every batch)."""
        return self.sides > 0

    def turned(self) -> "LungMask":
        """The mask in a view turned 180 degrees about the long axis: reversed in-plane, right and left swapped."""
        turned = self.sides[:, ::-1, ::-1]
        return LungMask(np.ascontiguousarray(np.choose(turned, [0, LEFT, RIGHT]).astype(np.uint8)))


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Face-connected (6-neighbour) components of a 3D mask, numbered in scan order as ``ndimage.label`` numbers
    them; cc3d takes a third of its time."""
    labels, count = cc3d.connected_components(mask, connectivity=6, return_N=True)
    return labels, int(count)


def _close_slices(mask: np.ndarray, hu: np.ndarray, radius: float, reach: float, max_small_hole: int,
                  pool: ThreadPoolExecutor) -> np.ndarray:
    """Per axial slice: closing with an octagon of ``radius`` voxels, then hole filling (inside the mask's box).

    What the closing adds is kept within ``reach`` voxels of the lung, and farther only where it is ground-glass-like
    (below GGO_MAX_HU). Holes of at most ``max_small_hole`` voxels (vessels) are filled; larger holes only when they
    are not solid (mean below SOLID_MIN_HU): the dome of the liver or spleen, surrounded by lung in the basal slices,
    stays out, while ground-glass and mixed lesions go in. Chunks of slices are closed on ``pool``'s threads (numpy
    and scipy release the GIL).
    """
    result = mask.copy()
    if not mask.any():
        return result
    pad = int(np.ceil(radius)) + 2
    box = _bounding_box(mask, pad)
    chunks = [(slice(start, min(start + CHUNK_SLICES, box[0].stop)), box[1], box[2])
              for start in range(box[0].start, box[0].stop, CHUNK_SLICES)]
    closed = pool.map(lambda chunk: _close_chunk(mask[chunk], hu[chunk], radius, reach, max_small_hole, pad), chunks)
    for chunk, region in zip(chunks, closed):
        result[chunk] = region
    return result


def _close_chunk(inside: np.ndarray, hu_box: np.ndarray, radius: float, reach: float, max_small_hole: int,
                 pad: int) -> np.ndarray:
    depth = inside.shape[0]
    packed = np.pad(pack_slices(inside), ((0, 0), (pad, pad), (pad, pad)))
    region = unpack_slices(close_octagon(packed, radius), depth)[:, pad:-pad, pad:-pad]
    near = unpack_slices(dilate_octagon(packed, reach), depth)[:, pad:-pad, pad:-pad]
    closed = inside | (region & (near | (hu_box < GGO_MAX_HU)))
    _fill_holes(closed, hu_box, max_small_hole)
    return closed


def _fill_holes(closed: np.ndarray, hu_box: np.ndarray, max_small_hole: int) -> None:
    """Fills, in place, the holes of each slice of ``closed`` that are small (vessels) or not solid.

    Holes are the background components of a slice that do not reach the slice's edge. One 3D labelling finds them
    in every slice: each slice's background carries its own value, and components join only equal values.
    """
    slice_numbers = np.arange(1, closed.shape[0] + 1, dtype=np.uint16)[:, None, None]
    labels, count = cc3d.connected_components(~closed * slice_numbers, connectivity=6, return_N=True)
    if not count:
        return
    edge = np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                           labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    is_hole = np.ones(count + 1, bool)
    is_hole[0] = False
    is_hole[edge] = False
    in_hole = is_hole[labels]
    hole_labels = labels[in_hole]  # holes are small: the statistics run over their voxels only
    sizes = np.bincount(hole_labels, minlength=count + 1)
    mean_hu = np.bincount(hole_labels, weights=hu_box[in_hole], minlength=count + 1) / np.maximum(sizes, 1)
    keep = (sizes <= max_small_hole) | (mean_hu < SOLID_MIN_HU)
    closed[in_hole] = keep[hole_labels]


def _bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """Slices of the mask's bounding box, grown in-plane by ``pad`` and by one slice above and below (where the
    tissue around the lung ends is outside it), clipped to the array."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        grow = 1 if axis == 0 else pad
        box.append(slice(max(hits[0] - grow, 0), min(hits[-1] + 1 + grow, mask.shape[axis])))
    return tuple(box)


def _between(mask: np.ndarray, axis: int) -> np.ndarray:
    """Voxels with a ``mask`` voxel on both sides of them along ``axis`` (or in the mask): those between the first
    and the last mask voxel of their line."""
    length = mask.shape[axis]
    first = np.where(mask.any(axis=axis), mask.argmax(axis=axis), length)  # lines without the mask hold nothing
    last = length - 1 - np.flip(mask, axis).argmax(axis=axis)
    index = np.arange(length).reshape([-1 if a == axis else 1 for a in range(mask.ndim)])
    return (index >= np.expand_dims(first, axis)) & (index <= np.expand_dims(last, axis))


def _enclosed_by_body(air: np.ndarray) -> np.ndarray:
    """Voxels that the body encloses within their slice along a row or a column, on a grid twice as coarse in-plane.

    The body is the largest connected component of non-air: the table and what lies on it are apart from it (the
    cushions are air-like foam). Lung is enclosed: by the chest wall in front and behind, and from side to side, so a
    field of view that cuts the lungs at one edge still encloses them along the other axis. Outside air is enclosed
    only in the body's concavities.
    """
    tissue = ~air[:, ::2, ::2]
    labels, count = _label(tissue)
    if not count:
        return np.zeros(tissue.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == sizes.argmax()
    return _between(body, 1) | _between(body, 2)


def _lung_components(air: np.ndarray, min_voxels: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """Air components inside the body that are large enough to be lung, from one labelling of the air.

    A component that touches the in-plane border of a slice is outside air (the room, the air around the table)
    unless the body encloses most of it: a lung cut by a tight field of view. Of the components inside, those with at
    least ``min_voxels`` and at least 10 % of the largest are kept.
    """
    enclosed_by_body = pool.submit(_enclosed_by_body, air)  # needed almost always; it overlaps the labelling
    labels, count = _label(air)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    border = border[(border > 0) & (sizes[border] >= min_voxels)]  # smaller ones are dropped by size anyway
    if border.size:
        coarse = labels[:, ::2, ::2]
        enclosed = np.bincount(coarse[enclosed_by_body.result()], minlength=count + 1)
        outside = [label for label in border
                   if enclosed[label] < BODY_ENCLOSED_FRACTION * np.count_nonzero(coarse == label)]
        sizes[outside] = 0
    sizes[0] = 0  # not air
    keep = (sizes > 0) & (sizes >= min_voxels) & (sizes >= 0.1 * sizes.max())
    kept = np.flatnonzero(keep)
    if len(kept) > 4:
        return keep[labels]
    lungs = np.zeros(labels.shape, bool)
    for label in kept:  # usually the two lungs, or one lung and the airways: a comparison each beats a lookup table
        lungs |= labels == label
    return lungs


def _split_sides(lungs: np.ndarray, min_voxels: int) -> np.ndarray:
    """Label right (1) and left (2) lung: the two largest components, eroded apart first if the lungs touch."""
    box = _bounding_box(lungs, 0)
    region = lungs[box]
    seeds, eroded = region, False
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(8):
        labels, n = _label(seeds)
        sizes = np.bincount(labels.ravel())[1:] if n else np.array([])
        big = np.flatnonzero(sizes >= max(min_voxels // 4, 1)) + 1
        if len(big) >= 2:
            two = big[np.argsort(sizes[big - 1])[-2:]]
            break
        seeds, eroded = ndimage.binary_erosion(seeds, structure), True
    else:
        return _split_at_midline(lungs)
    columns = np.arange(labels.shape[2])
    centres = [_mean_column(labels == label, columns) for label in two]
    right_id, left_id = (two[0], two[1]) if centres[0] < centres[1] else (two[1], two[0])
    seed_sides = np.zeros(labels.shape, np.uint8)
    seed_sides[labels == right_id] = RIGHT
    seed_sides[labels == left_id] = LEFT
    if eroded:
        iz, iy, ix = ndimage.distance_transform_edt(seed_sides == 0, return_distances=False, return_indices=True)
        region_sides = seed_sides[iz, iy, ix]
    else:  # the lungs were apart: small leftovers (airway pieces) go to the side of the nearer lung centre
        midline = (centres[0] + centres[1]) / 2
        by_column = np.where(np.arange(region.shape[2]) < midline, RIGHT, LEFT).astype(np.uint8)
        region_sides = np.where(seed_sides > 0, seed_sides, by_column[None, None, :])
    sides = np.zeros(lungs.shape, np.uint8)
    sides[box] = np.where(region, region_sides, np.uint8(0))
    return sides


def _mean_column(mask: np.ndarray, columns: np.ndarray) -> float:
    """The mean column index of a mask's voxels, from its column histogram (only the left-right centre is needed)."""
    counts = mask.sum(axis=(0, 1))
    return float(counts @ columns / max(counts.sum(), 1))


def _split_sides_coarse(lungs: np.ndarray, min_voxels: int) -> np.ndarray:
    """``_split_sides`` on a grid twice as coarse in-plane (the split needs no fine detail), brought back to ``lungs``;
    fine voxels the coarse grid missed go to the side of the nearer lung centre."""
    coarse = _split_sides(lungs[:, ::2, ::2], max(min_voxels // 4, 1))
    up = upsample_in_plane(coarse, 2, lungs.shape)
    sides = np.where(lungs, up, np.uint8(0))
    missed = lungs & (up == 0)
    if missed.any():
        columns = np.arange(lungs.shape[2])
        right, left = (_upsampled_column_counts(coarse, side, lungs.shape) for side in (RIGHT, LEFT))
        right_x, left_x = right @ columns / max(right.sum(), 1), left @ columns / max(left.sum(), 1)
        by_column = np.where(columns < (right_x + left_x) / 2, RIGHT, LEFT).astype(np.uint8)
        sides[missed] = np.broadcast_to(by_column, lungs.shape)[missed]
    return sides


def _upsampled_column_counts(coarse: np.ndarray, side: int, shape: tuple[int, ...]) -> np.ndarray:
    """Voxels of ``side`` per column of ``upsample_in_plane(coarse, 2, shape)``, counted on the coarse grid (exact:
    each coarse row stands for two fine rows, the last one for one when the fine height is odd)."""
    per_cell = (coarse == side).sum(axis=0)
    fine_rows_per_row = np.bincount(np.arange(shape[1]) // 2, minlength=coarse.shape[1])
    return np.repeat(fine_rows_per_row @ per_cell, 2)[:shape[2]]


def _split_at_midline(lungs: np.ndarray) -> np.ndarray:
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    middle = (columns[0] + columns[-1]) // 2 if columns.size else lungs.shape[2] // 2
    sides = np.zeros(lungs.shape, np.uint8)
    sides[:, :, :middle][lungs[:, :, :middle]] = RIGHT
    sides[:, :, middle:][lungs[:, :, middle:]] = LEFT
    return sides


def upsample_in_plane(coarse: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling of a one-byte (S, P, L) array by ``step`` in-plane, cut to ``shape``.

    For the usual step of 2, a byte times 257 is a 16-bit word holding that byte twice: the columns double in one
    multiplication and the rows in one copy, three times faster than two ``np.repeat`` calls.
    """
    if step == 1:
        return np.ascontiguousarray(coarse)
    depth, height, width = coarse.shape
    if step == 2 and coarse.itemsize == 1:
        doubled_columns = (coarse.astype(np.uint16) * 257).view(coarse.dtype)
        fine = np.broadcast_to(doubled_columns[:, :, None, :], (depth, height, 2, 2 * width))
        fine = fine.reshape(depth, 2 * height, 2 * width)
    else:
        fine = np.repeat(np.repeat(coarse, step, axis=1), step, axis=2)
    if fine.shape[1:] == tuple(shape[1:]):
        return fine
    return np.ascontiguousarray(fine[:, :shape[1], :shape[2]])


def field_of_view_cuts(lungs: np.ndarray) -> list[str]:
    """Where a canonical (S, P, L) lung mask runs out of the field of view: "side" (an in-plane edge, in at least
    CUT_SLICES_FRACTION of the lung slices), "top" or "bottom" (an end slice holding at least CUT_END_FRACTION of the
    largest lung slice's area; scans often start a few square centimetres into the lung bases and apices)."""
    areas = lungs.sum(axis=(1, 2))
    if not areas.any():
        return []
    cuts = []
    on_edge = lungs[:, 0, :].any(axis=1) | lungs[:, -1, :].any(axis=1) | lungs[:, :, 0].any(axis=1) | \
        lungs[:, :, -1].any(axis=1)
    if on_edge.sum() >= CUT_SLICES_FRACTION * (areas > 0).sum():
        cuts.append("side")
    if areas[-1] >= CUT_END_FRACTION * areas.max():
        cuts.append("top")
    if areas[0] >= CUT_END_FRACTION * areas.max():
        cuts.append("bottom")
    return cuts


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> LungMask:
    """Right/left lung mask of a canonical (S, P, L) HU volume with ``spacing`` in mm."""
    step = max(1, int(round(WORKING_SPACING_MM / max(min(spacing[1:]), 1e-3))))
    small = hu[:, ::step, ::step]
    work_spacing = (spacing[0], spacing[1] * step, spacing[2] * step)
    voxel_ml = float(np.prod(work_spacing)) / 1000
    min_voxels = int(MIN_LUNG_ML / voxel_ml)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        lungs = _lung_components(small < AIR_HU, min_voxels, pool)
        sides = _split_sides_coarse(lungs, min_voxels) if lungs.any() else np.zeros(lungs.shape, np.uint8)
        radius = CLOSING_RADIUS_MM / min(work_spacing[1:])
        reach = CLOSING_REACH_MM / min(work_spacing[1:])
        max_small_hole = int(SMALL_HOLE_MM2 / (work_spacing[1] * work_spacing[2]))
        # each lung closes alone, so that the two do not merge across the mediastinum
        closed = [_close_slices(sides == side, small, radius, reach, max_small_hole, pool) for side in (RIGHT, LEFT)]
        for side, region in zip((RIGHT, LEFT), closed):
            sides[region & (sides == 0)] = side
    return LungMask(upsample_in_plane(sides, step, hu.shape))
