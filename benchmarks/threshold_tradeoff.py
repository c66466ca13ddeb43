"""False positives against sensitivity as the infection threshold moves, on every HU CT of the volume benchmark.

    python benchmarks/threshold_tradeoff.py --models miniseg-covid CARD.json --thresholds 0.3 0.4 0.5 0.6

Each row is one model at one threshold (the engine's probability cut; everything else as shipped, the 3D clean-up
included). Labelled CTs: slice AUC / sensitivity / specificity (infection mL); CTs without infection: the
false-positive mL (more than 10 mm from an annotated lesion where there is an outline). ``t``: the model was trained
on that CT, so the figure is not evidence.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from volume_benchmark import DATA, load_cases, score_case  # noqa: E402


def cell_text(cell: dict) -> str:
    """One table cell: the labelled CT's slice figures, or the CT without infection's false positives."""
    mark = "t " if cell["trained_on"] else ""
    if "auc" in cell:
        return (f"{mark}{cell['auc']:.3f} / {cell['sensitivity']:.3f} / {cell['specificity']:.3f} "
                f"({cell['infection_ml']:.1f})")
    return f"{mark}{cell['false_positive_ml']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="model ids or card paths")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.3, 0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--cases", nargs="+", help="case folder names (default: every case)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    cases = load_cases(args.cases, args.data)
    print("| model | threshold | " + " | ".join(case.name for case in cases) + " |")
    print("|---|---|" + "---|" * len(cases))
    for model in args.models:
        segmenter = Segmenter(registry.resolve(model), "cpu")
        for threshold in args.thresholds:
            segmenter.threshold = threshold
            cells = [score_case(segmenter, case)[1] for case in cases]
            print(f"| {Path(model).stem} | {threshold:g} | " + " | ".join(cell_text(c) for c in cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
