"""File in, files out: what ``lightseg segment`` and ``lightseg demo`` do, with every check made before any work."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import io, registry
from .engine import Cancel, Progress, Segmentation, Segmenter
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


@dataclass
class SegmentOutcome:
    report: dict[str, Any]
    result: Segmentation
    image: sitk.Image
    warnings: list[str]


def check_outputs(request: SegmentRequest) -> None:
    io.check_output_path(request.output, io.LABEL_SUFFIXES, request.force)
    if request.probabilities is not None:
        io.check_output_path(request.probabilities, PROBABILITY_SUFFIXES, request.force)
    if request.report is not None:
        io.check_output_path(request.report, (".json",), request.force)
    paths = [p for p in (request.output, request.probabilities, request.report) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise LightSegError("the output, probability and report paths must differ", request.output)


def _write_probabilities(path: Path, probabilities: np.ndarray, reference: sitk.Image) -> None:
    if io.suffix_of(path) == ".npy":
        io.write_atomically(path, lambda tmp: np.save(tmp, probabilities))
    else:
        prob_image = image_from_array(probabilities, reference)
        io.write_atomically(path, lambda tmp: sitk.WriteImage(prob_image, str(tmp), useCompression=True))


def segment_file(request: SegmentRequest, progress: Progress | None = None, cancel: Cancel | None = None,
                 segmenter: Segmenter | None = None, read_ahead: Future[io.LoadedImage] | None = None
                 ) -> SegmentOutcome:
    """Validate, read, segment and write; raises ``LightSegError`` with one line for any bad input.

    ``read_ahead`` is the input already being read (see ``commands/segment.py``); "read" is then the time spent
    waiting for it.
    """
    start = time.perf_counter()
    check_outputs(request)
    segmenter = segmenter or Segmenter(registry.resolve(request.model), request.device, request.batch_size,
                                       request.test_time_flips)
    tic = time.perf_counter()
    loaded = read_ahead.result() if read_ahead is not None else io.read_image(request.input)
    read_seconds = time.perf_counter() - tic
    if loaded.is_2d and io.suffix_of(request.output) == ".seg.nrrd":
        raise LightSegError(".seg.nrrd output is for volumes; use .png for a 2D slice", request.output)
    if not loaded.is_2d and io.suffix_of(request.output) == ".png":
        raise LightSegError("PNG output is for 2D slices; use .nii.gz, .nrrd or .seg.nrrd", request.output)

    shape = sitk.GetArrayViewFromImage(loaded.image).shape
    probabilities = np.zeros(shape, np.float32) if request.probabilities is not None else None
    result = segmenter.segment(loaded.image, loaded.is_2d, progress, cancel, probabilities)
    warnings = []
    if result.lungs is not None and not result.lungs.lungs.any():
        warnings.append(f"{request.input}: no lungs found; the mask is empty")

    tic = time.perf_counter()
    io.write_labels(result.labels, request.output)
    if probabilities is not None:
        _write_probabilities(request.probabilities, probabilities, loaded.image)
    write_seconds = time.perf_counter() - tic
    report = build_report(result, segmenter.card, str(segmenter.device), str(request.input), loaded.note,
                          {"read": read_seconds, "write": write_seconds})
    report["timings_s"]["total"] = round(time.perf_counter() - start, 3)
    report["warnings"] = warnings
    if request.report is not None:
        io.write_atomically(request.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    for warning in warnings:
        print(f"lightseg: warning: {warning}", file=sys.stderr)
    return SegmentOutcome(report, result, loaded.image, warnings)
