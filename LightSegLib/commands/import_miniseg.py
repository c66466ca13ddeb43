"""``lightseg import-miniseg``: convert an official MiniSeg checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LightSegError
from .common import load_window


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-miniseg", help="convert an official MiniSeg checkpoint into a LightSeg model")
    p.add_argument("checkpoint", type=Path, help="one of the authors' MiniSeg_CrossVal*.pth files")
    p.add_argument("--mean", type=float, nargs=3, required=True, metavar=("R", "G", "B"),
                   help="the fold's per-channel mean of pixel/255 (not stored in the checkpoint)")
    p.add_argument("--std", type=float, nargs=3, required=True, metavar=("R", "G", "B"))
    p.add_argument("-o", "--output", required=True,
                   help="model id (saved in the user store) or a path ending in .json for the card")
    p.add_argument("--hu-window-from", type=Path, metavar="JSON", help="HU window for CT volumes (else 2D only)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cards import ModelCard, save_model, sha256_of
    from ..models import count_parameters
    from ..models.miniseg import MiniSeg
    from ..models.miniseg_import import load_official_checkpoint
    from ..registry import user_dir

    if not args.checkpoint.is_file():
        raise LightSegError("no such file", args.checkpoint)
    target = Path(args.output)
    if target.suffix == ".json":
        directory, model_id = target.parent, target.name[: -len(".json")]
    else:
        directory, model_id = user_dir(), args.output
    if (directory / f"{model_id}.json").exists() and not args.force:
        raise LightSegError("a model of that name exists (use --force to replace it)", directory / f"{model_id}.json")
    if any(s <= 0 for s in args.std):
        raise LightSegError("--std values must be positive")
    model = load_official_checkpoint(args.checkpoint)
    card = ModelCard(
        id=model_id, version="1.0.0", architecture="miniseg",
        arch_config={"in_channels": 3, "num_classes": 2, "aux": True}, input_size=[512, 512],
        normalisation={"mean": list(args.mean), "std": list(args.std)},
        hu_window=load_window(args.hu_window_from) if args.hu_window_from else None,
        weights_file=f"{model_id}.pt", weights_sha256="",
        parameters=count_parameters(MiniSeg(3, 2, aux=False)),
        licence="CC BY-NC-SA 4.0 (MiniSeg authors' released weights; non-commercial use only)",
        description="Official MiniSeg weights (Qiu et al., AAAI 2021) imported by lightseg import-miniseg",
        source={"checkpoint": args.checkpoint.name, "checkpoint_sha256": sha256_of(args.checkpoint),
                "repository": "yun-liu/MiniSeg", "tensors": len(model.state_dict()),
                "note": "auxiliary heads kept (all 467 tensors); gray input replicated to RGB, pixel/255, "
                        "(x - mean_c)/std_c with the normalisation given at import"},
    )
    path = save_model(card, model.state_dict(), directory)
    print(f"imported {args.checkpoint.name} ({len(model.state_dict())} tensors) as {card.id}: {path}")
    return 0
