"""How much does one 10-slice validation fold say? The same recipe on several 40/10 splits of the 50 slices.

    python benchmarks/fold_variance.py [--init build/models/miniseg-pseudo.json] [--seeds 0 1 2 3 4] [--epochs 100]
                                       [--lr 1e-3] [--then EPOCHS LR ...] [--jobs 1] [--extra TRAIN_OPTION ...]
    python benchmarks/fold_variance.py --folds 5 ...     # cross-validation: disjoint folds 0-4 of split seed 0
    python benchmarks/fold_variance.py --arch ulite --init build/ulite11/ulite-pseudo.json ...   # another network

Random splits (``--seeds``): each seed draws its own validation fold (and training order). Cross-validation
(``--folds K``): folds 0..K-1 of seed 0 (``lightseg train --val-fold``) are disjoint and validate every slice once;
fold 0 is the fold every model card uses. Each split runs `lightseg train` from the same starting weights, then
each ``--then EPOCHS LR`` stage continues from the previous stage's kept model. A ``{split}`` in ``--init`` names a
starting model per split, so a later stage can be cross-validated from split models kept (``--models``) by an earlier
run: ``--init 'build/cv5-stage1/split{split}-stage1.json'``. ``{split}`` in an ``--extra`` option is replaced too
(per-split pseudo-labels: ``--pseudo-masks 'build/pseudo-self/split{split}'``). ``--resume`` reuses the split
stages already kept in ``--models`` (same epochs, lr and fold, checked), so an interrupted run, or one whose fold 0 was
trained first on its own to screen the recipe, goes on where it stopped. ``--test-time-flips`` goes to training (the
cards) and to scoring; a reused stage is scored with them too (flips change inference, not the weights).

The table shows each split's best-epoch and last-epoch validation Inf-Net Dice and Dice@0.5 (of the last stage),
their mean and standard deviation over the splits, and the kept models' per-image figures pooled over every
validated slice (``lightseg evaluate``), with the standard error of that mean. With ``--keep last`` (the default)
nothing is selected on the validation slices, so the pooled figure is an estimate for unseen slices.
``--jobs 2`` trains two splits at a time, one torch thread each (on 2 cores that is about 1.3x the throughput of one
run on two threads).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"


def run_lightseg(arguments: list[str], what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "LightSegLib", *arguments], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{what} failed: {result.stderr.strip()}")


def for_split(text: str, split: int) -> str:
    """``text`` with ``{split}`` replaced by the split's number."""
    return text.replace("{split}", str(split))


def starting_model(args: argparse.Namespace, split: int) -> Path:
    """``--init`` for this split."""
    return Path(for_split(str(args.init), split))


def split_options(args: argparse.Namespace, split: int) -> list[str]:
    """``--extra`` for this split."""
    return [for_split(option, split) for option in args.extra]


def flips_option(args: argparse.Namespace) -> list[str]:
    """``--test-time-flips`` for lightseg train and evaluate, where given."""
    return ["--test-time-flips", args.test_time_flips] if args.test_time_flips else []


