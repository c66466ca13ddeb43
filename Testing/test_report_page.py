"""The one-page report: a PDF that names the model, and the same page as a DICOM Encapsulated PDF in the study."""

import shutil
import subprocess
import sys
from pathlib import Path

import pydicom

from conftest import P001_DICOM, SAMPLE, run_cli


def test_pdf_page_of_a_volume_names_the_model(tmp_path):
    result = run_cli("segment", SAMPLE, "-o", tmp_path / "labels.nrrd", "--report-pdf", tmp_path / "page.pdf")
    assert result.returncode == 0, result.stderr
    pdf = (tmp_path / "page.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Count 1" in pdf
    assert "miniseg-covid".encode("utf-16-be") in pdf  # the metadata (PDF text strings are UTF-16)


def test_encapsulated_pdf_lands_in_the_source_study_and_passes_dciodvfy(tmp_path):
    result = run_cli("segment", P001_DICOM, "-o", tmp_path / "labels.nrrd", "--report-pdf-dcm", tmp_path / "page.dcm")
    assert result.returncode == 0, result.stderr
    document = pydicom.dcmread(tmp_path / "page.dcm")
    source = pydicom.dcmread(next(P001_DICOM.iterdir()), stop_before_pixels=True)
    assert document.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and document.Modality == "DOC"
    assert document.StudyInstanceUID == source.StudyInstanceUID and document.PatientID == source.PatientID
    assert document.SeriesInstanceUID != source.SeriesInstanceUID
    assert document.EncapsulatedDocument.startswith(b"%PDF")
    dciodvfy = shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    checked = subprocess.run([dciodvfy, str(tmp_path / "page.dcm")], capture_output=True, text=True)
    assert "Error" not in checked.stdout + checked.stderr, checked.stderr


def test_an_encapsulated_pdf_needs_a_dicom_input(tmp_path):
    result = run_cli("segment", SAMPLE, "-o", tmp_path / "labels.nrrd", "--report-pdf-dcm", tmp_path / "page.dcm")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "page.dcm").exists() and not (tmp_path / "labels.nrrd").exists()


def test_an_encapsulated_pdf_is_refused_for_a_study_whose_uids_break_the_standard(tmp_path):
    cap002 = P001_DICOM.parent / "cap002"  # its study UID is not a DICOM UID
    result = run_cli("segment", cap002, "-o", tmp_path / "labels.nrrd", "--report-pdf-dcm", tmp_path / "page.dcm")
    assert result.returncode == 2 and "UID" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "page.dcm").exists() and not (tmp_path / "labels.nrrd").exists()
