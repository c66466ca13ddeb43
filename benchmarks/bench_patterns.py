"""Ground-glass and consolidation: the pattern network end to end on unseen slices, its cost, and P001 / cap002.

    python benchmarks/bench_patterns.py [--steps 800]

1. Fold 0 of the 50 multi-class slices (the 10 slices the shipped infection model never saw): a pattern network
   trained on folds 1-4 (the shipped recipe) splits the infection model's own mask; ground-glass and consolidation
   Dice per slice against the radiologists' masks, next to the gray-level rule and to the same split of the
   radiologists' infection mask. (The card's 5-fold figures split the radiologists' mask: they measure the pattern
   step alone.)
2. P001 and cap002 through `lightseg segment`'s own code: the pattern volumes, their sum against the infection volume,
   the high-opacity percent and the zone table, and the pattern network's seconds beside the infection network's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"

from LightSegLib import registry  # noqa: E402
from LightSegLib.network import predict_image  # noqa: E402
from LightSegLib.cards import load_network  # noqa: E402
from LightSegLib.patterns.training import (PatternTrainConfig, best_gray_level, consolidation_probability,  # noqa: E402
                                           gray_level_patterns, load_pattern_slices, pattern_dice, split_patterns,
                                           train_pattern_net)
from LightSegLib.training.slices import split_fold  # noqa: E402


def mean(rows: list[dict], key: str) -> str:
    values = np.array([r[key] for r in rows])
    return f"{values.mean():.3f} ({values.std(ddof=1) / np.sqrt(len(values)):.3f})"


def unseen_slices(steps: int) -> None:
    import torch

    data = load_pattern_slices(DATA / "covid-semiseg" / "train" / "images",
                               DATA / "covid-semiseg" / "train" / "masks-multiclass")
    train_idx, val_idx = split_fold(len(data), 0.2, 0, 0)
    train = data.subset(train_idx)
    card = registry.resolve("miniseg-covid")
    if sorted(card.training.get("validation_names", [])) != sorted(data.names[i] for i in val_idx):
        print("note: the default model's validation slices are not fold 0: its masks are not unseen")
    model, spec = load_network(card), card.input_spec()
    net, info = train_pattern_net(train, PatternTrainConfig(steps=steps))
    level = best_gray_level(train)
    rows: dict[str, list[dict]] = {name: [] for name in (
        "network on the infection model's mask", "gray-level rule on the infection model's mask",
        "network on the radiologists' mask", "gray-level rule on the radiologists' mask")}
    for i in val_idx:
        image, truth = data.images[i], data.patterns[i]
        predicted = predict_image(model, spec, image, torch.device("cpu")) >= 0.5
        consolidation = consolidation_probability(net, info["mean"], info["std"], image)
        for mask, where in ((predicted, "the infection model's mask"), (truth > 0, "the radiologists' mask")):
            rows[f"network on {where}"].append(pattern_dice(split_patterns(mask, consolidation), truth))
            rows[f"gray-level rule on {where}"].append(pattern_dice(gray_level_patterns(mask, image, level), truth))
    print(f"Fold 0 ({len(val_idx)} slices never seen by {card.id} {card.version}); pattern network trained on the "
          f"other {len(train_idx)} for {steps} steps ({info['seconds']:.0f} s), gray level {level:.2f}. Dice per "
          "slice, mean (standard error):")
    print("| split | ground-glass | consolidation |\n|---|---|---|")
    for name, found in rows.items():
        print(f"| {name} | {mean(found, 'ground_glass')} | {mean(found, 'consolidation')} |")


def whole_cts() -> None:
    from LightSegLib.pipeline import SegmentRequest, segment_file

    print("\n| CT | infection mL | ground-glass mL | consolidation mL | consolidation % | high opacity % (R / L) "
          "| infection network s | pattern s |\n|---|---|---|---|---|---|---|---|")
    for case in ("P001", "cap002"):
        with tempfile.TemporaryDirectory() as folder:
            report = segment_file(SegmentRequest(DATA / "covid-ct-md" / case, Path(folder) / "labels.nrrd",
                                                 device="cpu")).report
        p, r, t = report["patterns"], report["regions"], report["timings_s"]
        print(f"| {case} | {report['infection_ml']:.1f} | {p['ground_glass_ml']:.1f} | {p['consolidation_ml']:.1f} | "
              f"{p['consolidation_percent_of_infection']:.0f} | {r['right']['high_opacity_percent']:.1f} / "
              f"{r['left']['high_opacity_percent']:.1f} | {t['inference']:.2f} | {t['patterns']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--skip-slices", action="store_true", help="only the whole CTs")
    args = parser.parse_args()
    if not args.skip_slices:
        unseen_slices(args.steps)
    whole_cts()


if __name__ == "__main__":
    main()
