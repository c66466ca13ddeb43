"""The ``lightseg`` command line. Every user-facing problem is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LightSegError
from .registry import DEFAULT_MODEL


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from image/mask folders")
    p.add_argument("--arch", default="miniseg", help="miniseg or ulite")
    p.add_argument("--images", type=Path, help="folder of 8-bit lung-cropped slices")
    p.add_argument("--masks", type=Path, help="folder of masks with the same names (255 = infection)")
    p.add_argument("--soft-labels", action="store_true", help="masks are soft 0-255 pseudo-labels")
    p.add_argument("--volumes", type=Path, help="folder of CT volumes (or DICOM folders), instead of --images")
    p.add_argument("--labels", type=Path, help="label maps (1 = infection) or .seg.nrrd with the volumes' names")
    p.add_argument("--segment", default="Infection", help="segment name to use in .seg.nrrd labels")
    p.add_argument("--name", required=True, help="model id, also the output file names")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: the user model store)")
    p.add_argument("--init", help="start from this model's weights (id or card path)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--input-size", type=int)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="keep the epoch with the best validation Inf-Net Dice, or the last epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, help="stop after this many minutes (after the current epoch)")
    p.add_argument("--hu-window-from", type=Path, metavar="JSON",
                   help="HU window for CT volumes, as measured by 'lightseg calibrate-window'")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--description", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--force", action="store_true", help="overwrite an existing model of that name")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from . import registry
    from .devices import pick_device
    from .training.loop import TrainConfig
    from .training.recipe import ARCH_DEFAULTS, TrainRequest, describe_command, print_epoch, run_training
    from .training.slices import load_image_folders

    if args.arch not in ARCH_DEFAULTS:
        raise LightSegError(f"unknown architecture {args.arch!r}; choose from {', '.join(ARCH_DEFAULTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or registry.user_dir()
    if (output / f"{args.name}.json").exists() and not args.force:
        raise LightSegError("a model of that name exists there (use --force to replace it)", output / f"{args.name}.json")
    init = registry.resolve(args.init) if args.init else None
    window = _load_window(args.hu_window_from) if args.hu_window_from else (init.hu_window if init else None)
    if args.volumes or args.labels:
        if not (args.volumes and args.labels) or args.images or args.masks:
            raise LightSegError("give either --images and --masks, or --volumes and --labels")
        if window is None:
            raise LightSegError("volume training needs an HU window: --hu-window-from, or --init with a model that has one")
        from .io import pair_by_name
        from .training.slices import volume_slices

        pairs = pair_by_name(args.volumes, args.labels)
        extracted = volume_slices([v for v, _ in pairs], [lab for _, lab in pairs], window, args.segment)
        data, description = extracted.slices, {"volumes_dir": str(args.volumes), "labels_dir": str(args.labels),
                                               **extracted.summary}
    elif args.images and args.masks:
        data = load_image_folders(args.images, args.masks, soft=args.soft_labels)
        description = {"images": str(args.images), "masks": str(args.masks), "slices": len(data),
                       "soft_labels": args.soft_labels}
    else:
        raise LightSegError("give --images and --masks, or --volumes and --labels")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      input_size=args.input_size or ARCH_DEFAULTS[args.arch]["input_size"], seed=args.seed,
                      minutes=args.minutes, device=str(pick_device(args.device)))
    request = TrainRequest(
        arch=args.arch, name=args.name, output_dir=output, data=data,
        data_description=description,
        val_fraction=args.val_fraction, keep=args.keep, init=init,
        hu_window=window, version=args.version, description=args.description)
    path, result = run_training(request, cfg, describe_command(), on_epoch=print_epoch)
    print(f"saved {path} (epoch {result.best_epoch if args.keep == 'best' else len(result.history)} kept, "
          f"{result.stopped}, {result.seconds / 60:.1f} min)")
    return 0


def _progress_bar(description: str):
    """A tqdm bar on a terminal, nothing otherwise; returns (callback, close)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="slice", disable=not sys.stderr.isatty(), leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment lung infection in a CT volume, DICOM folder or 2D slice")
    p.add_argument("input", type=Path, help="NIfTI, NRRD, MetaImage, DICOM folder, or PNG/JPG slice")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="label map: .nii.gz, .nrrd, .seg.nrrd or .mha (volumes), .png (slices)")
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--probabilities", type=Path, help="also write the network's infection probability (.npy or image)")
    p.add_argument("--report", type=Path, help="also write a JSON report (volumes, percent per lung, timings)")
    p.add_argument("--batch-size", type=int, help="slices per network batch")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=_cmd_segment)



