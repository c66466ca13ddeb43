"""Where in each lung the infection lies, and how dense it is: the regional figures radiologists report.

Per lung, the percent of that region's lung volume that is infected:
- zones: the upper, middle and lower third of that lung's craniocaudal extent (its own first to last slice);
- anterior and posterior: the halves of that lung's anteroposterior extent, over the whole lung;
- peripheral and central: peripheral is within ``PERIPHERAL_MM`` of the lung's surface in its axial slice (where it
  meets the chest wall, the mediastinum or the other lung), central the rest;
- high opacity: infection denser than ``HIGH_OPACITY_HU`` as a percent of the lung (Chaganti et al., Radiology: AI
  2020, "percentage of high opacity"), needing no network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .lungs import LEFT, RIGHT
from .slice_morphology import dilate_slices

PERIPHERAL_MM = 20.0
HIGH_OPACITY_HU = -200.0
WORKING_SPACING_MM = 1.5  # the peripheral band is drawn at about this in-plane spacing, then brought back
DEFINITIONS = {
    "zones": "thirds of each lung's own craniocaudal extent",
    "anterior_posterior": "halves of each lung's own anteroposterior extent",
    "peripheral": f"within {PERIPHERAL_MM:g} mm of the lung's surface in its axial slice",
    "high_opacity": f"infection denser than {HIGH_OPACITY_HU:g} HU, as a percent of the lung",
}


def percent(part: float, whole: float) -> float:
    """``part`` as a percent of ``whole``, to two decimals (0 for an empty whole)."""
    return round(100 * part / whole, 2) if whole > 0 else 0.0


def _thirds(counts: np.ndarray) -> list[slice]:
    """Three equal parts of the extent where ``counts`` (per index along an axis) is non-zero: lower, middle, upper."""
    hits = np.flatnonzero(counts)
    edges = np.ceil(np.linspace(hits[0], hits[-1] + 1, 4)).astype(int)
    return [slice(low, high) for low, high in zip(edges[:-1], edges[1:])]


def _peripheral(lung: np.ndarray, radius: float) -> np.ndarray:
    """Lung voxels within ``radius`` voxels of the lung's surface in their slice (an octagon, close to a disk),
    worked out inside the lung's box grown by the radius (the dilation needs room, not the whole volume)."""
    pad = int(np.ceil(radius)) + 2
    rows, columns = np.flatnonzero(lung.any(axis=(0, 2))), np.flatnonzero(lung.any(axis=(0, 1)))
    box = (slice(None), slice(max(rows[0] - pad, 0), rows[-1] + 1 + pad),
           slice(max(columns[0] - pad, 0), columns[-1] + 1 + pad))
    peripheral = np.zeros(lung.shape, bool)
    peripheral[box] = dilate_slices(~lung[box], radius) & lung[box]
    return peripheral


def regional_measurements(labels_c: np.ndarray, sides: np.ndarray, hu_c: np.ndarray, infection_label: int,
                          spacing: tuple[float, float, float]) -> dict[str, Any]:
    """Per lung: infection percent by zone, anterior/posterior half, peripheral/central, and high opacity.

    All arrays are canonical (S, P, L): S from inferior to superior, P from anterior to posterior. Counted on a grid
    of about WORKING_SPACING_MM in-plane (every second voxel of a 0.75 mm scan): the percentages move by hundredths."""
    step = max(1, int(round(WORKING_SPACING_MM / max(min(spacing[1:]), 1e-3))))
    infected = labels_c[:, ::step, ::step] == infection_label
    dense = hu_c[:, ::step, ::step] > HIGH_OPACITY_HU
    radius = PERIPHERAL_MM / (min(spacing[1:]) * step)
    result: dict[str, Any] = {}
    for name, side in (("right", RIGHT), ("left", LEFT)):
        lung = sides[:, ::step, ::step] == side
        if not lung.any():
            result[name] = {}
            continue
        sick = lung & infected
        lung_zy, sick_zy = lung.sum(axis=2, dtype=np.int32), sick.sum(axis=2, dtype=np.int32)  # one pass each
        lung_z, sick_z = lung_zy.sum(axis=1), sick_zy.sum(axis=1)
        lung_y, sick_y = lung_zy.sum(axis=0), sick_zy.sum(axis=0)
        lower, middle, upper = _thirds(lung_z)
        rows = np.flatnonzero(lung_y)
        half = int(np.ceil((rows[0] + rows[-1] + 1) / 2))
        peripheral = _peripheral(lung, radius)
        lung_peripheral, sick_peripheral = np.count_nonzero(peripheral), np.count_nonzero(peripheral & sick)
        result[name] = {
            "zones_percent": {zone: percent(int(sick_z[part].sum()), int(lung_z[part].sum()))
                              for zone, part in (("upper", upper), ("middle", middle), ("lower", lower))},
            "anterior_percent": percent(int(sick_y[:half].sum()), int(lung_y[:half].sum())),
            "posterior_percent": percent(int(sick_y[half:].sum()), int(lung_y[half:].sum())),
            "peripheral_percent": percent(sick_peripheral, lung_peripheral),
            "central_percent": percent(int(sick_z.sum()) - sick_peripheral, int(lung_z.sum()) - lung_peripheral),
            "high_opacity_percent": percent(np.count_nonzero(sick & dense), int(lung_z.sum())),
        }
    result["definitions"] = DEFINITIONS
    return result


def regional_lines(regions: dict[str, Any]) -> list[str]:
    """Terminal lines: one per lung."""
    lines = []
    for name in ("right", "left"):
        lung = regions.get(name) or {}
        if not lung:
            continue
        zones = lung["zones_percent"]
        lines.append(f"{name} lung by region: upper {zones['upper']:.1f} %, middle {zones['middle']:.1f} %, lower "
                     f"{zones['lower']:.1f} %; anterior {lung['anterior_percent']:.1f} %, posterior "
                     f"{lung['posterior_percent']:.1f} %; peripheral {lung['peripheral_percent']:.1f} %, central "
                     f"{lung['central_percent']:.1f} %; high opacity {lung['high_opacity_percent']:.1f} % of the lung")
    return lines
