"""What LightSeg does with real-world CT variants of a real scan: the README's variants table.

    python benchmarks/variant_benchmark.py [--case P001] [--model ID] [--keep DIR]

Builds each variant of ``Testing/ct_variants.py`` from the shared DICOM series, segments it as ``lightseg segment``
does (one loaded model), and prints per variant: what LightSeg did, infection Dice against the unaltered scan on the
voxels both cover, and each lung's volume against the unaltered scan where the variant keeps the lungs whole.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "Testing")]

from ct_variants import VARIANTS, evaluate, load_scan  # noqa: E402

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.pipeline import SegmentRequest, segment_file  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="P001")
    parser.add_argument("--model", default=None)
    parser.add_argument("--keep", type=Path, help="write the corpus and results here instead of a temporary folder")
    parser.add_argument("--only", nargs="*", help="variant names")
    args = parser.parse_args()

    segmenter = Segmenter(registry.resolve(args.model), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        unaltered = segment_file(SegmentRequest(DATA / args.case, work / "unaltered.nrrd", force=True),
                                 segmenter=segmenter)
        lungs = sitk.GetArrayViewFromImage(unaltered.result.labels) > 0
        scan = load_scan(DATA / args.case, lungs)
        print(f"{args.case}, model {segmenter.card.id} {segmenter.card.version}; unaltered: "
              f"{unaltered.report['infection_ml']:.1f} mL infection, lungs "
              f"{unaltered.report['lungs']['right']['volume_ml']:.0f} / {unaltered.report['lungs']['left']['volume_ml']:.0f} mL")
        print("| variant | what LightSeg does | infection Dice | lung volume (variant / unaltered, R / L) | s |")
        print("|---|---|---|---|---|")
        for variant in VARIANTS:
            if args.only and variant.name not in args.only:
                continue
            folder = work / variant.name
            shutil.rmtree(folder, ignore_errors=True)  # a kept corpus from an earlier run
            folder.mkdir()
            tic = time.perf_counter()
            outcome = evaluate(variant, scan, unaltered.result.labels, unaltered.report, segmenter, folder)
            if outcome.refused:
                did = f"refuses (exit 2): \"{outcome.refused.split(': ', 1)[1]}\""
                dice = volumes = "-"
            else:
                notes = outcome.report["notes"] + [n for n in outcome.report["input_note"].split("; ")[2:]]
                did = "segments" + (f" ({'; '.join(notes)})" if notes else "")
                dice = f"{outcome.dice:.3f}"
                volumes = ("lungs cut" if outcome.lung_ml_ratio is None else
                           " / ".join(f"{outcome.lung_ml_ratio[s]:.3f}" for s in ("right", "left")))
            print(f"| {variant.name}: {variant.description} | {did} | {dice} | {volumes} | "
                  f"{time.perf_counter() - tic:.1f} |", flush=True)


if __name__ == "__main__":
    main()
