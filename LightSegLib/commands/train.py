"""``lightseg train``: train a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LightSegError
from .common import load_window, parse_flips_option

if TYPE_CHECKING:
    from ..training.slices import SliceSet


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from image/mask folders")
    p.add_argument("--arch", default="miniseg", help="miniseg (default), ulite, malunet, unetv2 or unetv2-lite")
    p.add_argument("--images", type=Path, help="folder of 8-bit lung-cropped slices")
    p.add_argument("--masks", type=Path, help="folder of masks with the same names (255 = infection)")
    p.add_argument("--soft-labels", action="store_true", help="masks are soft 0-255 pseudo-labels")
    p.add_argument("--volumes", type=Path, help="folder of CT volumes (or DICOM folders), instead of --images")
    p.add_argument("--labels", type=Path, help="label maps (1 = infection) or .seg.nrrd with the volumes' names")
    p.add_argument("--segment", default="Infection", help="segment name to use in .seg.nrrd labels")
    p.add_argument("--pseudo-images", type=Path, metavar="DIR",
                   help="pseudo-labelled slices mixed into every training step (semi-supervised; never validated on)")
    p.add_argument("--pseudo-masks", type=Path, metavar="DIR", help="their soft 0-255 pseudo-labels")
    p.add_argument("--pseudo-per-step", type=int, default=4, metavar="N",
                   help="pseudo-labelled slices added to each step's batch (default 4)")
    p.add_argument("--pseudo-weight", type=float, default=1.0, metavar="W",
                   help="weight of the pseudo-labelled slices' loss (default 1)")
    p.add_argument("--negative-volumes", type=Path, action="append", metavar="DIR",
                   help="folder of CTs without infection (files or DICOM folders; NAME_lesions.* beside a CT marks "
                        "lesions whose slices are left out), cut as the engine cuts them; repeatable")
    p.add_argument("--slice-labelled-volumes", type=Path, action="append", metavar="DIR",
                   help="folder of CTs with NAME_slice_labels.csv beside each: clear slices teach no infection; "
                        "repeatable")
    p.add_argument("--infected-slices", choices=("teacher", "skip"), default="teacher",
                   help="slice-labelled CTs' infected slices: the --teacher model's cleaned probability as target "
                        "(default), or left out")
    p.add_argument("--teacher", help="model whose output labels infected CT slices (default: --init)")
    p.add_argument("--ct-per-step", type=int, default=4, metavar="N",
                   help="CT slices (negative and slice-labelled) added to each step's batch (default 4)")
    p.add_argument("--ct-weight", type=float, default=1.0, metavar="W",
                   help="weight of the CT slices' loss (default 1)")
    p.add_argument("--neighbour-mm", type=float, default=0.0, metavar="MM",
                   help="feed the network the slices MM below and above a CT slice as its outer input channels "
                        "(a 2D slice fills all three; default 0: the slice in every channel)")
    p.add_argument("--name", required=True, help="model id, also the output file names")
    p.add_argument("-o", "--output", type=Path, help="output folder (default: the user model store)")
    p.add_argument("--init", help="start from this model's weights (id or card path)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--input-size", type=int)
    p.add_argument("--class-weights", choices=("enet", "none"), default="enet",
                   help="cross-entropy class weights: enet (official MiniSeg rule, favours infection) or none")
    p.add_argument("--dice-weight", type=float, default=1.0, help="weight of the soft Dice term (0 for none)")
    p.add_argument("--tversky-beta", type=float, default=0.5, metavar="B",
                   help="weight of missed infection in the Dice term, in (0, 1): 0.5 is soft Dice, above 0.5 "
                        "penalises under-segmentation more than over-segmentation (Tversky loss)")
    p.add_argument("--min-contrast", type=float, default=1.0, metavar="C",
                   help="augmentation: scale each slice's contrast about its median by a factor drawn from [C, 1], "
                        "for fainter lesions than the training slices show (default 1: off)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-fold", type=int, default=0, metavar="K",
                   help="validate on the seed's K-th block of --val-fraction (0, 1, ...: disjoint folds for "
                        "cross-validation)")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="keep the epoch with the best validation Inf-Net Dice, or the last epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, help="stop after this many minutes (after the current epoch)")
    p.add_argument("--hu-window-from", type=Path, metavar="JSON",
                   help="HU window for CT volumes, as measured by 'lightseg calibrate-window'")
    p.add_argument("--test-time-flips", metavar="FLIPS",
                   help="inference averages the plain pass with these flipped ones: horizontal, vertical, "
                        "horizontal,vertical or none (recorded in the card; default: --init's, else none)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--description", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--force", action="store_true", help="overwrite an existing model of that name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import registry
    from ..devices import pick_device
    from ..training.augment import AugmentConfig
    from ..training.loop import TrainConfig
    from ..models import SIZE_MULTIPLE
    from ..postprocess import settings_for_new_network
    from ..training.recipe import TrainRequest, arch_recipe, describe_command, print_epoch, run_training
    from ..training.slices import load_image_folders

    recipe = arch_recipe(args.arch)
    multiple = SIZE_MULTIPLE[recipe["architecture"]]
    if args.input_size and args.input_size % multiple:
        raise LightSegError(f"--input-size must be a multiple of {multiple} for {args.arch}", args.input_size)
    if not 0 < args.tversky_beta < 1:
        raise LightSegError("--tversky-beta must be between 0 and 1", args.tversky_beta)
    if not 0 < args.min_contrast <= 1:
        raise LightSegError("--min-contrast must be above 0 and at most 1", args.min_contrast)
    if args.neighbour_mm < 0:
        raise LightSegError("--neighbour-mm must be 0 or more", args.neighbour_mm)
    if args.neighbour_mm and recipe["config"]["in_channels"] != 3:
        raise LightSegError(f"--neighbour-mm needs a network with three input channels (miniseg); {args.arch} has "
                            f"{recipe['config']['in_channels']}", args.neighbour_mm)
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or registry.user_dir()
    if (output / f"{args.name}.json").exists() and not args.force:
        raise LightSegError("a model of that name exists there (use --force to replace it)", output / f"{args.name}.json")
    init = registry.resolve(args.init) if args.init else None
    flips = parse_flips_option(args.test_time_flips)
    if flips is None:
        flips = tuple(init.test_time_flips) if init else ()
    window = load_window(args.hu_window_from) if args.hu_window_from else (init.hu_window if init else None)
    if args.volumes or args.labels:
        if not (args.volumes and args.labels) or args.images or args.masks:
            raise LightSegError("give either --images and --masks, or --volumes and --labels")
        if window is None:
            raise LightSegError("volume training needs an HU window: --hu-window-from, or --init with a model that has one")
        from ..io import pair_by_name
        from ..training.slices import volume_slices

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
    pseudo, pseudo_description = _pseudo_slices(args)
    input_size = args.input_size or recipe["input_size"]
    ct, ct_description = _ct_slices(args, window, input_size, init)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      input_size=input_size, seed=args.seed,
                      class_weights=args.class_weights, dice_weight=args.dice_weight, tversky_beta=args.tversky_beta,
                      minutes=args.minutes, device=str(pick_device(args.device)),
                      pseudo_per_step=args.pseudo_per_step if pseudo else 0, pseudo_weight=args.pseudo_weight,
                      ct_per_step=args.ct_per_step if ct else 0, ct_weight=args.ct_weight,
                      augment=AugmentConfig(min_contrast=args.min_contrast))
    request = TrainRequest(
        arch=args.arch, name=args.name, output_dir=output, data=data,
        data_description=description,
        val_fraction=args.val_fraction, val_fold=args.val_fold, keep=args.keep, init=init,
        hu_window=window, test_time_flips=flips,
        postprocessing=settings_for_new_network(init.postprocessing if init else None), version=args.version,
        description=args.description,
        pseudo=pseudo, pseudo_description=pseudo_description, ct=ct, ct_description=ct_description,
        extra_card={"neighbour_slices_mm": args.neighbour_mm} if args.neighbour_mm else {})
    path, result = run_training(request, cfg, describe_command(), on_epoch=print_epoch)
    print(f"saved {path} (epoch {result.best_epoch if args.keep == 'best' else len(result.history)} kept, "
          f"{result.stopped}, {result.seconds / 60:.1f} min)")
    return 0


def _pseudo_slices(args: argparse.Namespace) -> tuple[SliceSet | None, dict | None]:
    """The pseudo-labelled slices of --pseudo-images/--pseudo-masks and where they came from, or (None, None).

    How many go into each step and their weight are hyper-parameters (TrainConfig), recorded with the others.
    """
    if not (args.pseudo_images or args.pseudo_masks):
        return None, None
    if not (args.pseudo_images and args.pseudo_masks):
        raise LightSegError("give both --pseudo-images and --pseudo-masks")
    if args.pseudo_per_step < 1:
        raise LightSegError("--pseudo-per-step must be at least 1", args.pseudo_per_step)
    from ..training.pseudo_labels import read_provenance
    from ..training.slices import load_image_folders

    pseudo = load_image_folders(args.pseudo_images, args.pseudo_masks, soft=True)
    return pseudo, {"images": str(args.pseudo_images), "masks": str(args.pseudo_masks), "slices": len(pseudo),
                    "labelled_by": read_provenance(args.pseudo_masks)}


def _ct_slices(args: argparse.Namespace, window, input_size: int, init) -> tuple[SliceSet | None, dict | None]:
    """The CT slices of --negative-volumes and --slice-labelled-volumes, cut as the engine cuts them, and their
    summary (counts and folders), or (None, None)."""
    if not (args.negative_volumes or args.slice_labelled_volumes):
        return None, None
    if window is None:
        raise LightSegError("CT slices need an HU window: --hu-window-from, or --init with a model that has one")
    if args.ct_per_step < 1:
        raise LightSegError("--ct-per-step must be at least 1", args.ct_per_step)
    from ..training.ct_slices import ct_inputs, ct_name, negative_ct_slices, slice_labelled_ct_slices
    from ..training.slices import SliceSet

    size = (input_size, input_size)
    data, description = SliceSet(), {}
    if args.negative_volumes:
        paths = [p for folder in args.negative_volumes for p in ct_inputs(folder)]
        negatives = negative_ct_slices(paths, window, size, neighbour_mm=args.neighbour_mm)
        data.extend(negatives.slices)
        description["negative_volumes"] = {"folders": [str(f) for f in args.negative_volumes],
                                           "cts": [ct_name(p) for p in paths], **negatives.summary}
    if args.slice_labelled_volumes:
        teacher = None
        if args.infected_slices == "teacher":
            from .. import registry
            from ..engine import Segmenter

            teacher_card = registry.resolve(args.teacher) if args.teacher else init
            if teacher_card is None:
                raise LightSegError("--infected-slices teacher needs --teacher or --init")
            teacher = Segmenter(teacher_card, args.device)
        paths = [p for folder in args.slice_labelled_volumes for p in ct_inputs(folder)]
        labelled = slice_labelled_ct_slices(paths, window, size, teacher, args.neighbour_mm)
        data.extend(labelled.slices)
        description["slice_labelled_volumes"] = {"folders": [str(f) for f in args.slice_labelled_volumes],
                                                 "cts": [ct_name(p) for p in paths], **labelled.summary}
    return data, description
