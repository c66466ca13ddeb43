"""``lightseg evaluate``: score a model on labelled slices."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LightSegError
from ..defaults import DEFAULT_MODEL
from .common import FLIPS_HELP, parse_flips_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, sensitivity, specificity, HD95 and Inf-Net Dice on labelled slices")
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--masks", type=Path, required=True)
    p.add_argument("--only", nargs="*", help="evaluate only these image names (for example a model's validation fold)")
    p.add_argument("--json", type=Path, help="write per-image and mean metrics as JSON")
    p.add_argument("--test-time-flips", metavar="FLIPS", help=FLIPS_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from .. import registry
    from ..engine import Segmenter
    from ..evaluation import evaluate_slices
    from ..io import check_output_path, write_atomically
    from ..training.slices import load_image_folders

    flips = parse_flips_option(args.test_time_flips)
    if args.json:
        check_output_path(args.json, (".json",), args.force)
    data = load_image_folders(args.images, args.masks)
    if args.only:
        wanted = set(args.only)
        data = data.subset([i for i, n in enumerate(data.names) if n in wanted])
        if len(data) != len(wanted):
            raise LightSegError("some --only names have no image/mask pair", args.images)
    result = evaluate_slices(Segmenter(registry.resolve(args.model), args.device, test_time_flips=flips), data)
    mean = result["mean"]
    flipped = f" (test-time flips: {', '.join(result['test_time_flips'])})" if result["test_time_flips"] else ""
    print(f"{result['model']}{flipped} on {mean['images']} images: Inf-Net mean Dice {mean['infnet_dice']:.4f}, "
          f"Dice@0.5 {mean['dice']:.4f}, IoU {mean['iou']:.4f}, sensitivity {mean['sensitivity']:.4f}, "
          f"specificity {mean['specificity']:.4f}, HD95 {mean['hd95']:.1f} px")
    if args.json:
        write_atomically(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return 0
