"""``lightseg train-patterns``: train the network that splits infection into ground-glass and consolidation."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..errors import LightSegError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-patterns", help="train the ground-glass / consolidation network from multi-class masks")
    p.add_argument("--images", type=Path, required=True, help="folder of 8-bit lung-cropped slices")
    p.add_argument("--masks", type=Path, required=True,
                   help="masks with the same names: 0 none, 1 ground-glass opacity, 2 consolidation")
    p.add_argument("--name", required=True, help="model id, also the output file names")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--folds", type=int, default=5,
                   help="cross-validate the recipe over this many folds first, figures into the card (0: skip)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--force", action="store_true", help="replace a model of that name in the output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cards import sha256_of
    from ..patterns.model import PatternCard
    from ..patterns.training import PatternTrainConfig, cross_validate, load_pattern_slices, train_pattern_net

    card_path = args.output / f"{args.name}.json"
    if card_path.exists() and not args.force:
        raise LightSegError("a pattern model of that name exists there (use --force to replace it)", card_path)
    if args.steps < 1 or args.folds < 0 or args.folds == 1:
        raise LightSegError("--steps must be at least 1 and --folds 0 or at least 2", args.output)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_pattern_slices(args.images, args.masks)
    cfg = PatternTrainConfig(steps=args.steps, seed=args.seed)
    validation = {}
    if args.folds:
        validation["cross_validation"] = cross_validate(data, args.folds, cfg,
                                                        lambda line: print(line, file=sys.stderr))
    net, info = train_pattern_net(data, cfg)
    args.output.mkdir(parents=True, exist_ok=True)
    weights = args.output / f"{args.name}.pt"
    partial = weights.with_suffix(".pt.partial")
    torch.save(net.state_dict(), partial)
    partial.replace(weights)
    card = PatternCard(
        id=args.name, version=args.version, arch_config={"width": 8, "dilations": [1, 2, 4]}, input_size=cfg.size,
        mean=info["mean"], std=info["std"], weights_file=weights.name, weights_sha256=sha256_of(weights),
        parameters=sum(p.numel() for p in net.parameters()),
        licence="Apache-2.0 (weights trained by LightSeg on COVID-SemiSeg; see its data licence)",
        description="PatternNet: consolidation or ground-glass opacity for each pixel the infection model calls "
                    "infection (3x3 convolutions, three dilated, on the crop folded to a quarter of its size)",
        training={"command": "lightseg train-patterns " + shlex.join(sys.argv[2:]),
                  "data": {"images": str(args.images), "masks": str(args.masks), "slices": len(data)},
                  "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                  "seconds": info["seconds"], "final_loss": round(info["final_loss"], 4), "torch": torch.__version__},
        validation=validation)
    partial_card = card_path.with_suffix(".json.partial")
    partial_card.write_text(json.dumps(card.to_json(), indent=2) + "\n")
    partial_card.replace(card_path)
    cv = validation.get("cross_validation")
    if cv:
        net_cv, rule = cv["network"], cv["gray_level_threshold"]
        print(f"{args.folds}-fold, inside the labelled infection: ground-glass Dice {net_cv['ground_glass_dice']:.3f}, "
              f"consolidation {net_cv['consolidation_dice']:.3f} (gray-level rule {rule['ground_glass_dice']:.3f}, "
              f"{rule['consolidation_dice']:.3f})")
    print(f"saved {card_path}")
    return 0
