"""One study, start to finish, with a model loaded once per worker: skip it if done, else segment it, and say how it
went as one summary row. Nothing here raises for a bad study: its row carries the one-line message."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..allocator import keep_freed_memory
from ..errors import LightSegError
from ..io import remove_stale_temporaries, write_atomically
from ..read_ahead import ReadAhead, start_reading
from .studies import Study, fingerprint, output_paths

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
REGION_COLUMNS = tuple(f"{side}_{region}" for side in ("right", "left")
                       for region in ("upper", "middle", "lower", "posterior", "peripheral", "high_opacity"))
PATTERN_COLUMNS = ("ground_glass_ml", "consolidation_ml")
COLUMNS = ("id", "status", "infection_ml", *PATTERN_COLUMNS, "lung_ml", "right_percent", "left_percent",
           *REGION_COLUMNS, "slices",
           "model_id", "model_sha256", "device", "seconds", "worker_peak_rss_mb", "error")


@dataclass(frozen=True)
class BatchSettings:
    """What every worker needs to build its runner (plain values: they travel to processes and Ray actors)."""

    out_dir: str
    fmt: str = "nrrd"
    model: str | None = None
    device: str = "auto"
    force: bool = False
    threads: int | None = None  # torch threads per worker
    report_pdf: bool = False  # also each study's one-page report, STUDY.pdf beside its mask


def _region_cells(report: dict[str, Any]) -> dict[str, Any]:
    """The regional percents and pattern volumes of a report (empty for a report written before they existed)."""
    cells = {}
    for side in ("right", "left"):
        regions = report.get("regions", {}).get(side) or {}
        for region in ("upper", "middle", "lower"):
            cells[f"{side}_{region}"] = regions.get("zones_percent", {}).get(region, "")
        for region in ("posterior", "peripheral", "high_opacity"):
            cells[f"{side}_{region}"] = regions.get(f"{region}_percent", "")
    patterns = report.get("patterns") or {}
    cells.update({column: patterns.get(column, "") for column in PATTERN_COLUMNS})
    return cells


def row_from_report(study: Study, status: str, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    lungs = report["lungs"]
    return {**_region_cells(report), "id": study.id, "status": status, "infection_ml": report["infection_ml"],
            "lung_ml": report["lung_volume_ml"], "right_percent": lungs["right"]["percent_involved"],
            "left_percent": lungs["left"]["percent_involved"], "slices": report["slices"]["total"],
            "model_id": report["model"]["id"], "model_sha256": report["model"]["weights_sha256"],
            "device": report["device"], "seconds": round(seconds, 2), "error": ""}


def skipped_row(study: Study, settings: BatchSettings, weights_sha256: str) -> dict[str, Any] | None:
    """The study's row if an earlier run already made it with this model, from this very input, in this format
    (its report, written last, says so), else None. Checked before any model is loaded."""
    if settings.force:
        return None
    mask_path, report_path = output_paths(study, Path(settings.out_dir), settings.fmt)
    try:
        if not mask_path.exists():
            return None
        report = json.loads(report_path.read_text())
        made = report["batch"]
        same = (report["model"]["weights_sha256"] == weights_sha256 and made["format"] == settings.fmt
                and made["input_fingerprint"] == fingerprint(study.path))
        return row_from_report(study, SKIPPED, report, 0.0) if same else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def failed_row(study: Study, message: str, seconds: float = 0.0, **known: Any) -> dict[str, Any]:
    return {**{c: "" for c in COLUMNS}, **known, "id": study.id, "status": FAILED, "seconds": round(seconds, 2),
            "error": message}


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class StudyRunner:
    """A model loaded on a device, segmenting studies one at a time into the batch's output tree."""

    def __init__(self, settings: BatchSettings) -> None:
        import torch

        from ..pipeline import make_segmenter

        keep_freed_memory()  # a worker process (local or a Ray actor) is LightSeg's own
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.segmenter = make_segmenter(settings.model, settings.device)
        self._reader = ThreadPoolExecutor(max_workers=1)
        self._ahead: ReadAhead | None = None  # the next study, being read while this one runs
        self.studies_read_ahead = 0  # how many studies came from a read ahead

    def run(self, study: Study, upcoming: Study | None = None) -> dict[str, Any]:
        """Segment one study; never raises for a bad study. The row says how much memory this worker has peaked at.

        ``upcoming`` is the study this runner gets next: it is read (and its lungs found) on a background thread
        while this one runs through the network, which costs the memory of a second volume.
        """
        import resource

        ahead = self._ahead if self._ahead is not None and self._ahead.path == study.path else None
        self.studies_read_ahead += ahead is not None
        if ahead is None and upcoming is not None:
            ahead = start_reading(self._reader, study.path)  # queued first, so the upcoming read waits behind it
        self._ahead = start_reading(self._reader, upcoming.path) if upcoming is not None else None
        row = self._run(study, ahead)
        row["worker_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return row

    def _run(self, study: Study, ahead: ReadAhead | None) -> dict[str, Any]:
        from ..pipeline import SegmentRequest, segment_file

        start = time.perf_counter()
        mask_path, report_path = output_paths(study, Path(self.settings.out_dir), self.settings.fmt)
        try:
            input_fingerprint = fingerprint(study.path)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            page_path = report_path.with_suffix(".pdf") if self.settings.report_pdf else None
            for output in (mask_path, report_path, page_path):
                if output is not None:
                    remove_stale_temporaries(output)
            report_path.unlink(missing_ok=True)  # the report marks a finished study: gone until this one is
            request = SegmentRequest(study.path, mask_path, force=True, report_pdf=page_path)
            outcome = segment_file(request, segmenter=self.segmenter, read_ahead=ahead)
            if outcome.warnings:  # no lungs: an empty mask is no result
                mask_path.unlink(missing_ok=True)
                if page_path is not None:
                    page_path.unlink(missing_ok=True)
                return failed_row(study, outcome.warnings[0], time.perf_counter() - start)
            report = {**outcome.report, "batch": {"study": study.id, "input_fingerprint": input_fingerprint,
                                                  "format": self.settings.fmt}}
            write_atomically(report_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
            return row_from_report(study, DONE, report, time.perf_counter() - start)
        except LightSegError as error:
            return failed_row(study, str(error), time.perf_counter() - start)
        except Exception as error:  # one broken study must not stop the batch; its row says what happened
            return failed_row(study, f"{study.path}: {type(error).__name__}: {_first_line(str(error))}",
                              time.perf_counter() - start)
