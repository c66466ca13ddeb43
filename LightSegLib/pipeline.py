"""File in, files out: what ``lightseg segment`` and ``lightseg demo`` do, with every check made before any work."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import io, registry
from .engine import Cancel, Progress, Segmentation, Segmenter
from .read_ahead import ReadAhead
from .errors import LightSegError
from .geometry import image_from_array
from .report import build_report

PROBABILITY_SUFFIXES = (".npy", ".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class SegmentRequest:
    input: Path
    output: Path
    model: str | None = None
    device: str = "auto"
    probabilities: Path | None = None
    report: Path | None = None
    force: bool = False
    batch_size: int | None = None
    test_time_flips: tuple[str, ...] | None = None  # None: the model card's
    report_sr: Path | None = None  # a DICOM measurement report (needs a .dcm output: the Segmentation it references)
    series: str | None = None  # a DICOM input's series (UID or number) instead of the one the rule picks
    report_pdf: Path | None = None  # the one-page report as a PDF
    report_pdf_dcm: Path | None = None  # the same page as a DICOM Encapsulated PDF in the source's study
    patterns: Path | None = None  # the pattern map: 0 none, 1 ground-glass, 2 consolidation (PNG for a 2D slice)


@dataclass
class SegmentOutcome:
    report: dict[str, Any]
    result: Segmentation
    image: sitk.Image
    warnings: list[str]


def make_segmenter(model: str | None, device: str = "auto", batch_size: int | None = None,
                   test_time_flips: tuple[str, ...] | None = None) -> Segmenter:
    """The infection model (id or card path, the default when None) with the bundled pattern model, as every
    LightSeg front end runs it: ``segment``, ``batch``, ``listen`` and the Slicer module."""
    from .patterns.model import load_pattern_model

    return Segmenter(registry.resolve(model), device, batch_size, test_time_flips, patterns=load_pattern_model())


def check_outputs(request: SegmentRequest) -> None:
    io.check_output_path(request.output, io.LABEL_SUFFIXES + (io.DICOM_SUFFIX,), request.force)
    if request.probabilities is not None:
        io.check_output_path(request.probabilities, PROBABILITY_SUFFIXES, request.force)
    if request.report is not None:
        io.check_output_path(request.report, (".json",), request.force)
    if request.report_sr is not None:
        io.check_output_path(request.report_sr, (io.DICOM_SUFFIX,), request.force)
        if io.suffix_of(request.output) != io.DICOM_SUFFIX:
            raise LightSegError("--report-sr references a DICOM Segmentation: give -o RESULT.dcm too",
                                request.report_sr)
    if request.report_pdf is not None:
        io.check_output_path(request.report_pdf, (".pdf",), request.force)
    if request.report_pdf_dcm is not None:
        io.check_output_path(request.report_pdf_dcm, (io.DICOM_SUFFIX,), request.force)
    if request.patterns is not None:
        io.check_output_path(request.patterns, io.LABEL_SUFFIXES[1:], request.force)
    if (request.report_sr is not None or request.report_pdf_dcm is not None
            or io.suffix_of(request.output) == io.DICOM_SUFFIX):
        if not io.is_dicom_input(request.input):
            raise LightSegError("DICOM outputs need a DICOM series folder as input (there is no source series to "
                                "reference); use .nrrd, .nii.gz or .seg.nrrd", request.input)
    paths = [p for p in (request.output, request.probabilities, request.report, request.report_sr, request.report_pdf,
                         request.report_pdf_dcm, request.patterns) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise LightSegError("the output, probability and report paths must differ", request.output)


def _write_probabilities(path: Path, probabilities: np.ndarray, reference: sitk.Image) -> None:
    if io.suffix_of(path) == ".npy":
        io.write_atomically(path, lambda tmp: np.save(tmp, probabilities))
    else:
        prob_image = image_from_array(probabilities, reference)
        io.write_atomically(path, lambda tmp: sitk.WriteImage(prob_image, str(tmp), useCompression=True))


def _write_dicom(request: SegmentRequest, result: Segmentation, sources: list, report: dict[str, Any],
                 segmenter: Segmenter) -> dict[str, Any]:
    """Build the DICOM Segmentation (and the measurement report, if asked) in memory, then write them."""
    from .dicom_out import build_measurement_report, build_segmentation, write_dataset

    segmentation = build_segmentation(result.labels, sources, segmenter.card, result.patterns)
    written = {"segmentation": {"path": str(request.output), "series_instance_uid": segmentation.SeriesInstanceUID,
                                "sop_instance_uid": segmentation.SOPInstanceUID}}
    measurements = None
    if request.report_sr is not None:
        measurements = build_measurement_report(segmentation, sources, report, segmenter.card)
        written["measurement_report"] = {"path": str(request.report_sr),
                                         "series_instance_uid": measurements.SeriesInstanceUID,
                                         "sop_instance_uid": measurements.SOPInstanceUID}
    write_dataset(segmentation, request.output)
    if measurements is not None:
        write_dataset(measurements, request.report_sr)
    return written


def _write_page(request: SegmentRequest, result: Segmentation, report: dict[str, Any], image: sitk.Image,
                sources: list | None) -> None:
    """The one-page report as a PDF and/or a DICOM Encapsulated PDF in the sources' study (``report_page.py``)."""
    from .dicom_out import write_dataset
    from .report_page import encapsulated_pdf, pdf_bytes, render_page

    pdf = pdf_bytes(render_page(image, result, report, f"Input: {request.input.name}"), report)
    if request.report_pdf is not None:
        io.write_atomically(request.report_pdf, lambda tmp: tmp.write_bytes(pdf))
    if request.report_pdf_dcm is not None and sources:
        write_dataset(encapsulated_pdf(pdf, sources[0], "LightSeg lung infection report"), request.report_pdf_dcm)


