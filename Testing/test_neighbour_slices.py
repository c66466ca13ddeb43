"""Neighbour slices as input channels (`train --neighbour-mm`, a card's `neighbour_slices_mm`): the channels are the
slices below, at and above, all cut with the slice's own crop box; the engine and the training slices make them alike."""

import dataclasses

import numpy as np
import SimpleITK as sitk
import torch

from conftest import REPO, SEMISEG, run_cli
from LightSegLib.cards import HUWindow, ModelCard
from LightSegLib.engine import Segmenter
from LightSegLib.preprocess import neighbour_step, network_inputs, window_to_unit
from LightSegLib.training.ct_slices import negative_ct_slices

WINDOW = REPO / "Resources" / "Calibration" / "hu-window-P001.json"


def test_channels_are_the_slices_below_at_and_above_clamped_to_the_volume():
    hu = np.repeat((np.arange(20, dtype=np.float32) * 40 - 900)[:, None, None], 32, 1).repeat(32, 2)
    window = HUWindow(level=-500, width=1000)
    whole = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]).repeat(3, 1, 1)  # the crop box is the whole slice
    z = np.array([0, 5, 19])
    inputs = network_inputs(hu, z, whole, window, (16, 16), step=2)
    assert inputs.shape == (3, 3, 16, 16)
    expected = [(0, 0, 2), (3, 5, 7), (17, 19, 19)]
    for row, slices in zip(inputs, expected):
        for channel, source in zip(row, slices):
            assert torch.allclose(channel, window_to_unit(torch.tensor(hu[source, :16, :16]), window))
    plain = network_inputs(hu, z, whole, window, (16, 16))
    assert plain.shape == (3, 1, 16, 16) and torch.equal(plain[:, 0], inputs[:, 1])
    assert neighbour_step(2.5, 5.0) == 2 and neighbour_step(5.0, 5.0) == 1 and neighbour_step(8.0, 3.0) == 1
    assert neighbour_step(1.0, 0.0) == 0


def _with_neighbours(card: ModelCard, mm: float) -> ModelCard:
    return dataclasses.replace(card, neighbour_slices_mm=mm)


def test_the_engine_feeds_neighbour_slices_when_the_card_says_so(sample, untrained_card):
    """Identical neighbours give the plain model's probabilities; the sample's real neighbours do not."""
    plain, with_neighbours = Segmenter(untrained_card, "cpu"), Segmenter(_with_neighbours(untrained_card, 8.0), "cpu")
    array = sitk.GetArrayFromImage(sample)
    flat = sitk.GetImageFromArray(np.repeat(array[array.shape[0] // 2][None], array.shape[0], 0))
    flat.CopyInformation(sample)
    for image, alike in ((flat, True), (sample, False)):
        probabilities = []
        for segmenter in (plain, with_neighbours):
            p = np.zeros(array.shape, np.float32)
            segmenter.segment_volume(image, probabilities=p)
            probabilities.append(p)
        assert np.allclose(*probabilities, atol=1e-5) == alike


def test_training_slices_carry_the_neighbours_and_the_card_records_them(tmp_path, sample, untrained_card):
    folder = tmp_path / "cts"
    folder.mkdir()
    sitk.WriteImage(sample, str(folder / "normal-a.nrrd"))
    plain = negative_ct_slices([folder / "normal-a.nrrd"], untrained_card.hu_window, (64, 64))
    stacked = negative_ct_slices([folder / "normal-a.nrrd"], untrained_card.hu_window, (64, 64), neighbour_mm=8.0)
    assert len(stacked.slices) == len(plain.slices)
    assert all(s.shape == (3, 64, 64) and t.shape == (64, 64) for s, t in zip(stacked.slices.images,
                                                                             stacked.slices.targets))
    assert all(np.array_equal(s[1], p) for s, p in zip(stacked.slices.images, plain.slices.images))
    assert any(not np.array_equal(s[0], s[1]) for s in stacked.slices.images)

    slices = tmp_path / "slices"
    for kind, suffix in (("images", "jpg"), ("masks", "png")):
        (slices / kind).mkdir(parents=True)
        for name in ("0", "1", "2", "3"):
            (slices / kind / f"{name}.{suffix}").write_bytes((SEMISEG / kind / f"{name}.{suffix}").read_bytes())
    common = ("--images", slices / "images", "--masks", slices / "masks", "-o", tmp_path / "models", "--epochs", "1",
              "--input-size", "64", "--val-fraction", "0.25", "--hu-window-from", WINDOW, "--negative-volumes", folder,
              "--ct-per-step", "2", "--neighbour-mm", "8")
    result = run_cli("train", *common, "--name", "stacked")
    assert result.returncode == 0, result.stderr
    assert ModelCard.load(tmp_path / "models" / "stacked.json").neighbour_slices_mm == 8.0

    refused = run_cli("train", *common, "--name", "one-channel", "--arch", "ulite")
    assert refused.returncode == 2 and "--neighbour-mm" in refused.stderr and "three input channels" in refused.stderr
    assert not (tmp_path / "models" / "one-channel.json").exists()
