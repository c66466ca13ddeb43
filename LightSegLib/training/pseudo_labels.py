"""Pseudo-labels: a model's infection probabilities for unlabelled slices, written as 0-255 PNG masks (soft, or hard
0/255 at a probability threshold).

They are the input ``lightseg train --pseudo-images/--pseudo-masks`` and ``--soft-labels`` expect, so a site can
self-train on its own unlabelled slices with its own model instead of Inf-Net's labels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine import Segmenter
from ..errors import LightSegError
from ..network import predict_image
from .slices import read_gray

PROVENANCE_FILE = "pseudo-labels.json"  # beside the masks: which model made them (train copies it into its card)


def labeller_of(segmenter: Segmenter, command: list[str]) -> dict:
    """What ``PROVENANCE_FILE`` says about the model that labels: enough to tell it apart and to remake it."""
    card = segmenter.card
    return {"model": card.id, "version": card.version, "weights_sha256": card.weights_sha256,
            "model_training_command": card.training.get("command"), "command": " ".join(command)}


def read_provenance(masks_dir: Path) -> dict | None:
    """The ``PROVENANCE_FILE`` of a pseudo-label folder, or None for labels made elsewhere (Inf-Net's, say)."""
    path = Path(masks_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LightSegError(f"cannot read the pseudo-label provenance ({exc})", path) from None


def check_request(out_dir: Path, force: bool, threshold: float | None) -> None:
    """Raise if ``write_pseudo_labels`` would refuse these arguments, so a caller can check before loading a model."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise LightSegError("pseudo-label threshold must be in (0, 1]", threshold)
    if out_dir.exists() and not force:
        raise LightSegError("output exists (use --force to overwrite it)", out_dir)
    if not out_dir.parent.is_dir():
        raise LightSegError("output folder does not exist", out_dir.parent)


def write_pseudo_labels(segmenter: Segmenter, images: list[Path], out_dir: Path, provenance: dict,
                        force: bool = False, on_image: Callable[[], None] | None = None,
                        threshold: float | None = None) -> None:
    """Write ``out_dir/NAME.png`` for each of ``images`` (``require_image_files``): the probability x 255, rounded, or
    with ``threshold`` 255 where the probability is at least ``threshold`` and 0 elsewhere. ``provenance``, with the
    images' folder, their count and the threshold, goes to ``PROVENANCE_FILE``.

    The folder appears complete or not at all: it is filled under a temporary name beside it and renamed at the end.
    An existing ``out_dir`` is replaced only with ``force``.
    """
    check_request(out_dir, force, threshold)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for path in images:
            probability = predict_image(segmenter.model, segmenter.spec, read_gray(path), segmenter.device)
            if threshold is None:
                mask = np.rint(probability * 255.0).astype(np.uint8)
            else:
                mask = np.where(probability >= threshold, 255, 0).astype(np.uint8)
            Image.fromarray(mask).save(staging / f"{path.stem}.png")
            if on_image:
                on_image()
        record = {**provenance, "images": str(images[0].parent), "slices": len(images), "threshold": threshold}
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
