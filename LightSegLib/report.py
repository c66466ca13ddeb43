"""The numbers a radiologist asks for: infection volume, lung volumes, the percent of each lung involved, and
where (``regions.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from .cards import ModelCard
from .engine import Segmentation
from .io import INFECTION
from .lungs import LEFT, RIGHT
from .patterns.pattern_map import PATTERN_NAMES
from .regions import percent, regional_lines, regional_measurements


def volume_measurements(result: Segmentation) -> dict[str, Any]:
    """Infection and lung volumes in mL, per lung and in total, from a volume segmentation."""
    assert result.view is not None and result.lungs is not None
    labels_c = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
    infected = labels_c == INFECTION
    ml = result.view.voxel_volume_mm3 / 1000
    sides = result.lungs.sides
    # counted with count_nonzero over the whole volume (bincount would widen every voxel to int64), and by side
    # over the infection only
    lung_voxels = {RIGHT: np.count_nonzero(sides == RIGHT)}
    lung_voxels[LEFT] = np.count_nonzero(sides) - lung_voxels[RIGHT]
    infected_voxels = np.bincount(sides[infected], minlength=3)
    lungs = {}
    for name, side in (("right", RIGHT), ("left", LEFT)):
        volume, infection = lung_voxels[side] * ml, int(infected_voxels[side]) * ml
        lungs[name] = {"volume_ml": round(volume, 1), "infection_ml": round(infection, 1),
                       "percent_involved": percent(infection, volume)}
    total_lung = lungs["right"]["volume_ml"] + lungs["left"]["volume_ml"]
    infection_ml = float(infected_voxels.sum()) * ml
    return {
        "infection_ml": round(infection_ml, 1),
        "lung_volume_ml": round(total_lung, 1),
        "percent_involved": percent(infection_ml, total_lung),
        "lungs": lungs,
    }


def pattern_measurements(result: Segmentation) -> dict[str, Any]:
    """Ground-glass and consolidation: volumes (mL) and share of the infection, in total and per lung (volumes), or
    pixels (2D slices). The two always add up to the infection."""
    patterns = sitk.GetArrayViewFromImage(result.patterns)
    if result.view is None:
        return {f"{name}_pixels": int(np.count_nonzero(patterns == value)) for value, name in PATTERN_NAMES.items()}
    patterns_c = result.view.to_canonical(patterns)
    ml = result.view.voxel_volume_mm3 / 1000
    infected = patterns_c > 0  # one pass over the volume; the counts below are over the infection only
    by_pattern_and_side = np.bincount(patterns_c[infected].astype(np.int64) * 4 + result.lungs.sides[infected],
                                      minlength=12).reshape(3, 4)
    figures: dict[str, Any] = {f"{name}_ml": round(float(by_pattern_and_side[value].sum()) * ml, 1)
                               for value, name in PATTERN_NAMES.items()}
    infection = figures["ground_glass_ml"] + figures["consolidation_ml"]
    figures["consolidation_percent_of_infection"] = percent(figures["consolidation_ml"], infection)
    for side_name, side in (("right", RIGHT), ("left", LEFT)):
        figures[side_name] = {f"{name}_ml": round(float(by_pattern_and_side[value, side]) * ml, 1)
                              for value, name in PATTERN_NAMES.items()}
    return figures


def slice_measurements(result: Segmentation) -> dict[str, Any]:
    labels = sitk.GetArrayViewFromImage(result.labels)
    pixels = int((labels == INFECTION).sum())
    spacing = result.labels.GetSpacing()
    return {"infection_pixels": pixels, "infection_area_mm2": round(pixels * spacing[0] * spacing[1], 1),
            "infection_fraction": round(pixels / labels.size, 4)}


def build_report(result: Segmentation, card: ModelCard, device: str, input_path: str, note: str = "",
                 timings: dict[str, float] | None = None, image: sitk.Image | None = None) -> dict[str, Any]:
    """The JSON report of ``lightseg segment``; with the input ``image`` of a volume, also the regional figures."""
    measurements = volume_measurements(result) if result.view is not None else slice_measurements(result)
    if image is not None and result.view is not None and result.lungs is not None:
        labels_c = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
        hu_c = result.view.to_canonical(sitk.GetArrayViewFromImage(image))
        measurements["regions"] = regional_measurements(labels_c, result.lungs.sides, hu_c, INFECTION,
                                                        result.view.spacing)
    if result.patterns is not None:
        measurements["patterns"] = pattern_measurements(result)
    all_timings = {**(timings or {}), **result.timings}
    return {
        "input": input_path,
        "input_note": note,
        "model": {"id": card.id, "version": card.version, "architecture": card.architecture,
                  "weights_sha256": card.weights_sha256, "test_time_flips": list(result.test_time_flips),
                  "network_form": result.network_form},
        "postprocessing": result.postprocessing,
        "notes": list(result.notes),
        "device": device,
        "slices": {"total": result.slices_total, "with_lung": result.slices_segmented},
        **measurements,
        "timings_s": {k: round(v, 3) for k, v in all_timings.items()},
    }


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Short human-readable lines for the terminal (and the Slicer results table)."""
    if "lungs" not in report:
        return [f"infection: {report['infection_pixels']} pixels ({100 * report['infection_fraction']:.1f} % of the image)"]
    lines = [f"infection: {report['infection_ml']:.1f} mL, {report['percent_involved']:.1f} % of "
             f"{report['lung_volume_ml']:.0f} mL of lung"]
    patterns = report.get("patterns")
    if patterns:
        lines.append(f"patterns: ground-glass {patterns['ground_glass_ml']:.1f} mL, consolidation "
                     f"{patterns['consolidation_ml']:.1f} mL ({patterns['consolidation_percent_of_infection']:.0f} % "
                     "of the infection)")
    for side in ("right", "left"):
        lung = report["lungs"][side]
        lines.append(f"{side} lung: {lung['volume_ml']:.0f} mL, {lung['infection_ml']:.1f} mL infected "
                     f"({lung['percent_involved']:.1f} %)")
    return lines + (regional_lines(report["regions"]) if "regions" in report else [])
