"""Training PatternNet on slices whose masks separate ground-glass (1) from consolidation (2), and its measures.

The loss is binary cross-entropy on the labelled infection pixels only: outside the infection the infection model
decides, so the pattern network is never asked there. Augmentation is geometric plus mild intensity jitter: the
density of a pixel is the main cue, so the window and gamma move less than in the infection model's training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LightSegError
from ..training.augment import AugmentConfig, augment
from ..training.slices import SliceSet, image_files, read_gray
from .net import PatternNet
from .pattern_map import CONSOLIDATION, GROUND_GLASS, pattern_map

PATTERN_AUGMENT = AugmentConfig(window_jitter=0.04, gamma_range=(0.9, 1.1), max_noise=0.02)


class PatternSlices(SliceSet):
    """Images in [0, 1] whose targets are pattern maps (uint8: 0 none, 1 ground-glass, 2 consolidation)."""

    @property
    def patterns(self) -> list[np.ndarray]:
        return self.targets


def load_pattern_slices(images_dir: Path, masks_dir: Path) -> PatternSlices:
    """Pairs ``images_dir/NAME.*`` with the palette PNG ``masks_dir/NAME.png`` holding 0, 1 and 2."""
    from PIL import Image

    masks = {p.stem: p for p in image_files(masks_dir)}
    result = PatternSlices()
    for image_path in image_files(images_dir):
        mask_path = masks.get(image_path.stem)
        if mask_path is None:
            continue
        with Image.open(mask_path) as im:
            pattern = np.asarray(im if im.mode == "P" else im.convert("L")).astype(np.uint8)
        if pattern.max() > CONSOLIDATION:
            raise LightSegError(f"pattern mask holds value {pattern.max()}; expected 0, 1 (ground-glass) and 2 "
                                "(consolidation)", mask_path)
        image = read_gray(image_path)
        if image.shape != pattern.shape:
            raise LightSegError(f"mask size {pattern.shape} differs from its image {image.shape}", mask_path)
        result.images.append(image)
        result.targets.append(pattern)
        result.names.append(image_path.stem)
    if not result.images:
        raise LightSegError(f"no image with a pattern mask of the same name in {masks_dir}", images_dir)
    return result


@dataclass
class PatternTrainConfig:
    steps: int = 800
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    size: int = 288
    seed: int = 0


def _tensors(data: PatternSlices, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,1,S,S) images and (N,2,S,S) targets: infection, consolidation."""
    def resized(array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array, np.float32))[None, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    images = torch.cat([resized(im) for im in data.images])
    targets = torch.cat([torch.cat([resized(p > 0), resized(p == CONSOLIDATION)], 1) for p in data.patterns])
    return images, targets


def normalisation(data: PatternSlices) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels (the network's input normalisation)."""
    pixels = np.concatenate([im.ravel() for im in data.images])
    return float(pixels.mean()), float(pixels.std())


def train_pattern_net(data: PatternSlices, cfg: PatternTrainConfig) -> tuple[PatternNet, dict]:
    """A PatternNet trained on ``data``; returns it (eval mode) with its normalisation and the run's figures."""
    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mean, std = normalisation(data)
    images, targets = _tensors(data, cfg.size)
    net = PatternNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    net.train()
    losses = []
    for step in range(cfg.steps):
        for group in optimiser.param_groups:  # cosine decay to zero
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        pick = torch.randint(len(images), (cfg.batch_size,), generator=gen)
        x, y = augment(images[pick], targets[pick], PATTERN_AUGMENT, gen)
        inside = y[:, :1] > 0.5
        if not inside.any():
            continue
        logits = net.full_size((x - mean) / std)
        loss = F.binary_cross_entropy_with_logits(logits[inside], (y[:, 1:] > 0.5)[inside].float())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    net.eval()
    return net, {"mean": mean, "std": std, "steps": cfg.steps, "final_loss": float(np.mean(losses[-50:])),
                 "seconds": round(time.monotonic() - start, 1)}


@torch.inference_mode()
def consolidation_probability(net: PatternNet, mean: float, std: float, image01: np.ndarray, size: int = 288
                              ) -> np.ndarray:
    """Consolidation probability of one [0, 1] slice at its own size (resized to the network's input and back)."""
    x = torch.from_numpy(np.ascontiguousarray(image01, np.float32))[None, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    prob = torch.sigmoid(net.full_size((x - mean) / std))
    return F.interpolate(prob, size=image01.shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (a slice without that pattern, correctly left empty)."""
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (predicted & truth).sum() / total)


def split_patterns(infection: np.ndarray, consolidation_prob: np.ndarray) -> np.ndarray:
    """The pattern map of a boolean infection mask (see ``pattern_map``)."""
    return pattern_map(infection.astype(np.uint8), consolidation_prob)


def pattern_dice(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per-slice Dice of ground-glass and of consolidation between two pattern maps."""
    return {"ground_glass": dice(predicted == GROUND_GLASS, truth == GROUND_GLASS),
            "consolidation": dice(predicted == CONSOLIDATION, truth == CONSOLIDATION)}


def gray_level_patterns(infection: np.ndarray, image: np.ndarray, level: float) -> np.ndarray:
    """The rule a network must beat: consolidation where the infected pixel's gray value is at least ``level``."""
    return split_patterns(infection, (image >= level).astype(np.float32))


def best_gray_level(train: PatternSlices) -> float:
    """The gray level (0.2 to 0.9 in steps of 0.01) with the best summed Dice on the labelled infection of ``train``."""
    def score(level: float) -> float:
        return sum(sum(pattern_dice(gray_level_patterns(p > 0, im, level), p).values())
                   for im, p in zip(train.images, train.patterns))

    return float(max(np.linspace(0.2, 0.9, 71), key=score))


def threshold_baseline(train: PatternSlices, validation: PatternSlices) -> list[dict[str, float]]:
    """The gray-level rule, its level chosen on ``train``, scored per slice of ``validation`` inside its labelled
    infection."""
    level = best_gray_level(train)
    return [pattern_dice(gray_level_patterns(p > 0, im, level), p)
            for im, p in zip(validation.images, validation.patterns)]


def cross_validate(data: PatternSlices, folds: int, cfg: PatternTrainConfig, log=print) -> dict:
    """K-fold figures of the recipe (folds of ``split_fold`` with seed 0, the binary models' folds): per-slice
    ground-glass and consolidation Dice inside the labelled infection, for the network and the threshold rule."""
    from ..training.slices import split_fold

    network, baseline = [], []
    for fold in range(folds):
        train_idx, val_idx = split_fold(len(data), 1 / folds, 0, fold)
        validation = data.subset(val_idx)
        net, info = train_pattern_net(data.subset(train_idx), cfg)
        network += [pattern_dice(split_patterns(p > 0, consolidation_probability(net, info["mean"], info["std"], im,
                                                                                  cfg.size)), p)
                    for im, p in zip(validation.images, validation.patterns)]
        baseline += threshold_baseline(data.subset(train_idx), validation)
        log(f"fold {fold}: {len(val_idx)} slices, {info['seconds']:.0f} s")

    def summary(rows: list[dict[str, float]]) -> dict[str, float]:
        out = {}
        for key in ("ground_glass", "consolidation"):
            values = np.array([r[key] for r in rows])
            out[f"{key}_dice"] = round(float(values.mean()), 4)
            out[f"{key}_dice_standard_error"] = round(float(values.std(ddof=1) / np.sqrt(len(values))), 4)
        return out

    difference = np.array([n["ground_glass"] + n["consolidation"] - b["ground_glass"] - b["consolidation"]
                           for n, b in zip(network, baseline)]) / 2
    return {"folds": folds, "images": len(network), "inside": "the radiologists' infection mask",
            "network": summary(network), "gray_level_threshold": summary(baseline),
            "mean_dice_gain_over_threshold": round(float(difference.mean()), 4),
            "mean_dice_gain_standard_error": round(float(difference.std(ddof=1) / np.sqrt(len(difference))), 4)}
