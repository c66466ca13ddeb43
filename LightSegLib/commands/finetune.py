"""``lightseg finetune``: fine-tune a model on a site's own data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LightSegError
from ..defaults import DEFAULT_MODEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..defaults import FINETUNE_DEFAULTS as D

    p = sub.add_parser("finetune", help="fine-tune a model on your own labelled CT; saves a new model version")
    p.add_argument("--base", default=None, help=f"model to start from (default {DEFAULT_MODEL}); it is never modified")
    p.add_argument("--name", required=True, help="id of the new model (saved in the user model store)")
    p.add_argument("--images", type=Path, help="folder of 8-bit lung-cropped slices (with --masks)")
    p.add_argument("--masks", type=Path)
    p.add_argument("--volumes", type=Path, help="folder of CT volumes or DICOM folders (with --labels)")
    p.add_argument("--labels", type=Path, help="label maps (1 = infection) or .seg.nrrd named like the volumes")
    p.add_argument("--pairs", type=Path, help="CSV with columns volume,label")
    p.add_argument("--negative-volumes", type=Path, metavar="DIR",
                   help="folder of the site's CTs without infection (files or DICOM folders; nothing drawn), alone or "
                        "with one of the labelled sources")
    p.add_argument("--segment", default="Infection", help="segment name to use in .seg.nrrd labels")
    p.add_argument("--epochs", type=int, default=D["epochs"])
    p.add_argument("--minutes", type=float, help="time budget; stops cleanly and keeps the best model")
    p.add_argument("--val-fraction", type=float, default=D["val_fraction"])
    p.add_argument("--lr", type=float, default=D["lr"])
    p.add_argument("--patience", type=int, default=D["patience"], help="early stopping on the held-out slices")
    p.add_argument("--anchor", type=float, default=D["anchor"],
                   help="L2-SP weight pulling the weights towards the base model (0: plain fine-tuning)")
    p.add_argument("--reference-weight", type=float, default=D["reference"],
                   help="weight of keeping the base model's output on the bundled sample CT, so the new model does "
                        "not forget the base's data (0: off)")
    p.add_argument("--adapt", choices=("input", "all"), default=D["adapt"],
                   help="layers to train: 'input' (default), the first two encoder stages, for a new scanner, kernel "
                        "or protocol; 'all', every layer, when the site also draws its labels differently")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--progress-json", action="store_true", help="print one JSON object per epoch (for the Slicer panel)")
    p.add_argument("--stop-file", type=Path, help="stop cleanly (keeping the best model) when this file appears")
    p.add_argument("--force", action="store_true", help="replace an existing user model of that name")
    p.add_argument("-o", "--output", type=Path, help=argparse.SUPPRESS)  # tests: another model store
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import signal
    import time

    import torch
    from tqdm import tqdm

    from .. import registry
    from ..devices import pick_device
    from ..models import input_stages
    from ..training.finetune import (FinetuneRequest, StopSignal, base_recipe, check_site_data, eta_seconds,
                                    held_out_line, read_pairs_csv, run_finetune, site_from_images,
                                    site_from_negatives, site_from_volumes)
    from ..training.loop import TrainConfig
    from ..training.recipe import describe_command

    if args.threads:
        torch.set_num_threads(args.threads)
    base = registry.resolve(args.base)
    output = args.output or registry.user_dir()
    existing = output / f"{args.name}.json"
    if any(e.card.id == args.name and e.bundled for e in registry.list_models()):
        raise LightSegError("is the name of a bundled model; choose another name", args.name)
    if existing.exists() and not args.force:
        raise LightSegError("a user model of that name exists (use --force to replace it)", existing)
    sources = [bool(args.images or args.masks), bool(args.volumes or args.labels), bool(args.pairs)]
    if sum(sources) > 1 or (sum(sources) == 0 and not args.negative_volumes):
        raise LightSegError("give one labelled data source (--images/--masks, --volumes/--labels or --pairs), "
                            "--negative-volumes, or both")
    site = negatives = None
    if args.images or args.masks:
        if not (args.images and args.masks):
            raise LightSegError("--images and --masks go together")
        site, source = site_from_images(args.images, args.masks), str(args.images)
    elif args.pairs:
        volumes, labels = read_pairs_csv(args.pairs)
        site, source = site_from_volumes(volumes, labels, base, args.segment), str(args.pairs)
    elif args.volumes or args.labels:
        if not (args.volumes and args.labels):
            raise LightSegError("--volumes and --labels go together")
        from ..io import pair_by_name

        pairs = pair_by_name(args.volumes, args.labels)
        site = site_from_volumes([v for v, _ in pairs], [lab for _, lab in pairs], base, args.segment)
        source = str(args.volumes)
    if site is not None:
        check_site_data(site, source)
        if site.summary.get("label_source"):
            print(f"labels: {', '.join(site.summary['label_source'])}", file=sys.stderr)
    if args.negative_volumes:
        negatives = site_from_negatives(args.negative_volumes, base)

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, minutes=args.minutes, patience=args.patience,
                      freeze_batchnorm=True, anchor_weight=args.anchor,
                      trainable=input_stages(base.architecture, base.arch_config) if args.adapt == "input" else (),
                      reference_weight=args.reference_weight, device=str(pick_device(args.device)), **base_recipe(base))
    stop = StopSignal(args.stop_file)
    signal.signal(signal.SIGINT, stop.handle)
    signal.signal(signal.SIGTERM, stop.handle)
    started = time.monotonic()
    bar = tqdm(total=cfg.epochs, desc="fine-tuning", unit="epoch", disable=args.progress_json or not sys.stderr.isatty())

    def on_epoch(record) -> None:
        if args.progress_json:
            print(json.dumps({"event": "epoch", "epoch": record.epoch, "epochs": cfg.epochs, "step": record.steps,
                              "loss": round(record.loss, 5), "val_infnet_dice": round(record.val_infnet_dice, 5),
                              "val_dice": round(record.val_dice, 5), "eta_s": eta_seconds(record, cfg, started)}),
                  flush=True)
        bar.update(1)
        bar.set_postfix(loss=f"{record.loss:.3f}", val_dice=f"{record.val_infnet_dice:.3f}")

    request = FinetuneRequest(base, args.name, site, args.val_fraction, output_dir=output, negatives=negatives)
    try:
        path, result, comparison = run_finetune(request, cfg, describe_command(), on_epoch, stop)
    finally:
        bar.close()
    summary = {"event": "done", "model": args.name, "card": str(path), "stopped": result.stopped,
               "epochs": len(result.history), "seconds": round(result.seconds, 1), **comparison}
    if args.progress_json:
        print(json.dumps(summary), flush=True)
    else:
        print(f"saved {args.name} ({result.stopped} after {len(result.history)} epochs, {result.seconds:.0f} s): "
              + held_out_line(comparison, base.id, args.name))
    return 0