def _cmd_segment(args: argparse.Namespace) -> int:
    from .pipeline import SegmentRequest, segment_file
    from .report import summary_lines

    request = SegmentRequest(args.input, args.output, args.model, args.device, args.probabilities, args.report,
                             args.force, args.batch_size)
    update, close = _progress_bar("segmenting")
    try:
        outcome = segment_file(request, progress=update)
    finally:
        close()
    for line in summary_lines(outcome.report):
        print(line)
    print(f"wrote {args.output} in {outcome.report['timings_s']['total']:.1f} s on {outcome.report['device']}")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list bundled and user models")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--remove", metavar="NAME", help="delete a user model (bundled models cannot be removed)")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    import json

    from . import registry

    if args.remove:
        for path in registry.remove_user_model(args.remove):
            print(f"removed {path}")
        return 0
    entries = registry.list_models()
    rows = [{"id": e.card.id, "version": e.card.version, "architecture": e.card.architecture,
             "parameters": e.card.parameters, "licence": e.card.licence.split(" (")[0],
             "where": "bundled" if e.bundled else "user",
             "val_infnet_dice": e.card.validation.get("kept", {}).get("infnet_dice")} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models found (bundled: {registry.bundled_dir()}, user: {registry.user_dir()})")
        return 0
    header = ("id", "version", "architecture", "parameters", "licence", "where")
    table = [header] + [tuple(f"{r[h]:,}" if h == "parameters" else str(r[h]) for h in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled sample CT and write a mask, a report and a montage")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("demo-output"))
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="overwrite earlier demo output")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .montage import write_montage
    from .pipeline import SegmentRequest, segment_file
    from .report import summary_lines
    from .sample import sample_path

    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir
    montage = out / "sample-montage.png"
    if montage.exists() and not args.force:
        raise LightSegError("output exists (use --force to overwrite it)", montage)
    request = SegmentRequest(sample_path(), out / "sample-infection.seg.nrrd", args.model, args.device,
                             report=out / "sample-report.json", force=args.force)
    update, close = _progress_bar("segmenting the sample")
    try:
        outcome = segment_file(request, progress=update)
    finally:
        close()
    write_montage(outcome.image, outcome.result, montage)
    print(f"sample: {request.input}")
    for line in summary_lines(outcome.report):
        print(line)
    for label, path in (("segmentation", request.output), ("report", request.report), ("montage", montage)):
        print(f"{label}: {path}")
    return 0


def _load_window(path: Path):
    import json

    from .cards import HUWindow

    try:
        data = json.loads(path.read_text())
        return HUWindow(float(data["level"]), float(data["width"]), data["method"])
    except (OSError, ValueError, KeyError) as exc:
        raise LightSegError(f"not a calibrate-window result ({type(exc).__name__}: {exc})", path) from None


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate-window", help="measure the HU window that maps a CT into the training slices' domain")
    p.add_argument("--images", type=Path, required=True, help="the training slices (8-bit)")
    p.add_argument("--volume", type=Path, required=True, help="a chest CT in HU (file or DICOM folder)")
    p.add_argument("-o", "--output", type=Path, help="write the result as JSON (for 'lightseg train --hu-window-from')")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from .calibration import crop_hu_values, fit_window, training_quantiles
    from .io import check_output_path, read_image, write_atomically
    from .training.slices import IMAGE_SUFFIXES, read_gray

    if args.output:
        check_output_path(args.output, (".json",), args.force)
    if not args.images.is_dir():
        raise LightSegError("not a folder", args.images)
    images = [read_gray(p) for p in sorted(args.images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise LightSegError("no images in folder", args.images)
    values, slices = crop_hu_values(read_image(args.volume).image)
    fit = fit_window(training_quantiles(images), values)
    result = {"level": fit.level, "width": fit.width, "distance": round(fit.distance, 5),
              "reference_distances": {k: round(v, 5) for k, v in fit.reference_distances.items()},
              "method": fit.method(args.volume.name, slices), "training_images": len(images),
              "volume": str(args.volume)}
    print(f"HU window: level {fit.level:.0f}, width {fit.width:.0f} (distance {fit.distance:.4f}; "
          + ", ".join(f"{k} {v:.4f}" for k, v in fit.reference_distances.items()) + ")")
    if args.output:
        write_atomically(args.output, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
        print(f"wrote {args.output}")
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-miniseg", help="convert an official MiniSeg checkpoint into a LightSeg model")
    p.add_argument("checkpoint", type=Path, help="one of the authors' MiniSeg_CrossVal*.pth files")
    p.add_argument("--mean", type=float, nargs=3, required=True, metavar=("R", "G", "B"),
                   help="the fold's per-channel mean of pixel/255 (not stored in the checkpoint)")
    p.add_argument("--std", type=float, nargs=3, required=True, metavar=("R", "G", "B"))
    p.add_argument("-o", "--output", required=True,
                   help="model id (saved in the user store) or a path ending in .json for the card")
    p.add_argument("--hu-window-from", type=Path, metavar="JSON", help="HU window for CT volumes (else 2D only)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from .cards import ModelCard, save_model, sha256_of
    from .models import count_parameters
    from .models.miniseg import MiniSeg
    from .models.miniseg_import import load_official_checkpoint
    from .registry import user_dir

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
        hu_window=_load_window(args.hu_window_from) if args.hu_window_from else None,
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


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="Dice, IoU, sensitivity, specificity, HD95 and Inf-Net Dice on labelled slices")
    p.add_argument("--model", help=f"model id or card path (default {DEFAULT_MODEL})")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--masks", type=Path, required=True)
    p.add_argument("--only", nargs="*", help="evaluate only these image names (for example a model's validation fold)")
    p.add_argument("--json", type=Path, help="write per-image and mean metrics as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from . import registry
    from .engine import Segmenter
    from .evaluation import evaluate_slices
    from .io import check_output_path, write_atomically
    from .training.slices import load_image_folders

    if args.json:
        check_output_path(args.json, (".json",), args.force)
    data = load_image_folders(args.images, args.masks)
    if args.only:
        wanted = set(args.only)
        data = data.subset([i for i, n in enumerate(data.names) if n in wanted])
        if len(data) != len(wanted):
            raise LightSegError("some --only names have no image/mask pair", args.images)
    result = evaluate_slices(Segmenter(registry.resolve(args.model), args.device), data)
    mean = result["mean"]
    print(f"{result['model']} on {mean['images']} images: Inf-Net mean Dice {mean['infnet_dice']:.4f}, "
          f"Dice@0.5 {mean['dice']:.4f}, IoU {mean['iou']:.4f}, sensitivity {mean['sensitivity']:.4f}, "
          f"specificity {mean['specificity']:.4f}, HD95 {mean['hd95']:.1f} px")
    if args.json:
        write_atomically(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from .training.finetune import FINETUNE_DEFAULTS as D

    p = sub.add_parser("finetune", help="fine-tune a model on your own labelled CT; saves a new model version")
    p.add_argument("--base", default=None, help=f"model to start from (default {DEFAULT_MODEL}); it is never modified")
    p.add_argument("--name", required=True, help="id of the new model (saved in the user model store)")
    p.add_argument("--images", type=Path, help="folder of 8-bit lung-cropped slices (with --masks)")
    p.add_argument("--masks", type=Path)
    p.add_argument("--volumes", type=Path, help="folder of CT volumes or DICOM folders (with --labels)")
    p.add_argument("--labels", type=Path, help="label maps (1 = infection) or .seg.nrrd named like the volumes")
    p.add_argument("--pairs", type=Path, help="CSV with columns volume,label")
    p.add_argument("--segment", default="Infection", help="segment name to use in .seg.nrrd labels")
    p.add_argument("--epochs", type=int, default=D["epochs"])
    p.add_argument("--minutes", type=float, help="time budget; stops cleanly and keeps the best model")
    p.add_argument("--val-fraction", type=float, default=D["val_fraction"])
    p.add_argument("--lr", type=float, default=D["lr"])
    p.add_argument("--patience", type=int, default=D["patience"], help="early stopping on the held-out slices")
    p.add_argument("--anchor", type=float, default=D["anchor"],
                   help="L2-SP weight pulling the weights towards the base model (0: plain fine-tuning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--progress-json", action="store_true", help="print one JSON object per epoch (for the Slicer panel)")
    p.add_argument("--stop-file", type=Path, help="stop cleanly (keeping the best model) when this file appears")
    p.add_argument("--force", action="store_true", help="replace an existing user model of that name")
    p.add_argument("-o", "--output", type=Path, help=argparse.SUPPRESS)  # tests: another model store
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json
    import signal
    import time

    import torch
    from tqdm import tqdm

    from . import registry
    from .devices import pick_device
    from .training.finetune import (FinetuneRequest, StopSignal, check_site_data, eta_seconds, read_pairs_csv,
                                    run_finetune, site_from_images, site_from_volumes)
    from .training.loop import TrainConfig
    from .training.recipe import describe_command

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
    if sum(sources) != 1:
        raise LightSegError("give one data source: --images/--masks, --volumes/--labels, or --pairs")
    if args.images or args.masks:
        if not (args.images and args.masks):
            raise LightSegError("--images and --masks go together")
        site, source = site_from_images(args.images, args.masks), str(args.images)
    elif args.pairs:
        volumes, labels = read_pairs_csv(args.pairs)
        site, source = site_from_volumes(volumes, labels, base, args.segment), str(args.pairs)
    else:
        if not (args.volumes and args.labels):
            raise LightSegError("--volumes and --labels go together")
        from .io import pair_by_name

        pairs = pair_by_name(args.volumes, args.labels)
        site = site_from_volumes([v for v, _ in pairs], [lab for _, lab in pairs], base, args.segment)
        source = str(args.volumes)
    check_site_data(site, source)
    if site.summary.get("label_source"):
        print(f"labels: {', '.join(site.summary['label_source'])}", file=sys.stderr)

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, minutes=args.minutes, patience=args.patience,
                      freeze_batchnorm=True, anchor_weight=args.anchor, device=str(pick_device(args.device)))
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

    request = FinetuneRequest(base, args.name, site, args.val_fraction, output_dir=output)
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
              f"held-out Inf-Net Dice {comparison['parent']['infnet_dice']:.4f} ({base.id}) -> "
              f"{comparison['new'].get('infnet_dice', float('nan')):.4f} ({args.name}) on "
              f"{comparison['held_out_slices']} slices")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightseg", description="COVID-19 lung infection segmentation on chest CT")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment(sub)
    _add_models(sub)
    _add_demo(sub)
    _add_train(sub)
    _add_calibrate(sub)
    _add_import(sub)
    _add_evaluate(sub)
    _add_finetune(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LightSegError as exc:
        print(f"lightseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