def train_split(split: int, args: argparse.Namespace, out: Path) -> dict:
    """Train every stage of one split, then score its kept model per image on the split's validation slices."""
    fold_option = ["--seed", "0", "--val-fold", str(split)] if args.folds else ["--seed", str(split)]
    stages = [(args.epochs, args.lr), *args.then]
    init, seconds = starting_model(args, split), 0.0
    for number, (epochs, lr) in enumerate(stages, 1):
        name = f"split{split}-stage{number}"
        if args.resume and (out / f"{name}.json").exists():
            check_reusable(out / f"{name}.json", epochs, lr, fold_option)
        else:
            run_lightseg(["train", "--arch", args.arch, "--images", str(DATA / "images"), "--masks",
                          str(DATA / "masks"), "--name", name, "-o", str(out), "--init", str(init),
                          "--epochs", str(int(epochs)), "--lr", str(lr), "--val-fraction", "0.2", *fold_option,
                          "--keep", args.keep, "--threads", str(args.threads), *flips_option(args),
                          *split_options(args, split)],
                         f"train, split {split}, stage {number}")
        init = out / f"{name}.json"
        card = json.loads(init.read_text())
        seconds += card["training"]["seconds"]
    history = card["training"]["history"]
    best = max(history, key=lambda e: e["val_infnet_dice"])
    scores = out / f"split{split}-scores.json"
    # A resumed split is re-scored: its scores file is derived from the (checked) kept model, so replacing it is safe.
    rescore = ["--force"] if args.resume else []
    run_lightseg(["evaluate", "--model", str(init), "--images", str(DATA / "images"), "--masks", str(DATA / "masks"),
                  "--only", *card["training"]["validation_names"], "--json", str(scores), "--device", "cpu",
                  *flips_option(args), *rescore],
                 f"evaluate, split {split}")
    return {"split": split, "validation": card["training"]["validation_names"], "best_infnet": best["val_infnet_dice"],
            "best_dice": best["val_dice"], "last_infnet": history[-1]["val_infnet_dice"],
            "last_dice": history[-1]["val_dice"],
            "minutes": seconds / 60,
            "per_image": json.loads(scores.read_text())["per_image"]}


def check_reusable(card_path: Path, epochs: float, lr: float, fold_option: list[str]) -> None:
    """Refuse to reuse (``--resume``) a kept stage model trained for other epochs, lr or validation fold."""
    training = json.loads(card_path.read_text())["training"]
    recorded = training["hyperparameters"]
    words = shlex.split(training["command"])
    options = dict(zip(words, words[1:]))
    same_fold = all(options.get(option) == value for option, value in zip(fold_option[::2], fold_option[1::2]))
    if (recorded["epochs"], recorded["lr"]) != (int(epochs), lr) or not same_fold:
        sys.exit(f"{card_path}: trained for {recorded['epochs']} epochs at lr {recorded['lr']} ({training['command']}), "
                 f"not {int(epochs)} at {lr} with {' '.join(fold_option)}; remove it or leave out --resume")


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    stages = " then ".join(f"{int(e)} epochs at lr {lr}" for e, lr in [(args.epochs, args.lr), *args.then])
    kind = f"{args.folds}-fold cross-validation (seed 0)" if args.folds else "random splits"
    options = " ".join(flips_option(args) + args.extra)
    print(f"\n{kind}: {args.arch}, {stages} from {args.init.name}, keep {args.keep} {options}")
    print(f"{'split':<8} {'best InfNet':>12} {'best Dice':>10} {'last InfNet':>12} {'last Dice':>10} "
          f"{'kept InfNet':>12} {'kept Dice':>10}")
    for row in rows:
        kept = [kept_mean(row, k) for k in ("infnet_dice", "dice")]
        print(f"{row['split']:<8} {row['best_infnet']:12.4f} {row['best_dice']:10.4f} {row['last_infnet']:12.4f} "
              f"{row['last_dice']:10.4f} {kept[0]:12.4f} {kept[1]:10.4f}")
    for name, aggregate in (("mean", statistics.mean), ("sd", statistics.stdev if len(rows) > 1 else lambda v: 0.0)):
        values = [aggregate([r[k] for r in rows]) for k in ("best_infnet", "best_dice", "last_infnet", "last_dice")]
        print(f"{name:<8} {values[0]:12.4f} {values[1]:10.4f} {values[2]:12.4f} {values[3]:10.4f}")
    figures = pooled(rows)
    for key, label in (("infnet_dice", "Inf-Net mean Dice"), ("dice", "Dice@0.5")):
        print(f"kept models, per image over {figures['images']} validated slices: {label} {figures[key]:.4f} "
              f"(standard error {figures[key + '_standard_error']:.4f})")


