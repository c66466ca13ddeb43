"""Evaluating a model: on labelled 2D slices (pixel metrics) and on a CT with slice-level labels (detection)."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import metrics
from .engine import Segmenter, Segmentation
from .errors import LightSegError
from .geometry import axial_positions
from .io import INFECTION
from .network import predict_image
from .training.slices import SliceSet

MIN_INFECTED_AREA_MM2 = 20.0  # predicted infection on a slice at least this large counts as "slice infected"


def evaluate_slices(segmenter: Segmenter, data: SliceSet) -> dict[str, Any]:
    """Per-image and mean metrics (Dice@0.5, IoU, sensitivity, specificity, HD95 in pixels, Inf-Net Dice)."""
    per_image = []
    for name, image, target in zip(data.names, data.images, data.targets):
        probability = predict_image(segmenter.model, segmenter.spec, image, segmenter.device)
        per_image.append((name, metrics.slice_metrics(probability, target > 0.5)))
    return {
        "model": segmenter.card.id,
        "test_time_flips": list(segmenter.spec.flips),
        "mean": metrics.summarise([m for _, m in per_image]),
        "per_image": [{"image": name, **asdict(m)} for name, m in per_image],
        "hd95_unit": "pixels",
    }


def read_slice_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(slice_location_mm, infection_visible) columns of a COVID-CT-MD style CSV."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        locations = np.array([float(r["slice_location_mm"]) for r in rows])
        visible = np.array([int(r["infection_visible"]) for r in rows], bool)
    except (OSError, KeyError, ValueError) as exc:
        raise LightSegError(f"not a slice-label CSV ({type(exc).__name__}: {exc})", path) from None
    return locations, visible


def infected_area_per_slice(result: Segmentation, image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Predicted infected area (mm^2) of each axial slice, and each slice's superior-inferior position (mm)."""
    assert result.view is not None
    labels_c = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
    area = (labels_c == INFECTION).sum(axis=(1, 2)) * result.view.spacing[1] * result.view.spacing[2]
    return area, axial_positions(image, result.view)


def area_at_labelled_slices(area_mm2: np.ndarray, positions: np.ndarray, locations: np.ndarray) -> np.ndarray:
    """Predicted infected area of the slice nearest each labelled slice location, in label order."""
    return area_mm2[[int(np.argmin(np.abs(positions - loc))) for loc in locations]]


def slice_level_agreement(area_mm2: np.ndarray, positions: np.ndarray, locations: np.ndarray,
                          visible: np.ndarray, min_area_mm2: float = MIN_INFECTED_AREA_MM2) -> dict[str, Any]:
    """Compare predicted infected area per slice with radiologists' slice labels (matched by position)."""
    scores = area_at_labelled_slices(area_mm2, positions, locations)
    predicted = scores >= min_area_mm2
    tp, fn = int((predicted & visible).sum()), int((~predicted & visible).sum())
    tn, fp = int((~predicted & ~visible).sum()), int((predicted & ~visible).sum())
    return {
        "slices": len(visible), "labelled_infected": int(visible.sum()),
        "threshold_mm2": min_area_mm2,
        "sensitivity": tp / max(tp + fn, 1), "specificity": tn / max(tn + fp, 1),
        "auc_infected_area": metrics.roc_auc(scores, visible),
        "mean_area_infected_slices_mm2": float(scores[visible].mean()) if visible.any() else 0.0,
        "mean_area_clear_slices_mm2": float(scores[~visible].mean()) if (~visible).any() else 0.0,
    }
