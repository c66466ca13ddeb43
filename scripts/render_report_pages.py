"""Render the one-page report of P001 and cap002 to PNG for the documentation (`Documentation/report-page-*.png`).

    python scripts/render_report_pages.py

The same page `lightseg segment --report-pdf` writes, from the same code path, saved as a PNG.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib.pipeline import SegmentRequest, segment_file  # noqa: E402
from LightSegLib.report_page import render_page  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"

for case in ("P001", "cap002"):
    with tempfile.TemporaryDirectory() as folder:
        outcome = segment_file(SegmentRequest(DATA / case, Path(folder) / "labels.nrrd", device="cpu"))
    page = render_page(outcome.image, outcome.result, outcome.report, f"Input: {case}")
    path = REPO / "Documentation" / f"report-page-{case}.png"
    page.save(path, optimize=True)
    print(f"wrote {path}")