def kept_mean(row: dict, key: str) -> float:
    """One split's kept model, mean per-image ``key`` over its validation slices (as scored by lightseg evaluate)."""
    return statistics.mean(image[key] for image in row["per_image"])


def pooled(rows: list[dict]) -> dict:
    """Mean per-image Inf-Net Dice and Dice@0.5 over every validated slice, with standard errors."""
    images = [image for row in rows for image in row["per_image"]]
    figures: dict = {"images": len(images)}
    for key in ("infnet_dice", "dice"):
        values = [image[key] for image in images]
        figures[key] = statistics.mean(values)
        figures[key + "_standard_error"] = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return figures


def starting_command(init: Path) -> str | None:
    """How the starting model was trained, where its card says so (the other folds' differ only in --val-fold)."""
    return json.loads(init.read_text()).get("training", {}).get("command")


def record_in_card(card_path: Path, rows: list[dict], args: argparse.Namespace) -> None:
    """Write the cross-validated figures of the card's recipe into its ``validation.cross_validation``."""
    card = json.loads(card_path.read_text())
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in pooled(rows).items()}
    card["validation"]["cross_validation"] = {
        **figures,
        "folds": len(rows),
        "kept_checkpoint": args.keep,
        "per_fold_infnet_dice": [round(kept_mean(row, "infnet_dice"), 4) for row in rows],
        "command": "python benchmarks/fold_variance.py " + " ".join(sys.argv[1:]),
        "starting_model_of_fold_0": starting_command(starting_model(args, 0)),
        "note": "each slice scored by the fold model that never saw it: the estimate for unseen slices",
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="miniseg", help="network trained per split (lightseg train --arch)")
    parser.add_argument("--init", type=Path, default=REPO / "build" / "models" / "miniseg-pseudo.json",
                        help="starting model; {split} in the path is replaced by the split's number")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--folds", type=int, help="cross-validate over folds 0..K-1 of seed 0 instead of --seeds")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--then", nargs=2, type=float, action="append", default=[], metavar=("EPOCHS", "LR"),
                        help="a further stage from the previous stage's kept model (repeatable)")
    parser.add_argument("--keep", choices=("best", "last"), default="last")
    parser.add_argument("--jobs", type=int, default=1, help="splits trained at once")
    parser.add_argument("--threads", type=int, help="torch threads per run (default 2 divided among the jobs)")
    parser.add_argument("--json", type=Path, help="also write every split's figures and per-image scores here")
    parser.add_argument("--models", type=Path, help="keep the split models in this folder (default: a temporary one)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse split stages already kept in --models (an interrupted run goes on where it stopped)")
    parser.add_argument("--record-in", type=Path, metavar="CARD",
                        help="write the cross-validated figures into this model card (the recipe it was trained with)")
    parser.add_argument("--test-time-flips", metavar="FLIPS",
                        help="recorded in each split model's card and used to score it (lightseg train/evaluate); "
                             "a stage reused by --resume is scored with them, as they do not change its weights")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further lightseg train options")
    args = parser.parse_args()
    if args.resume and not args.models:
        parser.error("--resume needs --models")
    if args.record_in and not (args.folds and args.record_in.is_file()):
        parser.error("--record-in needs --folds and an existing model card")
    args.threads = args.threads or max(1, 2 // args.jobs)
    splits = list(range(args.folds)) if args.folds else args.seeds

    def one(split: int) -> dict:
        row = train_split(split, args, args.models or Path(tmp))
        print(f"split {split}: best {row['best_infnet']:.4f} / {row['best_dice']:.4f}, last {row['last_infnet']:.4f} / "
              f"{row['last_dice']:.4f} ({row['minutes']:.1f} min); validation {' '.join(row['validation'])}",
              flush=True)
        return row

    if args.models:
        args.models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, splits))
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.record_in:
        record_in_card(args.record_in, rows, args)


if __name__ == "__main__":
    main()
