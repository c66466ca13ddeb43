"""Slice-level check of a model on the COVID-CT-MD P001 CT against the radiologists' slice labels.

    python scripts/evaluate_p001.py [--model miniseg-covid] [--montage p001-montage.png] [--json result.json]

Prints sensitivity and specificity of "infection predicted on the slice" (at least 20 mm^2) and the ROC AUC of the
predicted infected area per slice, plus the report numbers (infection volume, percent of each lung).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.evaluation import infected_area_per_slice, read_slice_labels, slice_level_agreement  # noqa: E402
from LightSegLib.io import read_image  # noqa: E402
from LightSegLib.montage import write_montage  # noqa: E402
from LightSegLib.report import volume_measurements  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--volume", type=Path, default=DATA / "P001")
    parser.add_argument("--labels", type=Path, default=DATA / "P001_slice_labels.csv")
    parser.add_argument("--montage", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    image = read_image(args.volume).image
    segmenter = Segmenter(registry.resolve(args.model), "cpu")
    result = segmenter.segment_volume(image)
    area, positions = infected_area_per_slice(result, image)
    locations, visible = read_slice_labels(args.labels)
    agreement = slice_level_agreement(area, positions, locations, visible)
    summary = {"model": segmenter.card.id, **agreement, **volume_measurements(result), "timings_s": result.timings}
    print(json.dumps(summary, indent=2))
    if args.montage:
        write_montage(image, result, args.montage)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
