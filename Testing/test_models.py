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


def _with_running_statistics(model: torch.nn.Module, channels: int, size: int) -> torch.nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, channels, size, size) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("model, channels, size", [(MiniSeg(3, 2), 3, 96), (ULite(1, 1), 1, 64)])
def test_batchnorm_folding_keeps_the_function_and_removes_every_bn(model, channels, size):
    from LightSegLib.models.fold import fold_batchnorm

    model = _with_running_statistics(model, channels, size)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, channels, size, size)
    with torch.inference_mode():
        assert torch.allclose(model(x)[0], folded(x)[0], atol=1e-4)


@pytest.mark.parametrize("size", [(96, 96), (75, 61)])
def test_miniseg_inference_form_keeps_the_function(size):
    """Pool merged into AHSP, dilated pair merged, decoder 1x1 before the upsampling: same logits, odd sizes too."""
    from LightSegLib.models.inference import InferenceMiniSeg, inference_form

    model = _with_running_statistics(MiniSeg(3, 2, aux=True), 3, 64)
    fast = inference_form(model)
    assert isinstance(fast, InferenceMiniSeg)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.AvgPool2d)) for m in fast.modules())
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        expected, got = model(x)[0], fast(x)
        assert len(got) == 1 and got[0].shape == expected.shape
        assert torch.allclose(expected, got[0], atol=1e-4)
        channels_last = fast.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(expected, channels_last[0], atol=1e-4)
