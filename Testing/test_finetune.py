"""`lightseg finetune`: real site files in, a new user model out, the base untouched; bad site data refused."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import P001_DICOM, SAMPLE, SEMISEG, models_table_rows, run_cli
from LightSegLib.cards import ModelCard, sha256_of
from LightSegLib.defaults import FINETUNE_DEFAULTS
from LightSegLib.io import ijk_to_lps


def _synthetic_infection(hu: np.ndarray, slices: slice) -> np.ndarray:
    """Dense-lung voxels (-750..-300 HU) in a central block of some slices: a stand-in for a site's corrections."""
    mask = np.zeros(hu.shape, bool)
    block = (slices, slice(hu.shape[1] // 4, hu.shape[1] // 2), slice(hu.shape[2] // 5, 4 * hu.shape[2] // 5))
    mask[block] = (hu[block] > -750) & (hu[block] < -300)
    return mask


@pytest.fixture
def seg_site(tmp_path, sample):
    volumes, labels = tmp_path / "volumes", tmp_path / "labels"
    volumes.mkdir()
    labels.mkdir()
    (volumes / "site1.nrrd").write_bytes(SAMPLE.read_bytes())
    infection = _synthetic_infection(sitk.GetArrayFromImage(sample), slice(20, 50))
    segmentation = slicerio.create_segmentation(sample.GetSize(), ijk_to_lps(sample))
    slicerio.add_segment(segmentation, np.transpose(infection, (2, 1, 0)), {"name": "Lung infection"})
    slicerio.write_segmentation(str(labels / "site1.seg.nrrd"), segmentation)
    return volumes, labels


def _fingerprint(card: ModelCard) -> tuple[str, str]:
    return sha256_of(card.weights_path), sha256_of(card.path)


def _changed_modules(base: ModelCard, tuned: ModelCard) -> set[str]:
    """Top two levels of the names ("enc.0", "dec.1") of the tensors that fine-tuning changed."""
    before, after = torch.load(base.weights_path), torch.load(tuned.weights_path)
    return {".".join(k.split(".")[:2]) for k in before if not torch.equal(before[k], after[k])}


def test_finetune_on_ct_and_seg_nrrd_makes_a_new_user_model(seg_site, untrained_card, user_store, tmp_path):
    before = _fingerprint(untrained_card)
    volumes, labels = seg_site
    result = run_cli("finetune", "--base", untrained_card.path, "--name", "site-v1", "--volumes", volumes,
                     "--labels", labels, "--epochs", "2", "--progress-json")
    assert result.returncode == 0, result.stderr
    assert "segment 'Lung infection'" in result.stderr  # says which segment was used
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    assert {"loss", "val_infnet_dice", "eta_s", "step"} <= set(events[0])
    assert events[-1]["event"] == "done" and events[-1]["model"] == "site-v1"

    card = ModelCard.load(user_store / "site-v1.json")
    assert card.parent == {"id": untrained_card.id, "version": untrained_card.version,
                           "sha256": untrained_card.weights_sha256}
    site = card.training["site_data"]
    assert site["volumes"] == 1 and site["slices_with_infection"] == 30
    assert "parent_on_same_slices" in card.validation and card.validation["kept"]["images"] == site["held_out_slices"]
    assert str(volumes) not in json.dumps(card.to_json())  # counts only: no file or folder names
    assert card.training["reference_slices"] == {"source": "bundled sample CT", "count": 32}
    assert card.training["hyperparameters"]["reference_weight"] == FINETUNE_DEFAULTS["reference"] > 0
    assert _fingerprint(untrained_card) == before  # the base is byte-identical
    # the default adapts the input stages only: the rest of the network is the base's, bit for bit
    assert FINETUNE_DEFAULTS["adapt"] == "input" and card.training["hyperparameters"]["trainable"] == ["enc.0", "enc.1"]
    assert _changed_modules(untrained_card, card) == {"enc.0", "enc.1"}

    listed = json.loads(run_cli("models", "--json").stdout)
    assert any(r["id"] == "site-v1" and r["where"] == "user" for r in listed)
    table = models_table_rows()
    # not cross-validated: the table shows the figure on its own held-out slices, and says so
    assert table["site-v1"].endswith(f"{card.validation['kept']['infnet_dice']:.3f} (validation fold)")
    out = tmp_path / "seg.nii.gz"
    assert run_cli("segment", SAMPLE, "-o", out, "--model", "site-v1").returncode == 0 and out.exists()
    removed = run_cli("models", "--remove", "site-v1")
    assert removed.returncode == 0 and not (user_store / "site-v1.json").exists()


def test_finetune_on_dicom_and_nrrd_label(tmp_path, untrained_card, user_store, p001):
    """Also: the new model runs as its base does (the base's test-time flips and 3D post-processing, its confirming
    network included)."""
    import dataclasses

    from LightSegLib.cards import load_network, save_model

    base = dataclasses.replace(untrained_card, id="untrained-flipped", weights_file="untrained-flipped.pt",
                               test_time_flips=["vertical"],
                               postprocessing={"min_lesion_mm3": 123.0, "confirm_with": "miniseg-confirm"})
    base_path = save_model(base, load_network(untrained_card).state_dict(), tmp_path / "base")
    volumes, labels = tmp_path / "volumes", tmp_path / "labels"
    volumes.mkdir()
    labels.mkdir()
    (volumes / "P001").symlink_to(P001_DICOM, target_is_directory=True)
    label = sitk.GetImageFromArray(_synthetic_infection(sitk.GetArrayFromImage(p001), slice(40, 100))
                                   .astype(np.uint8))
    label.CopyInformation(p001)
    sitk.WriteImage(label, str(labels / "P001.nrrd"), useCompression=True)
    result = run_cli("finetune", "--base", base_path, "--name", "site-dicom", "--volumes", volumes,
                     "--labels", labels, "--epochs", "1", "--adapt", "all")
    assert result.returncode == 0, result.stderr
    assert "label value 1" in result.stderr
    card = ModelCard.load(user_store / "site-dicom.json")
    assert card.training["site_data"]["slices_with_infection"] == 60
    assert card.test_time_flips == ["vertical"]
    assert card.postprocessing == {"min_lesion_mm3": 123.0, "confirm_with": "miniseg-confirm"}
    assert card.training["hyperparameters"]["trainable"] == []
    assert {"enc.3", "dec.2", "heads.0"} <= _changed_modules(untrained_card, card)  # every layer was trained


def test_stop_file_stops_cleanly_and_keeps_a_model(seg_site, untrained_card, user_store, tmp_path):
    stop = tmp_path / "STOP"
    stop.write_text("")
    volumes, labels = seg_site
    result = run_cli("finetune", "--base", untrained_card.path, "--name", "stopped", "--volumes", volumes,
                     "--labels", labels, "--epochs", "50", "--stop-file", stop)
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(user_store / "stopped.json")
    assert card.training["stopped"] == "stop requested" and card.training["epochs_run"] == 1
    assert card.weights_sha256 == sha256_of(card.weights_path)


def _label_site(tmp_path, sample, label_array, origin_shift=0.0):
    volumes, labels = tmp_path / "v", tmp_path / "l"
    volumes.mkdir()
    labels.mkdir()
    (volumes / "c.nrrd").write_bytes(SAMPLE.read_bytes())
    label = sitk.GetImageFromArray(label_array)
    label.CopyInformation(sample)
    label.SetOrigin([o + origin_shift for o in sample.GetOrigin()])
    sitk.WriteImage(label, str(labels / "c.nrrd"))
    return volumes, labels


@pytest.mark.parametrize("case, expected", [
    ("empty", "labels are empty everywhere"),
    ("values", "unexpected label values"),
    ("few", "only 2 labelled slices with infection"),
    ("elsewhere", "does not overlap its volume"),
])
def test_unusable_site_data_is_refused(case, expected, tmp_path, sample, untrained_card, user_store):
    hu = sitk.GetArrayFromImage(sample)
    array = np.zeros(hu.shape, np.uint8)
    shift = 0.0
    if case == "values":
        array[30:40, 50:60, 50:60] = 7
    elif case == "few":
        array[30:32] = _synthetic_infection(hu, slice(30, 32))[30:32]
    elif case == "elsewhere":
        array[30:40, 50:60, 50:60] = 1
        shift = 5000.0
    volumes, labels = _label_site(tmp_path, sample, array, shift)
    result = run_cli("finetune", "--base", untrained_card.path, "--name", "bad", "--volumes", volumes,
                     "--labels", labels, "--epochs", "1")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (user_store / "bad.json").exists() and not (user_store / "bad.pt").exists()


def test_mismatched_2d_mask_is_refused(tmp_path, untrained_card):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "i" / "a.jpg").write_bytes((SEMISEG / "images" / "0.jpg").read_bytes())
    (tmp_path / "m" / "a.png").write_bytes((SEMISEG / "masks" / "1.png").read_bytes())
    result = run_cli("finetune", "--base", untrained_card.path, "--name", "x", "--images", tmp_path / "i",
                     "--masks", tmp_path / "m")
    assert result.returncode == 2 and "differs from its image" in result.stderr


def test_bundled_models_cannot_be_removed_or_shadowed(tmp_path):
    assert run_cli("models", "--remove", "miniseg-covid").returncode == 2
    result = run_cli("finetune", "--name", "miniseg-covid", "--images", tmp_path, "--masks", tmp_path)
    assert result.returncode == 2 and "bundled model" in result.stderr


@pytest.mark.parametrize("activation, classes", [("sigmoid", 1), ("softmax", 2)])
def test_distillation_loss_is_smallest_at_the_teachers_output(activation, classes):
    """The reference term pulls the new model's probabilities towards the base model's, for both output kinds."""
    from LightSegLib.network import InputSpec
    from LightSegLib.training.loop import distillation_loss

    spec = InputSpec([0.5], [0.2], activation, 0 if activation == "sigmoid" else 1)
    teacher = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    teacher_logit = torch.logit(teacher)
    logits = teacher_logit if classes == 1 else torch.cat([torch.zeros_like(teacher_logit), teacher_logit], 1)
    at_teacher = distillation_loss(logits, teacher, spec)
    for shift in (-1.0, 1.0):
        assert distillation_loss(logits + shift * (torch.arange(classes).view(1, -1, 1, 1) == classes - 1),
                                 teacher, spec) > at_teacher


def test_reference_inputs_come_from_the_sample_in_the_models_domain(untrained_card):
    from LightSegLib.training.reference import reference_inputs

    inputs = reference_inputs(untrained_card)
    assert inputs.shape == (32, 1, *untrained_card.input_size)
    assert 0 <= inputs.min() and inputs.max() <= 1
    assert 0.2 < inputs.mean() < 0.7  # windowed lung crops, not air or clipped bone


@pytest.mark.parametrize("arch", ["miniseg", "ulite", "malunet", "unetv2", "unetv2-lite"])
def test_every_architecture_names_its_input_stages(arch):
    from LightSegLib.models import build_model, input_stages
    from LightSegLib.training.loop import in_stages
    from LightSegLib.training.recipe import ARCH_DEFAULTS

    recipe = ARCH_DEFAULTS[arch]
    model = build_model(recipe["architecture"], recipe["config"])
    stages = input_stages(recipe["architecture"], recipe["config"])
    names = [name for name, _ in model.named_parameters()]
    assert all(any(in_stages(name, (stage,)) for name in names) for stage in stages)  # each names real layers
    tuned = sum(p.numel() for name, p in model.named_parameters() if in_stages(name, stages))
    assert 0 < tuned < 0.2 * sum(p.numel() for p in model.parameters())  # a small part, at the input end


def test_finetuning_keeps_the_base_models_loss_and_augmentation():
    """The class weighting, Dice weight, Tversky beta and augmentation recorded in the base's card (as JSON, lists for
    tuples); the defaults for cards that record none."""
    import dataclasses
    import json

    from LightSegLib import registry
    from LightSegLib.training.augment import AugmentConfig
    from LightSegLib.training.finetune import base_recipe

    base = registry.resolve("miniseg-covid")
    augment = dataclasses.replace(AugmentConfig(), min_contrast=0.6, scale_range=(0.9, 1.1))
    hyperparameters = {"class_weights": "none", "dice_weight": 2.0, "tversky_beta": 0.7,
                       "augment": dataclasses.asdict(augment)}
    recorded = dataclasses.replace(base, training={"hyperparameters": json.loads(json.dumps(hyperparameters))})
    assert base_recipe(recorded) == {"class_weights": "none", "dice_weight": 2.0, "tversky_beta": 0.7,
                                     "augment": augment}
    assert base_recipe(dataclasses.replace(base, training={})) == {"class_weights": "enet", "dice_weight": 1.0,
                                                                   "tversky_beta": 0.5, "augment": AugmentConfig()}
