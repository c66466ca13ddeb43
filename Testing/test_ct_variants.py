"""Real-world CT variants of P001 (``ct_variants.py``): each is segmented in agreement with the unaltered scan, or
refused with one line, exit code 2 and nothing written. The figures are in the README's variants table
(``benchmarks/variant_benchmark.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import P001_DICOM, run_cli
from ct_variants import VARIANTS, evaluate, load_scan, reference_on_variant_grid, sides_on_grid

MIN_DICE = 0.9
LUNG_VOLUME_TOLERANCE = 0.05
# Measured below the 0.9 target with miniseg-covid 1.7.0 (README, "CT variants"): the network calls ground-glass
# differently when it sees a cut field of view (0.85) or 5 mm slab-averaged slices (0.80). These bounds catch a
# regression from there; they are not the target.
MEASURED_BELOW_TARGET = {"fov-lateral": 0.82, "slices-5mm": 0.77}
SEGMENTED = [v for v in VARIANTS if v.expect == "segment"]
REFUSED = [v for v in VARIANTS if v.expect == "refuse"]


@pytest.fixture(scope="module")
def unaltered(tmp_path_factory):
    from LightSegLib import registry
    from LightSegLib.engine import Segmenter
    from LightSegLib.pipeline import SegmentRequest, segment_file

    segmenter = Segmenter(registry.resolve(None), "cpu")
    folder = tmp_path_factory.mktemp("unaltered")
    outcome = segment_file(SegmentRequest(P001_DICOM, folder / "P001.nrrd"), segmenter=segmenter)
    scan = load_scan(P001_DICOM, sitk.GetArrayViewFromImage(outcome.result.labels) > 0)
    return segmenter, scan, outcome


@pytest.mark.parametrize("variant", SEGMENTED, ids=[v.name for v in SEGMENTED])
def test_variant_is_segmented_like_the_unaltered_scan(variant, unaltered, tmp_path):
    segmenter, scan, reference = unaltered
    outcome = evaluate(variant, scan, reference.result.labels, reference.report, segmenter, tmp_path)
    assert not outcome.refused, outcome.refused
    assert outcome.dice >= MEASURED_BELOW_TARGET.get(variant.name, MIN_DICE), outcome.dice
    if variant.lungs_whole:
        for side, ratio in outcome.lung_ml_ratio.items():
            assert abs(ratio - 1) <= LUNG_VOLUME_TOLERANCE, (side, ratio)
    assert variant.note in outcome.report["input_note"]
    cut = [n for n in outcome.report["notes"] if "run out of the field of view" in n]
    assert bool(cut) == (not variant.lungs_whole), outcome.report["notes"]
    turned = [n for n in outcome.report["notes"] if "turned 180 degrees" in n]
    assert bool(turned) == variant.turned_in_scanner_frame


@pytest.mark.parametrize("name", ["prone-patient-frame", "prone-scanner-frame"])
def test_a_prone_patient_keeps_right_and_left(name, unaltered, tmp_path):
    """The patient's right lung is named right whether the header (patient frame) or the anatomy (scanner frame)
    says where it is; compared voxel by voxel with the unaltered scan's sides brought onto the variant's grid."""
    from LightSegLib.lungs import LEFT, RIGHT
    from LightSegLib.pipeline import SegmentRequest, segment_file

    segmenter, scan, reference = unaltered
    variant = next(v for v in VARIANTS if v.name == name)
    source = variant.make(scan, tmp_path)
    result = segment_file(SegmentRequest(source, tmp_path / "out.nrrd"), segmenter=segmenter).result
    sides_reference = sitk.GetImageFromArray(np.ascontiguousarray(sides_on_grid(reference.result)))
    sides_reference.CopyInformation(reference.result.labels)
    expected = reference_on_variant_grid(sides_reference, variant, result.labels)
    found = sides_on_grid(result)
    for side in (RIGHT, LEFT):
        assert (found[expected == side] == side).mean() > 0.95


@pytest.mark.parametrize("variant", REFUSED, ids=[v.name for v in REFUSED])
def test_variant_is_refused_in_one_line(variant, unaltered, tmp_path):
    _, scan, _ = unaltered
    source = variant.make(scan, tmp_path)
    output, report = tmp_path / "out.nrrd", tmp_path / "out.json"
    result = run_cli("segment", source, "-o", output, "--report", report)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lightseg: error: {source}: "), result.stderr
    assert variant.refusal in lines[0]
    assert not output.exists() and not report.exists()
    assert not list(tmp_path.glob(".out*"))
