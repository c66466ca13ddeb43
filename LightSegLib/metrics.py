"""Segmentation metrics: overlap at a threshold, Inf-Net-style threshold-averaged Dice, HD95."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

N_LEVELS = 256


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    denominator = pred.sum() + truth.sum()
    return 1.0 if denominator == 0 else float(2 * np.logical_and(pred, truth).sum() / denominator)


def infnet_mean_dice(probability: np.ndarray, truth: np.ndarray) -> float:
    """Dice averaged over the 256 thresholds 1, 254/255, ..., 0 (the Inf-Net evaluation protocol).

    The probability map is quantised to 8 bits first, as Inf-Net's saved predictions are, so threshold t = k/255
    selects the pixels whose level is >= k. Computed from cumulative histograms, not 256 passes over the image.
    """
    levels = np.clip(np.rint(probability * (N_LEVELS - 1)), 0, N_LEVELS - 1).astype(np.int64).ravel()
    truth = truth.astype(bool).ravel()
    fg_hist = np.bincount(levels[truth], minlength=N_LEVELS)
    all_hist = np.bincount(levels, minlength=N_LEVELS)
    # counts of pixels at level >= k, for k = 0..255
    tp = np.cumsum(fg_hist[::-1])[::-1]
    predicted = np.cumsum(all_hist[::-1])[::-1]
    denominator = predicted + truth.sum()
    dices = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    return float(dices.mean())


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th percentile of the symmetric surface distance (in spacing units); NaN if either mask is empty."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() or not truth.any():
        return float("nan")
    spacing = spacing or (1.0,) * pred.ndim

    def surface(mask: np.ndarray) -> np.ndarray:
        return mask & ~ndimage.binary_erosion(mask, border_value=0)

    pred_surface, truth_surface = surface(pred), surface(truth)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    distances = np.concatenate([to_truth[pred_surface], to_pred[truth_surface]])
    return float(np.percentile(distances, 95))


@dataclass
class SliceMetrics:
    """Metrics of one image, thresholded at 0.5 except ``infnet_dice``."""

    dice: float
    iou: float
    sensitivity: float
    specificity: float
    hd95: float
    infnet_dice: float


def slice_metrics(probability: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None) -> SliceMetrics:
    """All metrics of one probability map against a binary ground truth."""
    pred = probability >= 0.5
    truth = truth.astype(bool)
    tp = np.logical_and(pred, truth).sum()
    fp = np.logical_and(pred, ~truth).sum()
    fn = np.logical_and(~pred, truth).sum()
    tn = pred.size - tp - fp - fn
    union = tp + fp + fn
    return SliceMetrics(
        dice=dice(pred, truth),
        iou=1.0 if union == 0 else float(tp / union),
        sensitivity=1.0 if tp + fn == 0 else float(tp / (tp + fn)),
        specificity=1.0 if tn + fp == 0 else float(tn / (tn + fp)),
        hd95=hd95(pred, truth, spacing),
        infnet_dice=infnet_mean_dice(probability, truth),
    )


def summarise(per_image: list[SliceMetrics]) -> dict[str, float]:
    """Mean of each metric over images (NaN HD95 values, from empty masks, are left out of its mean)."""
    rows = [asdict(m) for m in per_image]
    summary: dict[str, float] = {}
    for key in rows[0] if rows else []:
        values = np.array([r[key] for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        summary[key] = float(finite.mean()) if finite.size else float("nan")
    summary["images"] = len(rows)
    return summary


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    positives, negatives = scores[labels], scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        return float("nan")
    from scipy.stats import rankdata  # imported here: scipy.stats adds about 0.4 s to every command's start-up

    ranks = rankdata(np.concatenate([positives, negatives]))
    u = ranks[: positives.size].sum() - positives.size * (positives.size + 1) / 2
    return float(u / (positives.size * negatives.size))

