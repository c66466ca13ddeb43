"""The inference engine: orientation-independent, cancellable, deterministic, geometry-preserving."""

import numpy as np
import pytest
import SimpleITK as sitk

from LightSegLib.engine import Cancelled, Segmenter
from LightSegLib.io import INFECTION, LUNG


@pytest.fixture(scope="module")
def segmenter(untrained_card):
    return Segmenter(untrained_card, "cpu", batch_size=8)


@pytest.fixture(scope="module")
def reference(segmenter, sample):
    return segmenter.segment_volume(sample)


def _resampled_onto(labels: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Labels resampled (nearest neighbour, in physical space) onto another grid of the same volume."""
    return sitk.GetArrayFromImage(sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 255))


@pytest.mark.parametrize("order, flips", [
    ((0, 1, 2), (False, True, False)),  # anterior-posterior flipped
    ((2, 0, 1), (False, False, False)),  # stored sagittally
    ((0, 2, 1), (True, False, True)),  # rows and columns swapped, flipped
    ((1, 2, 0), (False, True, True)),  # stored coronally, flipped
])
def test_permuted_and_flipped_volume_gives_the_identical_mask(segmenter, sample, reference, order, flips):
    stored = sitk.Flip(sitk.PermuteAxes(sample, order), flips)
    result = segmenter.segment_volume(stored)
    labels = result.labels
    for getter in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert getattr(labels, getter)() == getattr(stored, getter)()  # the stored grid, exactly
    assert np.array_equal(_resampled_onto(labels, sample), sitk.GetArrayViewFromImage(reference.labels))


def test_labels_are_uint8_and_inside_the_lungs(reference):
    labels = sitk.GetArrayViewFromImage(reference.labels)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, INFECTION, LUNG}
    lungs_c = reference.lungs.lungs
    labels_c = reference.view.to_canonical(labels)
    assert np.array_equal(labels_c > 0, lungs_c)  # every labelled voxel is lung, every lung voxel is labelled


def test_deterministic_on_cpu(segmenter, sample, reference):
    probabilities = np.zeros(sitk.GetArrayViewFromImage(sample).shape, np.float32)
    again = segmenter.segment_volume(sample, probabilities=probabilities)
    assert np.array_equal(sitk.GetArrayViewFromImage(again.labels), sitk.GetArrayViewFromImage(reference.labels))
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    infected = sitk.GetArrayViewFromImage(again.labels) == INFECTION
    assert np.all(probabilities[infected] >= 0.5)


def test_progress_reports_every_batch_and_cancel_stops(segmenter, sample, reference):
    calls = []
    segmenter.segment_volume(sample, progress=lambda done, total: calls.append((done, total)))
    total = reference.slices_segmented
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == -(-total // 8)
    batches = []
    with pytest.raises(Cancelled):
        segmenter.segment_volume(sample, progress=lambda d, t: batches.append(d), cancel=lambda: len(batches) >= 2)
    assert len(batches) == 2


def test_slices_without_lung_are_skipped(segmenter, sample):
    """Six slices of soft tissue below the scan: no lung, so no network work and no labels there."""
    padded = sitk.ConstantPad(sample, (0, 0, 6), (0, 0, 0), 40)
    result = segmenter.segment_volume(padded)
    assert result.slices_total == sample.GetSize()[2] + 6
    assert result.slices_segmented == result.lungs.lungs.any(axis=(1, 2)).sum() <= sample.GetSize()[2]
    assert not sitk.GetArrayViewFromImage(result.labels)[:6].any()


def test_optimised_engine_matches_the_eager_reference(untrained_card, sample):
    """The engine's folded channels_last network against the plain eager network on the same slices."""
    from LightSegLib.cards import load_network

    fast = Segmenter(untrained_card, "cpu")
    reference = Segmenter(untrained_card, "cpu")
    reference.model = load_network(untrained_card)  # unfolded, contiguous: the reference forward
    shape = sitk.GetArrayViewFromImage(sample).shape
    p_fast, p_ref = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    labels_fast = sitk.GetArrayFromImage(fast.segment_volume(sample, probabilities=p_fast).labels) == INFECTION
    labels_ref = sitk.GetArrayFromImage(reference.segment_volume(sample, probabilities=p_ref).labels) == INFECTION
    assert np.abs(p_fast - p_ref).max() < 1e-4
    overlap = 2 * (labels_fast & labels_ref).sum() / max(labels_fast.sum() + labels_ref.sum(), 1)
    assert overlap > 0.99


def test_resampling_back_inside_a_window_equals_the_full_slice_there():
    """The engine maps probabilities back only inside the batch's union of crop boxes; same values as a full slice."""
    import torch

    from LightSegLib.preprocess import crop_affines, resample, restrict_to_window

    boxes = np.array([[100, 400, 60, 300], [120, 380, 250, 470]])
    _, to_slice = crop_affines(boxes, 512, 480)
    small = torch.rand(2, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    full = resample(small, to_slice, (512, 480))
    window = (100, 400, 60, 470)
    part = resample(small, restrict_to_window(to_slice, window, 512, 480), (300, 410))
    assert torch.allclose(part, full[:, :, 100:400, 60:470], atol=1e-4)  # float32 grid rounding


def test_the_crop_grid_is_torchs_affine_grid_bit_for_bit():
    """The engine builds its crop grids row by column (``axis_aligned_grid``); they must equal ``affine_grid``'s
    exactly, so the probabilities are unchanged; a rotating theta still goes through ``affine_grid``."""
    import torch
    import torch.nn.functional as F

    from LightSegLib.preprocess import axis_aligned_grid, crop_affines, resample

    rng = np.random.default_rng(0)
    for _ in range(20):
        height, width = (int(v) for v in rng.integers(64, 600, 2))
        top, left = rng.integers(0, height // 2, 8), rng.integers(0, width // 2, 8)
        boxes = np.stack([top, top + rng.integers(20, height // 2, 8), left, left + rng.integers(20, width // 2, 8)], 1)
        for theta in crop_affines(boxes, height, width):
            size = (int(rng.integers(50, 520)), int(rng.integers(50, 520)))
            expected = F.affine_grid(theta, [8, 1, *size], align_corners=False)
            assert torch.equal(axis_aligned_grid(theta, size), expected)
    rotation = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    image = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(resample(image, rotation, (4, 4)), F.grid_sample(
        image, F.affine_grid(rotation, [1, 1, 4, 4], align_corners=False), align_corners=False))


def test_test_time_flips_average_the_flipped_passes(untrained_card, sample):
    """Each flipped pass is flipped back before averaging; the card's flips are the default, a caller's replace them."""
    import dataclasses

    import torch

    from LightSegLib.network import forward_probability

    plain = Segmenter(untrained_card, "cpu")
    assert plain.spec.flips == ()
    flipped = Segmenter(dataclasses.replace(untrained_card, test_time_flips=["horizontal", "vertical"]), "cpu")
    assert flipped.spec.flips == ("horizontal", "vertical")
    assert Segmenter(flipped.card, "cpu", test_time_flips=()).spec.flips == ()
    x = torch.rand(2, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        one = [forward_probability(plain.model, plain.spec, x),
               forward_probability(plain.model, plain.spec, x.flip(-1)).flip(-1),
               forward_probability(plain.model, plain.spec, x.flip(-2)).flip(-2)]
        averaged = forward_probability(flipped.model, flipped.spec, x)
    assert torch.allclose(averaged, sum(one) / 3, atol=1e-6)
    assert (averaged - one[0]).abs().max() > 1e-3  # a random network is not flip-symmetric: the flips did something
    shape = sitk.GetArrayViewFromImage(sample).shape
    p_plain, p_flipped = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    plain.segment_volume(sample, probabilities=p_plain)
    result = flipped.segment_volume(sample, probabilities=p_flipped)
    assert np.abs(p_plain - p_flipped).max() > 1e-3  # the volume path uses them too
    # the report (of the CLI and of the Slicer module alike) says how the mask was made
    from LightSegLib.report import build_report

    assert build_report(result, flipped.card, "cpu", "sample")["model"]["test_time_flips"] == ["horizontal", "vertical"]


def test_the_threshold_cuts_the_probability_where_the_benchmark_sets_it(untrained_card, sample):
    """`Segmenter.threshold` (swept by benchmarks/threshold_tradeoff.py) decides infection before the clean-up: no
    voxel is infection above every probability, and a lower cut never calls less."""
    segmenter = Segmenter(untrained_card, "cpu")
    probabilities = np.zeros(sitk.GetArrayViewFromImage(sample).shape, np.float32)
    counts = []
    for threshold in (0.3, 0.5, 1.01):
        segmenter.threshold = threshold
        labels = sitk.GetArrayFromImage(segmenter.segment_volume(sample, probabilities=probabilities).labels)
        counts.append(int((labels == INFECTION).sum()))
    assert counts[0] >= counts[1] > counts[2] == 0
