"""One page a clinician reads at a glance: the most involved axial slices and a coronal view with the segments drawn,
the numbers, the model, the notes, and the line that says it is not a diagnosis. As a PDF, and for PACS as a DICOM
Encapsulated PDF in the source's study."""

from __future__ import annotations

import datetime
import io as bytes_io
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .engine import Segmentation
from .io import INFECTION
from .montage import render_slice
from .patterns.pattern_map import CONSOLIDATION
from .report import summary_lines

PAGE = (1240, 1754)  # A4 at 150 dpi
MARGIN = 60
SLICE_GAP_MM = 15.0
DISCLAIMER = ("Research software, not a diagnosis: every finding must be confirmed by a radiologist on the images. "
              "Infection is what the network calls; ground-glass versus consolidation is an estimate, as good as a "
              "density threshold.")
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PDF_SERIES_NUMBER = 9103
COPIED_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                      "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription")


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(picture: np.ndarray, width: int, height: int) -> Image.Image:
    image = Image.fromarray(picture)
    scale = min(width / image.width, height / image.height)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)


def _most_involved(per_slice: np.ndarray, count: int, gap: int) -> list[int]:
    """Up to ``count`` slices with the most infection, at least ``gap`` slices apart (neighbours look alike)."""
    picks: list[int] = []
    for z in np.argsort(per_slice, kind="stable")[::-1]:
        if all(abs(int(z) - other) >= gap for other in picks):
            picks.append(int(z))
        if len(picks) == count:
            break
    return sorted(picks, reverse=True)  # superior first


def _views(image: sitk.Image, result: Segmentation, count: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``count`` most involved axial slices, at least SLICE_GAP_MM apart, top to bottom, and a coronal view
    through the lungs' middle row, stretched to the slice spacing."""
    assert result.view is not None and result.lungs is not None
    hu = result.view.to_canonical(sitk.GetArrayViewFromImage(image))
    labels = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
    infection, lungs = labels == INFECTION, result.lungs.lungs
    consolidation = (None if result.patterns is None
                     else result.view.to_canonical(sitk.GetArrayViewFromImage(result.patterns)) == CONSOLIDATION)

    def pick(mask: np.ndarray | None, index) -> np.ndarray | None:
        return None if mask is None else mask[index]

    per_slice = infection.sum(axis=(1, 2)) + lungs.any(axis=(1, 2))  # lung slices before empty ones on ties
    picks = _most_involved(per_slice, count, max(1, round(SLICE_GAP_MM / result.view.spacing[0])))
    axial = [render_slice(hu[z], infection[z], lungs[z], pick(consolidation, z)) for z in picks]
    rows = np.flatnonzero(lungs.any(axis=(0, 2)))
    row = int((rows[0] + rows[-1]) // 2) if rows.size else hu.shape[1] // 2
    coronal = render_slice(hu[:, row, :], infection[:, row, :], lungs[:, row, :],
                           pick(consolidation, (slice(None), row)))[::-1]  # superior at the top
    stretch = result.view.spacing[0] / result.view.spacing[2]
    coronal = np.asarray(Image.fromarray(coronal).resize((coronal.shape[1], max(1, round(coronal.shape[0] * stretch)))))
    return axial, coronal


def render_page(image: sitk.Image, result: Segmentation, report: dict[str, Any], title: str) -> Image.Image:
    page = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(page)
    y = MARGIN
    draw.text((MARGIN, y), "LightSeg: lung infection on chest CT", fill="black", font=_font(40))
    y += 60
    model = report["model"]
    draw.text((MARGIN, y), f"{title}    model {model['id']} {model['version']}    "
              f"{datetime.date.today().isoformat()}", fill="black", font=_font(22))
    y += 50
    axial, coronal = _views(image, result)
    width = PAGE[0] - 2 * MARGIN
    tile = (width - 3 * 10) // 4
    for index, picture in enumerate(axial):
        page.paste(_fit(picture, tile, tile), (MARGIN + index * (tile + 10), y))
    y += tile + 20
    coronal_image = _fit(coronal, width // 2, 560)
    page.paste(coronal_image, (MARGIN, y))
    x_text = MARGIN + coronal_image.width + 30
    text_y = y
    for line in summary_lines(report):
        for chunk in _wrap(line, 52):
            draw.text((x_text, text_y), chunk, fill="black", font=_font(20))
            text_y += 28
    y += max(coronal_image.height, text_y - y) + 30
    colours = ("Yellow: ground-glass opacity, red: consolidation" if result.patterns is not None
               else "Red: infection")
    draw.text((MARGIN, y), f"{colours}. Blue outline: lungs. Axial slices: the most infected, top to bottom.",
              fill="black", font=_font(18))
    y += 40
    for note in report.get("notes", []):
        for chunk in _wrap(f"Note: {note}", 100):
            draw.text((MARGIN, y), chunk, fill="black", font=_font(18))
            y += 26
    y = PAGE[1] - MARGIN - 60
    for chunk in _wrap(DISCLAIMER, 100):
        draw.text((MARGIN, y), chunk, fill="darkred", font=_font(20))
        y += 28
    return page


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + ([current] if current else [])


def pdf_bytes(page: Image.Image, report: dict[str, Any]) -> bytes:
    """The page as a one-page PDF; its metadata names the model (the page itself is an image)."""
    model = report["model"]
    buffer = bytes_io.BytesIO()
    page.save(buffer, format="PDF", resolution=150.0, title="LightSeg lung infection report", author="LightSeg",
              subject=f"model {model['id']} {model['version']} ({model['weights_sha256'][:12]})")
    return buffer.getvalue()


def encapsulated_pdf(pdf: bytes, source: pydicom.Dataset, title: str) -> pydicom.Dataset:
    """A DICOM Encapsulated PDF in the source's study (a new series), with the source's patient and study attributes
    and nothing else about the patient."""
    now = datetime.datetime.now()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ENCAPSULATED_PDF
    for keyword in COPIED_FROM_SOURCE:
        setattr(ds, keyword, source.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = PDF_SERIES_NUMBER, 1
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "LightSeg"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds
