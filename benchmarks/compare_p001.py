"""Models compared on the real P001 CT against its slice labels, with paired block-bootstrap intervals.

    python benchmarks/compare_p001.py --models miniseg-covid build/try/d700/miniseg-covid.json [--gate] [--json out.json]
    python benchmarks/compare_p001.py --models 2b9a321:miniseg-covid miniseg-covid --gate

A model is an id, a card path, or REVISION:ID for a bundled model as committed at a git revision (its card and weights
are read with `git show`), so earlier defaults can be compared without keeping copies of them.

Each model segments the P001 volume (`scripts/evaluate_p001.py`'s protocol: a slice counts as predicted infected at
20 mm^2 or more). Printed per model: the ROC AUC of predicted infected area per slice, sensitivity, specificity and
infection volume; then, for every model against the first, the AUC difference with a 95 % interval, the counts of
slices whose call changed, and those slices one by one (position, label, both models' areas). Neighbouring slices
are not independent (a lesion spans several), so the interval resamples blocks of consecutive slices rather than
single slices; the block length is a choice (--block, default 10 slices, 2 cm here) and shorter blocks give
narrower, over-confident intervals.

With --gate, every model after the first is checked against it by the release gate a new default must pass (README,
"Models") and the exit status is 1 if any fails: the AUC change's 95 % interval not wholly below 0, net at most 3
infected slices losing their call, net at most 3 clear slices gaining one, infection volume within 25 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.errors import LightSegError  # noqa: E402
from LightSegLib.evaluation import (MIN_INFECTED_AREA_MM2, area_at_labelled_slices,  # noqa: E402
                                    infected_area_per_slice, read_slice_labels, slice_level_agreement)
from LightSegLib.io import read_image  # noqa: E402
from LightSegLib.metrics import roc_auc  # noqa: E402
from LightSegLib.report import volume_measurements  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"
GATE_MAX_NET_INFECTED_LOST = 3
GATE_MAX_NET_CLEAR_GAINED = 3
GATE_MAX_VOLUME_CHANGE = 0.25


def model_at_revision(spec: str, into: Path) -> str:
    """The card path of ``REVISION:ID``, a bundled model as committed at a git revision, written under ``into``."""
    revision, model_id = spec.split(":", 1)
    folder = into / revision
    folder.mkdir(parents=True, exist_ok=True)
    card_bytes = git_show(revision, f"Resources/Models/{model_id}.json")
    (folder / f"{model_id}.json").write_bytes(card_bytes)
    card = json.loads(card_bytes)
    (folder / card["weights_file"]).write_bytes(git_show(revision, f"Resources/Models/{card['weights_file']}"))
    return str(folder / f"{model_id}.json")


def git_show(revision: str, path: str) -> bytes:
    """A file's bytes as committed at ``revision`` in this repository."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"], capture_output=True)
    if shown.returncode != 0:
        problem = shown.stderr.decode().strip().splitlines()[-1:] or ["not in git history"]
        raise LightSegError(problem[0], f"{revision}:{path}")
    return shown.stdout


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


def gate_failures(candidate: dict, reference: dict) -> list[str]:
    """Why ``candidate`` (a compared row, with its AUC change interval and call counts) fails the release gate."""
    failures = []
    if candidate["auc_change_interval"][1] < 0:
        low, high = candidate["auc_change_interval"]
        failures.append(f"AUC change interval {low:+.3f} to {high:+.3f} is wholly below 0")
    net_infected_lost = candidate["infected_slices_lost"] - candidate["infected_slices_gained"]
    if net_infected_lost > GATE_MAX_NET_INFECTED_LOST:
        failures.append(f"net {net_infected_lost} infected slices lose their call (at most {GATE_MAX_NET_INFECTED_LOST})")
    net_clear_gained = candidate["clear_slices_newly_called"] - candidate["clear_slices_no_longer_called"]
    if net_clear_gained > GATE_MAX_NET_CLEAR_GAINED:
        failures.append(f"net {net_clear_gained} clear slices gain a call (at most {GATE_MAX_NET_CLEAR_GAINED})")
    volume_change = candidate["infection_ml"] / reference["infection_ml"] - 1
    if abs(volume_change) > GATE_MAX_VOLUME_CHANGE:
        failures.append(f"infection volume changes by {volume_change:+.1%} (at most {GATE_MAX_VOLUME_CHANGE:.0%})")
    return failures


def main() -> None:
    """Bad input (an unknown model, revision or file) is one line on stderr and exit status 2; a failed gate is 1."""
    try:
        compare(parse_args())
    except LightSegError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="model ids, card paths or REVISION:ID; the first is the reference")
    parser.add_argument("--volume", type=Path, default=DATA / "P001")
    parser.add_argument("--labels", type=Path, default=DATA / "P001_slice_labels.csv")
    parser.add_argument("--block", type=int, default=10, help="consecutive slices per bootstrap block")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gate", action="store_true", help="exit 1 unless every model passes the release gate")
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("--models needs a reference and at least one model to compare with it")
    return args


def compare(args: argparse.Namespace) -> None:
    """Score every model on P001, print the tables and the gate, and exit 1 if --gate is given and a model fails."""
    scores, rows = [], []
    with tempfile.TemporaryDirectory() as revisions:
        paths = [model_at_revision(m, Path(revisions)) if ":" in m and not Path(m).exists() else m for m in args.models]
        image = read_image(args.volume).image
        locations, visible = read_slice_labels(args.labels)
        for model, path in zip(args.models, paths):
            area, row = score_model(path, image, locations, visible)
            row["model"] = model
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
    print(f"\nrelease gate against {args.models[0]}:")
    for row in rows[1:]:
        row["gate_failures"] = gate_failures(row, rows[0])
        verdict = "FAIL: " + "; ".join(row["gate_failures"]) if row["gate_failures"] else "pass"
        print(f"{row['model'][-44:]:<44} {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"block": args.block, "draws": args.draws, "models": rows}, indent=2) + "\n")
    if args.gate and any(row["gate_failures"] for row in rows[1:]):
        sys.exit(1)


if __name__ == "__main__":
    main()
