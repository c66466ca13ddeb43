"""Does fine-tuning fix a domain shift? Base vs fine-tuned Dice on held-out slices, with and without the shift.

    python benchmarks/finetune_domain_shift.py [--base miniseg-covid] [--slices 24] [--threads 2]

A "site" is made from the radiologist-labelled COVID-SemiSeg slices with a deliberate scanner shift, beyond the
training augmentation: a narrower display window (a different HU window at export), a sharp reconstruction kernel
(unsharp mask) and stronger noise. The base model's validation fold (slices it never trained on) is the held-out set;
the fine-tune set is drawn from its training slices, shifted. `lightseg finetune` runs with default settings as a
user would (a subprocess, its wall time measured), then base and new model are scored on the held-out slices,
shifted and unshifted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.cards import ModelCard  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.evaluation import evaluate_slices  # noqa: E402
from LightSegLib.training.slices import SliceSet, load_image_folders  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"


def site_shift(image01: np.ndarray, seed: int) -> np.ndarray:
    """Narrower window, sharp kernel, stronger noise: a scanner and export the base model never saw."""
    rng = np.random.default_rng(seed)
    x = np.clip((image01 - 0.3) / 0.55, 0, 1)  # window 55 % as wide, shifted up
    x = x + 1.2 * (x - ndimage.gaussian_filter(x, 1.5))  # sharp reconstruction kernel
    x = x + rng.normal(0, 0.07, x.shape)  # low dose
    return np.clip(x, 0, 1).astype(np.float32)


def shifted(data: SliceSet, seed: int) -> SliceSet:
    return SliceSet([site_shift(im, seed + i) for i, im in enumerate(data.images)], data.targets, data.names)


def write_folder(data: SliceSet, folder: Path) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for name, image, target in zip(data.names, data.images, data.targets):
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(folder / "images" / f"{name}.png")
        Image.fromarray((target > 0.5).astype(np.uint8) * 255).save(folder / "masks" / f"{name}.png")


def scores(card: ModelCard, data: SliceSet) -> tuple[float, float]:
    mean = evaluate_slices(Segmenter(card, "cpu"), data)["mean"]
    return mean["dice"], mean["infnet_dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="miniseg-covid")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further lightseg finetune options")
    args = parser.parse_args()

    base = registry.resolve(args.base)
    data = load_image_folders(DATA / "images", DATA / "masks")
    held_out_names = set(base.training["validation_names"])
    held_out = data.subset([i for i, n in enumerate(data.names) if n in held_out_names])
    pool = [i for i, n in enumerate(data.names) if n not in held_out_names]
    picks = np.random.default_rng(args.seed).choice(pool, size=min(args.slices, len(pool)), replace=False)
    site = shifted(data.subset(sorted(picks)), seed=1000)
    held_out_shifted = shifted(held_out, seed=2000)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_folder(site, tmp / "site")
        env = {**os.environ, "LIGHTSEG_HOME": str(tmp / "home")}
        command = [sys.executable, "-m", "LightSegLib", "finetune", "--base", args.base, "--name", "site-shifted",
                   "--images", str(tmp / "site" / "images"), "--masks", str(tmp / "site" / "masks"),
                   "--threads", str(args.threads), "--device", "cpu", *args.extra]
        start = time.perf_counter()
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"finetune failed: {run.stderr.strip()}")
        tuned = ModelCard.load(tmp / "home" / "models" / "site-shifted.json")
        rows = []
        for label, held in (("shifted held-out", held_out_shifted), ("unshifted held-out", held_out)):
            (bd, bi), (td, ti) = scores(base, held), scores(tuned, held)
            rows.append((label, bd, td, td - bd, bi, ti, ti - bi))

    print(f"fine-tune: {len(site)} shifted slices, {tuned.training['epochs_run']} epochs "
          f"({tuned.training['stopped']}, best epoch {tuned.training['best_epoch']}), wall time {wall:.0f} s "
          f"({args.threads} threads); held-out: {len(held_out)} slices the base never trained on")
    print(f"{'held-out set':<20} {'base Dice':>9} {'tuned Dice':>10} {'change':>7}   "
          f"{'base InfNet':>11} {'tuned InfNet':>12} {'change':>7}")
    for label, bd, td, dd, bi, ti, di in rows:
        print(f"{label:<20} {bd:9.4f} {td:10.4f} {dd:+7.4f}   {bi:11.4f} {ti:12.4f} {di:+7.4f}")


if __name__ == "__main__":
    main()
