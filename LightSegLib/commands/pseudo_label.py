"""``lightseg pseudo-label``: a model's infection masks (soft, or hard at a threshold) for unlabelled slices."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import DEFAULT_MODEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pseudo-label", help="write a model's infection masks (soft 0-255, or hard with "
                                            "--threshold) for unlabelled 2D slices (for lightseg train --pseudo-masks)")
    p.add_argument("images", type=Path, help="folder of 2D slices (8-bit, like the training images)")
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder to create with one NAME.png per slice")
    p.add_argument("--threshold", type=float, metavar="P",
                   help="write hard 0/255 masks, infection where the probability is at least P (default: soft masks)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from .. import registry
    from ..engine import Segmenter
    from ..training.pseudo_labels import check_request, labeller_of, write_pseudo_labels
    from ..training.recipe import describe_command
    from ..training.slices import require_image_files

    images = require_image_files(args.images)
    check_request(args.output, args.force, args.threshold)
    segmenter = Segmenter(registry.resolve(args.model), args.device)
    with tqdm(total=len(images), desc="pseudo-labelling", unit="slice", disable=not sys.stderr.isatty(),
              leave=False) as bar:
        write_pseudo_labels(segmenter, images, args.output, labeller_of(segmenter, describe_command()), args.force,
                            on_image=bar.update, threshold=args.threshold)
    print(f"{len(images)} pseudo-labels by {segmenter.card.id} {segmenter.card.version} in {args.output}")
    return 0
