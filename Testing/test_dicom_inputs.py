"""DICOM inputs as archives hold them: study and patient folders, DICOMDIR exports, several series (issue 46, part 1)."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from conftest import P001_DICOM, run_cli
from LightSegLib.batch.studies import find_studies
from LightSegLib.dicom_series import choose_series, kernel_rank
from LightSegLib.errors import LightSegError

P001_FILES = sorted(P001_DICOM.iterdir())


def copy_series(target: Path, every: int = 1, number: int = 7, kernel: str | None = None,
                study_uid: str | None = None, count: int | None = None) -> str:
    """P001's headers and pixels under a new series: every ``every``-th slice (or the first ``count``), with a series
    number, a kernel name and a study UID of our choosing. Returns the new SeriesInstanceUID."""
    target.mkdir(parents=True)
    uid = generate_uid()
    ordered = sorted(P001_FILES, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    for path in ordered[:count][::every]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SOPInstanceUID = uid, number, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if kernel is not None:
            ds.ConvolutionKernel = kernel
        if study_uid is not None:
            ds.StudyInstanceUID = study_uid
        ds.save_as(target / path.name)
    return uid


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A TCIA-like patient/study/series tree with three reconstructions of one chest CT: 2 mm soft (B30f), 2 mm lung
    (B70f), 4 mm lung, and a partial 2 mm lung series covering a third of the chest."""
    root = tmp_path_factory.mktemp("archive") / "patient-1"
    study_uid = generate_uid()
    uids = {name: copy_series(root / "study-1" / name, every, number, kernel, study_uid, count)
            for name, every, number, kernel, count in (("soft-2mm", 1, 2, "B30f", None), ("lung-2mm", 1, 3, "B70f", None),
                                                      ("lung-4mm", 2, 4, "B70f", None), ("lung-part", 1, 5, "B70f", 50))}
    return root, uids


def test_the_rule_picks_the_whole_chest_finest_sharpest_series_and_names_the_others(study):
    root, uids = study
    choice = choose_series(root)
    assert choice.uid == uids["lung-2mm"]
    note = "; ".join(choice.notes)
    assert "chosen of 4 series by the rule" in note and "kernel B70f" in note
    assert all(f"series {n}" in note for n in (2, 3, 4, 5))


def test_kernel_names_are_ranked_sharp_unknown_soft():
    assert [kernel_rank(k) for k in ("LUNG", "B70f", "Br64", "BONEPLUS", "FC51", "X1", "STANDARD", "B30f", "SOFT", "FC08")] == \
        [0, 0, 0, 0, 0, 1, 2, 2, 2, 2]


def test_series_option_overrides_the_rule_and_an_unknown_one_is_one_line(study, tmp_path):
    root, uids = study
    assert choose_series(root, "2").uid == uids["soft-2mm"]
    assert choose_series(root, uids["lung-4mm"]).uid == uids["lung-4mm"]
    with pytest.raises(LightSegError, match="no series '9' here"):
        choose_series(root, "9")
    result = run_cli("segment", root, "-o", tmp_path / "x.nrrd", "--series", "9")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.nrrd").exists()


def test_segment_takes_a_patient_folder_and_a_dicomdir_with_the_same_result(study, tmp_path):
    root, uids = study
    export = tmp_path / "cd"
    fileset = FileSet()
    for path in sorted((root / "study-1" / "lung-2mm").iterdir()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(export)
    outputs = {}
    for name, source in (("patient", root), ("series", root / "study-1" / "lung-2mm"), ("dicomdir", export / "DICOMDIR"),
                         ("cd", export)):
        outputs[name] = tmp_path / f"{name}.nrrd"
        result = run_cli("segment", source, "-o", outputs[name], "--report", tmp_path / f"{name}.json")
        assert result.returncode == 0, result.stderr
    import SimpleITK as sitk

    arrays = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for name, path in outputs.items()}
    assert all(np.array_equal(arrays["series"], array) for array in arrays.values())
    assert uids["lung-2mm"] in (tmp_path / "patient.json").read_text()


def test_batch_counts_a_study_with_several_series_once(study, tmp_path):
    root, _ = study
    archive = tmp_path / "archive"
    shutil.copytree(root, archive / "patient-1")
    copy_series(archive / "patient-2" / "study-9" / "only", count=20)  # another study: stays its own
    ids = [s.id for s in find_studies(archive)]
    assert ids == ["patient-1/study-1", "patient-2/study-9/only"]
