"""The official MiniSeg checkpoint importer reproduces the authors' code."""

import numpy as np
import pytest
import torch

from conftest import REFERENCE, run_cli
from LightSegLib.cards import ModelCard, load_network
from LightSegLib.models import MiniSeg
from LightSegLib.models.miniseg_import import convert_official_state, load_official_checkpoint, official_key_to_ours

CHECKPOINT = REFERENCE / "MiniSeg_COVID-19-CT100_CrossVal1.pth"
OFFICIAL = REFERENCE / "miniseg-official-output"
MEAN, STD = ("0.38", "0.37", "0.36"), ("0.30", "0.31", "0.29")


@pytest.fixture(scope="module")
def official_state():
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=True)


def test_every_official_tensor_is_used_and_none_left_over(official_state):
    assert len(official_state) == 467
    ours = MiniSeg(3, 2, aux=True).state_dict()
    converted = convert_official_state(official_state)
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)
    assert len({official_key_to_ours(k) for k in official_state}) == 467


def test_cli_import_then_segment_matches_official_probabilities(tmp_path):
    card_path = tmp_path / "ct100.json"
    result = run_cli("import-miniseg", CHECKPOINT, "--mean", *MEAN, "--std", *STD, "-o", card_path)
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(card_path)
    assert card.licence.startswith("CC BY-NC-SA 4.0")
    assert card.normalisation == {"mean": [0.38, 0.37, 0.36], "std": [0.30, 0.31, 0.29]}
    assert card.source["tensors"] == 467 and card.parameters == 82_666
    result = run_cli("segment", OFFICIAL / "input.png", "--model", card_path, "-o", tmp_path / "mask.png",
                     "--probabilities", tmp_path / "p.npy")
    assert result.returncode == 0, result.stderr
    probabilities = np.load(tmp_path / "p.npy")
    official = np.load(OFFICIAL / "probability.npy")
    assert probabilities.dtype == np.float32 and probabilities.shape == official.shape
    assert np.abs(probabilities - official).max() < 1e-4


def test_import_holds_for_any_checkpoint_with_the_released_layout(official_state, tmp_path):
    """A checkpoint with the released key list but other values (as the other 19 folds have), in legacy format."""
    torch.manual_seed(1)
    reference = MiniSeg(3, 2, aux=True)
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial running statistics
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    ours = reference.state_dict()
    fake = {key: ours[official_key_to_ours(key)].clone() for key in official_state}
    path = tmp_path / "MiniSeg_CrossVal9.pth"
    torch.save(fake, path, _use_new_zipfile_serialization=False)
    imported = load_official_checkpoint(path)
    x = torch.randn(1, 3, 96, 80)
    reference.eval()
    with torch.inference_mode():
        for a, b in zip(imported(x), reference(x)):
            assert torch.equal(a, b)


def test_loaded_imported_model_runs_without_auxiliary_heads(tmp_path):
    card_path = tmp_path / "m.json"
    assert run_cli("import-miniseg", CHECKPOINT, "--mean", *MEAN, "--std", *STD, "-o", card_path).returncode == 0
    model = load_network(ModelCard.load(card_path))
    with torch.inference_mode():
        assert len(model(torch.randn(1, 3, 64, 64))) == 1


def test_import_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "x.pth"
    bogus.write_bytes(b"not a checkpoint")
    result = run_cli("import-miniseg", bogus, "--mean", *MEAN, "--std", *STD, "-o", tmp_path / "m.json")
    assert result.returncode == 2
    assert "x.pth: cannot read as a torch checkpoint" in result.stderr
    assert not (tmp_path / "m.json").exists()
