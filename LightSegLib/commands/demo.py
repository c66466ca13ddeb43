"""``lightseg demo``: segment the bundled sample CT."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LightSegError
from ..defaults import DEFAULT_MODEL
from .common import progress_bar, startup_imports


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled sample CT and write a mask, a report and a montage")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("demo-output"))
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="overwrite earlier demo output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with startup_imports():
        from ..montage import write_montage
        from ..pipeline import SegmentRequest, segment_file
        from ..report import summary_lines
        from ..sample import sample_path

    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir
    montage = out / "sample-montage.png"
    if montage.exists() and not args.force:
        raise LightSegError("output exists (use --force to overwrite it)", montage)
    request = SegmentRequest(sample_path(), out / "sample-infection.seg.nrrd", args.model, args.device,
                             report=out / "sample-report.json", force=args.force)
    update, close = progress_bar("segmenting the sample")
    try:
        outcome = segment_file(request, progress=update)
    finally:
        close()
    write_montage(outcome.image, outcome.result, montage)
    print(f"sample: {request.input}")
    for line in summary_lines(outcome.report):
        print(line)
    for label, path in (("segmentation", request.output), ("report", request.report), ("montage", montage)):
        print(f"{label}: {path}")
    return 0