def segment_file(request: SegmentRequest, progress: Progress | None = None, cancel: Cancel | None = None,
                 segmenter: Segmenter | None = None, read_ahead: ReadAhead | None = None) -> SegmentOutcome:
    """Validate, read, segment and write; raises ``LightSegError`` with one line for any bad input.

    ``read_ahead`` is the input already being read and its lungs found (``read_ahead.py``); "read" is then the time
    spent waiting for the reading, "lung_mask" the lung mask's own time.
    """
    start = time.perf_counter()
    check_outputs(request)
    segmenter = segmenter or make_segmenter(request.model, request.device, request.batch_size,
                                            request.test_time_flips)
    tic = time.perf_counter()
    io.check_series_option(request.input, request.series)
    if read_ahead is not None:
        loaded = read_ahead.reading.result()
    else:
        choice = io.dicom_series(request.input, request.series) if request.series is not None else None
        loaded = io.read_image(request.input, choice)
    sources = None  # the source series' headers, for outputs that reference it (their UIDs checked here)
    if io.suffix_of(request.output) == io.DICOM_SUFFIX or request.report_pdf_dcm is not None:
        from .dicom_out import read_source_series

        sources = read_source_series(loaded.dicom_files, request.input)  # refused here, before any work
    read_seconds = time.perf_counter() - tic
    if loaded.is_2d and io.suffix_of(request.output) == ".seg.nrrd":
        raise LightSegError(".seg.nrrd output is for volumes; use .png for a 2D slice", request.output)
    if loaded.is_2d and (request.report_pdf or request.report_pdf_dcm):
        raise LightSegError("the one-page report is for CT volumes, not 2D slices", request.report_pdf or
                            request.report_pdf_dcm)
    for output in (request.output, request.patterns):
        if output is not None and not loaded.is_2d and io.suffix_of(output) == ".png":
            raise LightSegError("PNG output is for 2D slices; use .nii.gz, .nrrd or .seg.nrrd", output)
    if request.patterns is not None and loaded.is_2d and io.suffix_of(request.patterns) != ".png":
        raise LightSegError("the pattern map of a 2D slice is a PNG", request.patterns)
    if request.patterns is not None and segmenter.patterns is None:
        raise LightSegError("--patterns needs a pattern model; this segmenter has none", request.patterns)

    shape = sitk.GetArrayViewFromImage(loaded.image).shape
    probabilities = np.zeros(shape, np.float32) if request.probabilities is not None else None
    scan = read_ahead.scanning.result() if read_ahead is not None else None
    result = segmenter.segment(loaded.image, loaded.is_2d, progress, cancel, probabilities, scan)
    warnings = []
    if result.lungs is not None and not result.lungs.lungs.any():
        warnings.append(f"{request.input}: no lungs found; the mask is empty")

    tic = time.perf_counter()
    report = build_report(result, segmenter.card, str(segmenter.device), str(request.input), loaded.note,
                          {"read": read_seconds}, loaded.image)
    report["timings_s"]["report"] = round(time.perf_counter() - tic, 3)  # the regional figures, mostly
    tic = time.perf_counter()
    if io.suffix_of(request.output) == io.DICOM_SUFFIX:
        report["dicom"] = _write_dicom(request, result, sources, report, segmenter)
    else:
        io.write_labels(result.labels, request.output, result.patterns)
    if request.patterns is not None:
        io.write_pattern_map(result.patterns, request.patterns)
    if probabilities is not None:
        _write_probabilities(request.probabilities, probabilities, loaded.image)
    if request.report_pdf is not None or request.report_pdf_dcm is not None:
        _write_page(request, result, report, loaded.image, sources)
    report["timings_s"]["write"] = round(time.perf_counter() - tic, 3)
    report["timings_s"]["total"] = round(time.perf_counter() - start, 3)
    report["warnings"] = warnings
    if request.report is not None:
        io.write_atomically(request.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    for note in result.notes:
        print(f"lightseg: note: {request.input}: {note}", file=sys.stderr)
    for warning in warnings:
        print(f"lightseg: warning: {warning}", file=sys.stderr)
    return SegmentOutcome(report, result, loaded.image, warnings)
