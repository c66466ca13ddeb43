"""The architectures match the specification: parameter counts, state_dict size, output shapes."""

import pytest
import torch

from LightSegLib.models import MiniSeg, ULite, build_model, count_parameters


@pytest.mark.parametrize("aux, expected, tensors", [(False, 82_666, 461), (True, 82_912, 467)])
def test_miniseg_parameter_count_matches_paper(aux, expected, tensors):
    model = MiniSeg(in_channels=3, num_classes=2, aux=aux)
    assert count_parameters(model) == expected
    assert len(model.state_dict()) == tensors


def test_ulite_parameter_count_matches_paper():
    assert count_parameters(ULite(in_channels=3, num_classes=1)) == 878_417
    assert len(ULite().state_dict()) == 145
    # one input channel: the 7x7 stem loses 2 x 49 x 16 weights
    assert count_parameters(ULite(in_channels=1, num_classes=1)) == 878_417 - 2 * 49 * 16


@torch.inference_mode()
def test_miniseg_keeps_odd_sizes():
    model = MiniSeg(in_channels=1, num_classes=2, aux=True).eval()
    outputs = model(torch.randn(2, 1, 301, 417))
    assert len(outputs) == 4
    assert all(o.shape == (2, 2, 301, 417) for o in outputs)


@torch.inference_mode()
def test_ulite_shapes_and_size_rule():
    model = ULite(in_channels=1, num_classes=1).eval()
    assert model(torch.randn(1, 1, 224, 320))[0].shape == (1, 1, 224, 320)
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 1, 300, 320))


def test_build_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("unet9000", {})
