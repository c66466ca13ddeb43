"""MALUNet and U-Net v2 match the specification and train, save and segment through the same code as MiniSeg."""

import numpy as np
import pytest
import torch

from conftest import SEMISEG, run_cli
from LightSegLib.models import build_model, count_parameters
from LightSegLib.models.malunet import IEA, MALUNet
from LightSegLib.models.pvtv2 import PVTv2B2
from LightSegLib.models.unetv2 import UNetV2


def test_malunet_parameter_count_matches_specification():
    model = MALUNet(in_channels=3, num_classes=1)
    assert count_parameters(model) == 177_943
    assert len(model.state_dict()) == 279
    # one input channel: the first 3x3 conv loses 2 x 9 x 8 weights
    assert count_parameters(MALUNet(in_channels=1)) == 177_943 - 2 * 9 * 8


def test_malunet_memory_units_start_as_transposes_but_train_independently():
    iea = next(m for m in MALUNet(1).modules() if isinstance(m, IEA))
    keys, values = iea.memory_keys.weight, iea.memory_values.weight
    assert torch.equal(keys[:, :, 0], values[:, :, 0].T)
    assert keys.data_ptr() != values.data_ptr()  # two parameters, as in the official training on a GPU


@pytest.mark.parametrize("classes, expected", [(1, 25_145_036), (2, 25_145_168)])
def test_unetv2_parameter_count_matches_specification(classes, expected):
    model = UNetV2(in_channels=3, num_classes=classes)
    assert count_parameters(model) == expected
    assert len(model.state_dict()) == 412
    assert count_parameters(model.encoder) == count_parameters(PVTv2B2(3)) == 24_849_856
    assert count_parameters(model.head) == 295_180 + (132 if classes == 2 else 0)


def test_unetv2_lite_keeps_the_lightweight_promise():
    lite = UNetV2(in_channels=1, num_classes=1, encoder="miniseg", head_channels=16)
    assert count_parameters(lite) < 150_000


@torch.inference_mode()
@pytest.mark.parametrize("arch, config", [
    ("malunet", {"in_channels": 1}),
    ("unetv2", {"in_channels": 1, "aux": True}),
    ("unetv2", {"in_channels": 1, "encoder": "miniseg", "head_channels": 16, "aux": True}),
])
def test_zoo_output_shapes_and_size_rule(arch, config):
    model = build_model(arch, config).eval()
    outputs = model(torch.randn(2, 1, 96, 96))
    assert len(outputs) == (2 if config.get("aux") else 1)
    assert all(o.shape == (2, 1, 96, 96) for o in outputs)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 1, 100, 100))


@torch.inference_mode()
def test_unetv2_needs_a_square_input():
    with pytest.raises(ValueError, match="square"):
        UNetV2(in_channels=1, encoder="miniseg", head_channels=16)(torch.randn(1, 1, 64, 96))


@pytest.mark.parametrize("arch", ["malunet", "unetv2-lite"])
def test_zoo_architecture_trains_saves_and_segments(arch, tmp_path):
    """lightseg train --arch X on real labelled slices, then segment and evaluate with the saved model."""
    from LightSegLib.cards import ModelCard

    result = run_cli("train", "--arch", arch, "--images", SEMISEG / "images",
                     "--masks", SEMISEG / "masks", "--name", f"tiny-{arch}",
                     "-o", str(tmp_path), "--epochs", "1", "--input-size", "64", "--val-fraction", "0.2")
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(tmp_path / f"tiny-{arch}.json")
    assert card.architecture == ("malunet" if arch == "malunet" else "unetv2")
    assert card.arch_config.get("aux", False) is False
    assert card.parameters == count_parameters(build_model(card.architecture, card.arch_config))
    image = SEMISEG / "images" / (card.training["validation_names"][0] + ".jpg")
    probabilities = tmp_path / "p.npy"
    result = run_cli("segment", image, "--model", str(tmp_path / f"tiny-{arch}.json"),
                     "-o", str(tmp_path / "mask.png"), "--probabilities", str(probabilities))
    assert result.returncode == 0, result.stderr
    p = np.load(probabilities)
    assert p.ndim == 2 and 0 <= p.min() and p.max() <= 1
    result = run_cli("evaluate", "--model", tmp_path / f"tiny-{arch}.json", "--images", SEMISEG / "images",
                     "--masks", SEMISEG / "masks", "--only", *card.training["validation_names"])
    assert result.returncode == 0 and "Inf-Net mean Dice" in result.stdout, result.stderr
    store = tmp_path / "store"
    result = run_cli("finetune", "--base", tmp_path / f"tiny-{arch}.json", "--name", f"site-{arch}", "--images",
                     SEMISEG / "images", "--masks", SEMISEG / "masks", "--epochs", "1", "-o", store)
    assert result.returncode == 0, result.stderr
    assert ModelCard.load(store / f"site-{arch}.json").architecture == card.architecture
