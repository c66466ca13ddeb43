"""What the Slicer module needs from LightSegLib, without importing Slicer: geometry, table rows, terminology.

Slicer volume nodes give a (k, j, i) array and a 4x4 IJK-to-RAS matrix; SimpleITK works in LPS. The conversion
between the two is the only geometry the module does, and it lives here so that it is tested outside Slicer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk

from .io import segments_of

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def image_from_ras_array(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    """A SimpleITK image of a Slicer volume array (k, j, i) with the geometry of its IJK-to-RAS matrix."""
    ijk_to_lps = RAS_TO_LPS @ np.asarray(ijk_to_ras, float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    return image


def ijk_to_ras_of(image: sitk.Image) -> np.ndarray:
    """The IJK-to-RAS matrix of a SimpleITK image (what a Slicer volume node of it would have)."""
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())[None, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return RAS_TO_LPS @ ijk_to_lps


def terminology_entry(terminology: dict[str, Any]) -> str:
    """Slicer's terminology entry string: context~category~type~modifier~anatomic context~region~region modifier."""
    def code(key: str) -> str:
        return "^".join(terminology.get(key, ["", "", ""]))

    return "~".join([terminology.get("contextName", ""), code("category"), code("type"), code("typeModifier"),
                     terminology.get("anatomicContextName", ""), code("anatomicRegion"),
                     code("anatomicRegionModifier")])


def segment_specs(with_patterns: bool = False) -> list[dict[str, Any]]:
    """The segments LightSeg creates: id, name, colour and terminology entry ("Lungs", "Infection", and with a
    pattern model "Ground-glass opacity" and "Consolidation"); their voxels come from ``io.segment_masks``."""
    return [{"id": s["id"], "name": s["name"], "color": tuple(s["color"]),
             "terminology": terminology_entry(s["terminology"])} for s in segments_of(with_patterns)]


def results_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, unit) rows of the results table, from a ``lightseg segment`` report."""
    rows = [("Infection volume", f"{report['infection_ml']:.1f}", "mL"),
            ("Lung volume", f"{report['lung_volume_ml']:.0f}", "mL"),
            ("Lungs involved", f"{report['percent_involved']:.1f}", "%")]
    patterns = report.get("patterns")
    if patterns:
        rows += [("Ground-glass opacity volume", f"{patterns['ground_glass_ml']:.1f}", "mL"),
                 ("Consolidation volume", f"{patterns['consolidation_ml']:.1f}", "mL"),
                 ("Consolidation share of the infection", f"{patterns['consolidation_percent_of_infection']:.0f}", "%")]
    for side in ("right", "left"):
        lung = report["lungs"][side]
        name = side.capitalize()
        rows += [(f"{name} lung volume", f"{lung['volume_ml']:.0f}", "mL"),
                 (f"{name} lung infection", f"{lung['infection_ml']:.1f}", "mL"),
                 (f"{name} lung involved", f"{lung['percent_involved']:.1f}", "%")]
        regions = report.get("regions", {}).get(side) or {}
        if regions:
            rows += [(f"{name} lung {zone} zone involved", f"{value:.1f}", "%")
                     for zone, value in regions["zones_percent"].items()]
            rows += [(f"{name} lung {part} involved", f"{regions[part + '_percent']:.1f}", "%")
                     for part in ("anterior", "posterior", "peripheral", "central")]
            rows.append((f"{name} lung high opacity (> -200 HU)", f"{regions['high_opacity_percent']:.1f}", "%"))
    rows += [("Model", f"{report['model']['id']} {report['model']['version']}", ""),
             ("Device", report["device"], ""),
             ("Time", f"{sum(v for k, v in report['timings_s'].items() if k != 'total'):.2f}", "s")]
    rows += [("Note", note, "") for note in report.get("notes", [])]  # a cut field of view, a prone patient turned
    return rows


def rows_as_tsv(rows: list[tuple[str, str, str]]) -> str:
    """Tab-separated text for the clipboard (pastes into a spreadsheet or a report)."""
    return "\n".join("\t".join(row) for row in [("Measure", "Value", "Unit"), *rows]) + "\n"
