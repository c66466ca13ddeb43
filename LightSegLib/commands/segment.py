"""``lightseg segment``: segment lung infection in a CT volume, DICOM folder or 2D slice."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import DEFAULT_MODEL
from .common import FLIPS_HELP, parse_flips_option, progress_bar, startup_imports


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment lung infection in a CT volume, DICOM folder or 2D slice")
    p.add_argument("input", type=Path, help="NIfTI, NRRD, MetaImage, a DICOM series, study or patient folder, a "
                   "DICOMDIR, or a PNG/JPG slice")
    p.add_argument("--series", metavar="UID|NUMBER", help="the DICOM series to segment (SeriesInstanceUID or "
                   "SeriesNumber) instead of the one chosen by the rule (see the README)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="label map: .nii.gz, .nrrd, .seg.nrrd or .mha (volumes), .png (slices); .dcm: a DICOM "
                        "Segmentation of a DICOM series input")
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--probabilities", type=Path, help="also write the network's infection probability (.npy or image)")
    p.add_argument("--report", type=Path, help="also write a JSON report (volumes, percent per lung, timings)")
    p.add_argument("--report-sr", type=Path, metavar="PATH.dcm",
                   help="also write a DICOM measurement report (TID 1500) referencing the -o .dcm Segmentation")
    p.add_argument("--report-pdf", type=Path, metavar="PATH.pdf",
                   help="also write the one-page report: slices, a coronal view, the numbers, the model")
    p.add_argument("--report-pdf-dcm", type=Path, metavar="PATH.dcm",
                   help="also write that page as a DICOM Encapsulated PDF in the source's study (DICOM input)")
    p.add_argument("--patterns", type=Path, metavar="PATH",
                   help="also write the pattern map: 0 none, 1 ground-glass opacity, 2 consolidation (an image on "
                        "the input's grid: .nii.gz, .nrrd or .mha; .png for a 2D slice)")
    p.add_argument("--batch-size", type=int, help="slices per network batch")
    p.add_argument("--test-time-flips", metavar="FLIPS", help=FLIPS_HELP)
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..io import check_series_option, dicom_series, is_dicom_input
    from ..read_ahead import start_reading

    # Decode the input and find its lungs while torch is imported and the model loaded (1.5-2 s): SimpleITK, numpy
    # and scipy release the GIL, so they overlap. A DICOM folder's headers are parsed first, here: pydicom is Python
    # and would share the GIL with the imports (0.1 s alone, 0.8 s beside them). The lung mask does not depend on
    # the model.
    flips = parse_flips_option(args.test_time_flips)
    check_series_option(args.input, args.series)
    series = dicom_series(args.input, args.series) if is_dicom_input(args.input) else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = start_reading(pool, args.input, series)
        with startup_imports():
            from ..pipeline import SegmentRequest, segment_file
            from ..report import summary_lines

        request = SegmentRequest(args.input, args.output, args.model, args.device, args.probabilities, args.report,
                                 args.force, args.batch_size, flips, args.report_sr, args.series, args.report_pdf,
                                 args.report_pdf_dcm, args.patterns)
        update, close = progress_bar("segmenting")
        try:
            outcome = segment_file(request, progress=update, read_ahead=reading)
        finally:
            close()
    for line in summary_lines(outcome.report):
        print(line)
    written = " and ".join(str(p) for p in (args.output, args.patterns, args.report_sr, args.report_pdf,
                                            args.report_pdf_dcm) if p is not None)
    print(f"wrote {written} in {outcome.report['timings_s']['total']:.1f} s on {outcome.report['device']}")
    return 0
