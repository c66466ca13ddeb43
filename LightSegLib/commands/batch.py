"""``lightseg batch``: segment every study of a folder tree or manifest, resumably, locally or on a Ray cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import LightSegError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..batch.studies import FORMATS

    p = sub.add_parser("batch", help="segment every CT of a folder tree or CSV manifest (resumable; local or Ray)")
    p.add_argument("input", type=Path, help="a folder tree (every volume file and DICOM series folder is a study) "
                                            "or a CSV manifest with id,path columns")
    p.add_argument("-o", "--output-dir", type=Path, required=True,
                   help="masks and JSON reports, mirroring the input layout, and summary.csv")
    p.add_argument("--workers", type=int, help="local worker processes, each with its model (default: the cores)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster instead (an address, or auto)")
    p.add_argument("--model", help="model id or card path (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (local workers)")
    p.add_argument("--format", default="nrrd", choices=FORMATS, help="mask format (dcm: DICOM Segmentation, for "
                                                                     "DICOM series studies)")
    p.add_argument("--report-pdf", action="store_true",
                   help="also write each study's one-page report (STUDY.pdf beside its mask; CT volumes)")
    p.add_argument("--progress-json", action="store_true", help="one JSON line per finished study on stdout")
    p.add_argument("--force", action="store_true", help="redo every study, even those already done")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every study is done or skipped, 1 when any failed (its row says why), 2 for bad usage."""
    from tqdm import tqdm

    from .. import registry
    from ..batch.job import DONE, FAILED, SKIPPED, BatchSettings, failed_row, skipped_row
    from ..batch.studies import find_studies
    from ..batch.summary import write_summary

    studies = find_studies(args.input)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise LightSegError("the output folder is a file", args.output_dir)
    if args.workers is not None and args.workers < 1:
        raise LightSegError("--workers must be at least 1", args.workers)
    card_path = registry.card_path(args.model)  # an unknown model is one line now, not a failed row per study
    try:
        weights_sha256 = json.loads(card_path.read_text())["weights_sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise LightSegError(f"not a valid LightSeg model card ({type(exc).__name__})", card_path) from None
    args.output_dir.mkdir(parents=True, exist_ok=True)
    workers = args.workers or os.cpu_count() or 1
    settings = BatchSettings(str(args.output_dir), args.format, args.model, args.device, args.force,
                             threads=max(1, (os.cpu_count() or 1) // workers), report_pdf=args.report_pdf)
    rows: dict[str, dict] = {}
    bar = tqdm(total=len(studies), unit="study", disable=not sys.stderr.isatty())

    def on_row(row: dict) -> None:
        rows[row["id"]] = row
        bar.update(1)
        if args.progress_json:
            print(json.dumps(row), flush=True)

    try:
        to_do = []
        for study in studies:  # done before with this model and input: skipped without loading any model
            row = skipped_row(study, settings, weights_sha256)
            if row is None:
                to_do.append(study)
            else:
                on_row(row)
        if to_do and args.ray:
            from ..batch.ray_backend import run_ray

            run_ray(to_do, settings, args.ray, on_row)
        elif to_do:
            from ..batch.local import run_local

            run_local(to_do, settings, min(workers, len(to_do)), on_row)
    finally:
        bar.close()
        for study in studies:  # interrupted: what did not finish is a failed row, and the summary is still written
            rows.setdefault(study.id, failed_row(study, f"{study.path}: not run (the batch was interrupted)"))
        paths = write_summary(list(rows.values()), args.output_dir)
    failed = sum(row["status"] == FAILED for row in rows.values())
    counts = {status: sum(row["status"] == status for row in rows.values()) for status in (DONE, SKIPPED)}
    print(f"{len(studies)} studies: {counts[DONE]} done, {counts[SKIPPED]} skipped, {failed} failed; "
          f"summary: {', '.join(map(str, paths))}", file=sys.stderr)
    return 1 if failed else 0
