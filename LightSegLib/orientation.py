"""Whether the anatomy agrees with the header on which way the patient faces.

A prone patient stored in the scanner's frame (or a header that lost the patient's position) shows the spine in front
of the lungs in the canonical view. The network was trained on supine slices and the lungs are named by the
canonical left-right axis, so such a scan is turned 180 degrees about the long axis before either happens. A mirror
image (a left-right flip alone) cannot be told from anatomy this way and is not corrected.
"""

from __future__ import annotations

import numpy as np

BONE_HU = 200.0
SPINE_MARGIN_MM = 15.0  # supine chest CTs put the bone between the lungs 33-51 mm behind the lungs' centre
CENTRAL_BAND = 0.3  # of the lungs' width on each side of the middle: the mediastinum, where spine and sternum lie


def spine_offset_mm(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> float | None:
    """How far behind the lungs' centre (mm, canonical P axis) the bone between the lungs lies, in the middle half
    of the lung slices; None without lungs or bone. The vertebral bodies outweigh the sternum many times."""
    per_row = lungs.sum(axis=2, dtype=np.int32)  # (S, P) lung voxels per row: one pass over the mask
    slices = np.flatnonzero(per_row.any(axis=1))
    if slices.size < 4:
        return None
    middle = slices[slices.size // 4: 3 * slices.size // 4]
    rows = np.flatnonzero(per_row.any(axis=0))
    columns = np.flatnonzero(lungs[slices[0]:slices[-1] + 1].any(axis=(0, 1)))
    centre, half = (columns[0] + columns[-1]) / 2, CENTRAL_BAND * (columns[-1] - columns[0])
    band = hu[:, rows[0]:rows[-1] + 1, int(centre - half):int(centre + half) + 1][middle]
    bone_per_row = (band > BONE_HU).sum(axis=(0, 2))
    if not bone_per_row.any():
        return None
    lung_per_row = per_row[middle].sum(axis=0)
    return float((_mean_index(bone_per_row) + rows[0] - _mean_index(lung_per_row)) * spacing[1])


def _mean_index(counts: np.ndarray) -> float:
    """The mean position of the items counted per index (exact: integer sums)."""
    return float(counts @ np.arange(counts.size) / counts.sum())


def faces_down(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> bool:
    """True when the spine lies clearly in front of the lungs: the canonical view shows the patient upside down."""
    offset = spine_offset_mm(hu, lungs, spacing)
    return offset is not None and offset < -SPINE_MARGIN_MM
