"""Do cross-validated runs of the same folds gain anything combined? Probability ensembles and weight averages.

    python benchmarks/combine_folds.py --runs build/cv5-stage2 build/cv5-self [--average [--recalibrate-batchnorm]]
                                       [--json build/eval/combined.json]

Each run folder holds the fold models ``split{K}-stage1.json`` that ``fold_variance.py --folds 5 --models DIR`` kept.
For every fold the runs' models are combined and scored on that fold's validation slices (the names in their cards,
which must agree), then pooled over all validated slices as ``fold_variance.py`` pools them:
- default: the mean of the runs' probability maps (an ensemble, as many forward passes as runs);
- ``--average``: one model whose weights are the runs' uniform mean (a "model soup": one forward pass). Only
  meaningful for runs fine-tuned from the same starting model. ``--recalibrate-batchnorm`` then re-estimates the
  BatchNorm statistics on the fold's training slices, since the averaged weights change every layer's activations.
``--json`` writes the per-image scores in ``fold_variance.py``'s layout, for ``compare_folds.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fold_variance import DATA, pooled  # noqa: E402

from LightSegLib.cards import ModelCard, load_network, save_model  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.metrics import slice_metrics  # noqa: E402
from LightSegLib.network import predict_image  # noqa: E402
from LightSegLib.training.slices import SliceSet, load_image_folders  # noqa: E402

CPU = torch.device("cpu")


def averaged_state(cards: list[ModelCard]) -> dict[str, torch.Tensor]:
    """Uniform mean of the cards' weights (integer buffers, such as BatchNorm's batch count, from the first)."""
    states = [torch.load(card.weights_path, map_location="cpu", weights_only=True) for card in cards]
    return {key: torch.stack([s[key] for s in states]).mean(0) if states[0][key].is_floating_point()
            else states[0][key] for key in states[0]}


def recalibrated_state(card: ModelCard, training: SliceSet) -> dict[str, torch.Tensor]:
    """The card's weights with every BatchNorm's running statistics re-estimated on ``training`` (cumulative mean)."""
    network = load_network(card)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    network.train()
    spec = card.input_spec()
    with torch.no_grad():
        for image in training.images:
            predict_image(network, spec, image, CPU)
    return network.state_dict()


def fold_slices(data: SliceSet, names: set[str], inside: bool) -> SliceSet:
    """The slices of ``data`` named in ``names`` (``inside``) or not named there."""
    return data.subset([i for i, name in enumerate(data.names) if (name in names) == inside])


def fold_probability_makers(cards: list[ModelCard], training: SliceSet, args: argparse.Namespace, scratch: Path):
    """The segmenters whose mean probability is the fold's combined prediction."""
    if not args.average:
        return [Segmenter(card, "cpu") for card in cards]
    soup = ModelCard.load(cards[0].path)
    soup.id, soup.weights_file = "soup", "soup.pt"
    path = save_model(soup, averaged_state(cards), scratch)
    if args.recalibrate_batchnorm:
        path = save_model(soup, recalibrated_state(ModelCard.load(path), training), scratch)
    return [Segmenter(ModelCard.load(path), "cpu")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="folders of fold models split{K}-stage1")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--average", action="store_true", help="average the weights instead of the probabilities")
    parser.add_argument("--recalibrate-batchnorm", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data = load_image_folders(DATA / "images", DATA / "masks")
    rows = []
    for fold in range(args.folds):
        cards = [ModelCard.load(run / f"split{fold}-stage1.json") for run in args.runs]
        names = {tuple(card.training["validation_names"]) for card in cards}
        if len(names) != 1:
            sys.exit(f"fold {fold}: the runs validated on different slices")
        validation = set(names.pop())
        with tempfile.TemporaryDirectory() as scratch:
            makers = fold_probability_makers(cards, fold_slices(data, validation, False), args, Path(scratch))
            held_out = fold_slices(data, validation, True)
            per_image = []
            for name, image, target in zip(held_out.names, held_out.images, held_out.targets):
                probability = np.mean([predict_image(s.model, s.spec, image, s.device) for s in makers], axis=0)
                scores = slice_metrics(probability, target > 0.5)
                per_image.append({"image": name, "infnet_dice": scores.infnet_dice, "dice": scores.dice})
        rows.append({"split": fold, "per_image": per_image})
    figures = pooled(rows)
    how = "weight average" + (" + BatchNorm re-estimated" if args.recalibrate_batchnorm else "") if args.average \
        else "probability ensemble"
    print(f"{how} of {', '.join(str(run) for run in args.runs)}, {figures['images']} validated slices: "
          f"Inf-Net mean Dice {figures['infnet_dice']:.4f} (SE {figures['infnet_dice_standard_error']:.4f}), "
          f"Dice@0.5 {figures['dice']:.4f} (SE {figures['dice_standard_error']:.4f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
