"""Metrics against direct computations."""

import numpy as np

from LightSegLib import metrics


def test_infnet_dice_equals_256_explicit_thresholds():
    rng = np.random.default_rng(0)
    prob = rng.random((64, 80)).astype(np.float32)
    truth = rng.random((64, 80)) < 0.3
    levels = np.rint(prob * 255)
    explicit = np.mean([metrics.dice(levels >= k, truth) for k in range(256)])
    assert abs(metrics.infnet_mean_dice(prob, truth) - explicit) < 1e-12


def test_dice_iou_sensitivity_specificity():
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True  # 16 pixels
    prob = np.zeros((10, 10), np.float32)
    prob[2:6, 2:4] = 0.9  # 8 true positives
    prob[8, 8] = 0.9  # 1 false positive
    m = metrics.slice_metrics(prob, truth)
    assert np.isclose(m.dice, 2 * 8 / (9 + 16))
    assert np.isclose(m.iou, 8 / 17)
    assert np.isclose(m.sensitivity, 0.5)
    assert np.isclose(m.specificity, 83 / 84)


def test_hd95_of_shifted_square_is_the_shift():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)
    assert np.isclose(metrics.hd95(a, b), 3.0)
    assert np.isclose(metrics.hd95(a, b, spacing=(1.0, 0.5)), 1.5)
    assert np.isnan(metrics.hd95(a, np.zeros_like(a)))


def test_roc_auc():
    assert metrics.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
