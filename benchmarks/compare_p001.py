"""Models compared on the real P001 CT against its slice labels, with paired block-bootstrap intervals.

    python benchmarks/compare_p001.py --models miniseg-covid build/try/d700/miniseg-covid.json [--json out.json]

Each model segments the P001 volume (`scripts/evaluate_p001.py`'s protocol: a slice counts as predicted infected at
20 mm^2 or more). Printed per model: the ROC AUC of predicted infected area per slice, sensitivity, specificity and
infection volume; then, for every model against the first, the AUC difference with a 95 % interval, the counts of
slices whose call changed, and those slices one by one (position, label, both models' areas). Neighbouring slices
are not independent (a lesion spans several), so the interval resamples blocks of consecutive slices rather than
single slices; the block length is a choice (--block, default 10 slices, 2 cm here) and shorter blocks give
narrower, over-confident intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.evaluation import (MIN_INFECTED_AREA_MM2, area_at_labelled_slices,  # noqa: E402
                                    infected_area_per_slice, read_slice_labels, slice_level_agreement)
from LightSegLib.io import read_image  # noqa: E402
from LightSegLib.metrics import roc_auc  # noqa: E402
from LightSegLib.report import volume_measurements  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"


def score_model(model: str, image, locations: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, dict]:
    """Predicted infected area of each labelled slice (in label order), and the model's row of the table."""
    result = Segmenter(registry.resolve(model), "cpu").segment_volume(image)
    area, positions = infected_area_per_slice(result, image)
    agreement = slice_level_agreement(area, positions, locations, visible)
    row = {"model": model, "auc": agreement["auc_infected_area"], "sensitivity": agreement["sensitivity"],
           "specificity": agreement["specificity"], "infection_ml": volume_measurements(result)["infection_ml"]}
    return area_at_labelled_slices(area, positions, locations), row


def block_bootstrap_auc(scores: list[np.ndarray], visible: np.ndarray, locations: np.ndarray, block: int,
                        draws: int, seed: int) -> np.ndarray:
    """AUC of each model on ``draws`` resamplings of consecutive-slice blocks, shape (draws, models)."""
    order = np.argsort(locations)
    blocks = [order[i:i + block] for i in range(0, len(order), block)]
    rng = np.random.default_rng(seed)
    out = np.full((draws, len(scores)), np.nan)
    for d in range(draws):
        picked = np.concatenate([blocks[i] for i in rng.integers(len(blocks), size=len(blocks))])
        out[d] = [roc_auc(s[picked], visible[picked]) for s in scores]
    return out


def changed_calls(locations: np.ndarray, visible: np.ndarray, reference: np.ndarray, area: np.ndarray) -> list[dict]:
    """The labelled slices, in position order, that one model calls infected and the reference does not, or back."""
    changed = (area >= MIN_INFECTED_AREA_MM2) != (reference >= MIN_INFECTED_AREA_MM2)
    return [{"position_mm": float(locations[i]), "label": "infected" if visible[i] else "clear",
             "reference_mm2": float(reference[i]), "model_mm2": float(area[i])}
            for i in np.argsort(locations) if changed[i]]


def call_change_counts(changes: list[dict]) -> dict:
    """How many infected and clear slices gained or lost their call, from ``changed_calls``."""
    def count(label: str, now_called: bool) -> int:
        return sum(c["label"] == label and (c["model_mm2"] >= MIN_INFECTED_AREA_MM2) == now_called for c in changes)
    return {"infected_slices_gained": count("infected", True), "infected_slices_lost": count("infected", False),
            "clear_slices_newly_called": count("clear", True), "clear_slices_no_longer_called": count("clear", False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="model ids or card paths; the first is the reference")
    parser.add_argument("--volume", type=Path, default=DATA / "P001")
    parser.add_argument("--labels", type=Path, default=DATA / "P001_slice_labels.csv")
    parser.add_argument("--block", type=int, default=10, help="consecutive slices per bootstrap block")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    image = read_image(args.volume).image
    locations, visible = read_slice_labels(args.labels)
    scores, rows = [], []
    for model in args.models:
        area, row = score_model(model, image, locations, visible)
        scores.append(area)
        rows.append(row)
    boot = block_bootstrap_auc(scores, visible, locations, args.block, args.draws, args.seed)

    print(f"P001: {len(visible)} labelled slices, {int(visible.sum())} infected; "
          f"{args.draws} draws of {args.block}-slice blocks")
    print(f"{'model':<44} {'AUC':>6} {'95% interval':>14} {'sens':>6} {'spec':>6} {'infection mL':>13}")
    for row, column in zip(rows, boot.T):
        low, high = np.nanpercentile(column, [2.5, 97.5])
        row["auc_interval"] = [float(low), float(high)]
        print(f"{row['model'][-44:]:<44} {row['auc']:>6.3f} {f'{low:.3f}-{high:.3f}':>14} "
              f"{row['sensitivity']:>6.3f} {row['specificity']:>6.3f} {row['infection_ml']:>13.1f}")
    print(f"\nagainst {args.models[0]}:")
    print(f"{'model':<44} {'AUC change':>10} {'95% interval':>16} {'infected slices +/-':>20} {'clear slices +/-':>17}")
    for row, area, column in zip(rows[1:], scores[1:], boot.T[1:]):
        low, high = np.nanpercentile(column - boot[:, 0], [2.5, 97.5])
        changes = changed_calls(locations, visible, scores[0], area)
        counts = call_change_counts(changes)
        row.update(auc_change=row["auc"] - rows[0]["auc"], auc_change_interval=[float(low), float(high)], **counts,
                   changed_calls=changes)
        infected = f"+{counts['infected_slices_gained']} / -{counts['infected_slices_lost']}"
        clear = f"+{counts['clear_slices_newly_called']} / -{counts['clear_slices_no_longer_called']}"
        print(f"{row['model'][-44:]:<44} {row['auc'] - rows[0]['auc']:>+10.3f} {f'{low:+.3f} to {high:+.3f}':>16} "
              f"{infected:>20} {clear:>17}")
    for row in rows[1:]:
        print(f"\nslices whose call changed, {row['model']} against {args.models[0]}:")
        print(f"{'position mm':>12} {'label':>9} {'reference mm^2':>15} {'model mm^2':>11}")
        for change in row["changed_calls"]:
            print(f"{change['position_mm']:>12.1f} {change['label']:>9} {change['reference_mm2']:>15.1f} "
                  f"{change['model_mm2']:>11.1f}")
    if args.json:
        args.json.write_text(json.dumps({"block": args.block, "draws": args.draws, "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
