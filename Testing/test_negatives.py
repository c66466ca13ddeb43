"""CTs without infection as training data: every lung slice cut as the engine cuts it (slices near annotated lesions
left out), `train --negative-volumes` and `finetune --negative-volumes`, what their cards record, and bad volumes
among them refused."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import P001_DICOM, P001_LABELS, REPO, SAMPLE, SEMISEG, run_cli
from LightSegLib.cards import ModelCard
from LightSegLib.engine import Segmenter
from LightSegLib.geometry import axial_positions
from LightSegLib.io import INFECTION
from LightSegLib.lung_crops import lung_crops
from LightSegLib.training.ct_slices import negative_ct_slices, slice_labelled_ct_slices

WINDOW = REPO / "Resources" / "Calibration" / "hu-window-P001.json"
SIZE = (96, 96)


def _negatives(folder, *names):
    """A folder of copies of the bundled sample, standing in for a site's CTs without infection (the path is what
    is under test here, not the accuracy)."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}.nrrd").write_bytes(SAMPLE.read_bytes())
    return folder


def _infection_voxels(card_path, image) -> int:
    labels = Segmenter(ModelCard.load(card_path), "cpu").segment_volume(image).labels
    return int((sitk.GetArrayViewFromImage(labels) == INFECTION).sum())


def test_every_lung_slice_becomes_a_network_input_with_an_empty_target(tmp_path, sample, untrained_card):
    folder = _negatives(tmp_path / "cts", "normal-a")
    extracted = negative_ct_slices([folder / "normal-a.nrrd"], untrained_card.hu_window, SIZE)
    lung_slices = lung_crops(sample).crops.slices
    assert len(extracted.slices) == len(lung_slices) == extracted.summary["slices"] > 40
    assert extracted.summary["slices_near_lesions_left_out"] == 0
    assert all(x.shape == SIZE and 0 <= x.min() and x.max() <= 1 for x in extracted.slices.images)
    assert not any(t.any() for t in extracted.slices.targets)
    assert all(x.std() > 0.05 for x in extracted.slices.images)  # a windowed lung crop, not a blank


def test_slices_within_10_mm_of_an_annotated_lesion_are_left_out(tmp_path, sample, untrained_card):
    """A nodule outline on one slice (4 mm slices): that slice and two on either side (8 mm) are left out, the third
    (12 mm) is kept; a nodule is a dense opacity, not something to teach as "no infection"."""
    folder = _negatives(tmp_path / "cts", "nodules")
    lesion = np.zeros(sitk.GetArrayViewFromImage(sample).shape, np.uint8)
    lesion[37, 90:96, 60:66] = 1
    lesion_image = sitk.GetImageFromArray(lesion)
    lesion_image.CopyInformation(sample)
    sitk.WriteImage(lesion_image, str(folder / "nodules_lesions.nrrd"))

    extracted = negative_ct_slices([folder / "nodules.nrrd"], untrained_card.hu_window, SIZE)
    scan = lung_crops(sample)
    positions = axial_positions(sample, scan.view)
    lesion_z = positions[np.flatnonzero(scan.view.to_canonical(lesion).any(axis=(1, 2)))]
    near = {int(z) for z in scan.crops.slices if np.abs(positions[z] - lesion_z).min() <= 10}
    assert len(near) == 5
    assert extracted.summary["slices_near_lesions_left_out"] == 5
    kept = {int(name.rsplit("slice", 1)[1]) for name in extracted.slices.names}
    assert kept == {int(z) for z in scan.crops.slices} - near


def test_slice_labelled_ct_clear_slices_teach_no_infection_and_infected_ones_are_skipped(tmp_path, untrained_card):
    """P001 with its radiologists' slice labels beside it (as COVID-CT-MD lays them out): every clear lung slice is a
    target of no infection; with the infected slices skipped none of them is used."""
    folder = tmp_path / "labelled"
    folder.mkdir()
    (folder / "P001").symlink_to(P001_DICOM)
    (folder / "P001_slice_labels.csv").write_bytes(P001_LABELS.read_bytes())
    extracted = slice_labelled_ct_slices([folder / "P001"], untrained_card.hu_window, SIZE, teacher=None)
    summary = extracted.summary
    assert summary["infected_slices"] == 0 and summary["infected_slice_targets"] is None
    assert summary["clear_slices"] == len(extracted.slices) > 10 and summary["infected_slices_left_out"] > 40
    assert not any(t.any() for t in extracted.slices.targets)


def test_train_with_negative_volumes_records_the_cts_it_learnt_from(tmp_path):
    """The card names the training CTs (trained_on_cts), and a model started from it inherits them, so a benchmark
    never counts a CT the weights learnt from as evidence."""
    slices = tmp_path / "slices"
    for kind, suffix in (("images", "jpg"), ("masks", "png")):
        (slices / kind).mkdir(parents=True)
        for name in ("0", "1", "2", "3"):
            (slices / kind / f"{name}.{suffix}").write_bytes(
                (SEMISEG / kind / f"{name}.{suffix}").read_bytes())
    negatives = _negatives(tmp_path / "cts", "normal-a")
    out = tmp_path / "models"
    common = ("--images", slices / "images", "--masks", slices / "masks", "-o", out, "--epochs", "1",
              "--input-size", "64", "--val-fraction", "0.25")
    result = run_cli("train", *common, "--name", "with-negatives", "--hu-window-from", WINDOW,
                     "--negative-volumes", negatives, "--ct-per-step", "2")
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(out / "with-negatives.json")
    ct_data = card.training["ct_data"]["negative_volumes"]
    assert ct_data["cts"] == ["normal-a"] and ct_data["volumes"] == 1 and ct_data["slices"] > 40
    assert card.training["trained_on_cts"] == ["normal-a"]
    assert card.training["hyperparameters"]["ct_per_step"] == 2

    result = run_cli("train", *common, "--name", "child", "--init", out / "with-negatives.json")
    assert result.returncode == 0, result.stderr
    assert ModelCard.load(out / "child.json").training["trained_on_cts"] == ["normal-a"]


def test_finetune_on_ct_without_infection_alone_lowers_what_the_model_calls_there(tmp_path, sample, untrained_card,
                                                                                 user_store):
    negatives = _negatives(tmp_path / "site-normals", "normal-a")
    before = _infection_voxels(untrained_card.path, sample)
    assert before > 1000  # random weights call infection in places; the fine-tune must take it away

    result = run_cli("finetune", "--base", untrained_card.path, "--name", "site-normals", "--negative-volumes",
                     negatives, "--epochs", "3", "--adapt", "all", "--progress-json")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    held_out = done["negatives_held_out"]
    assert done["held_out_slices"] == 0 and held_out["new"] < held_out["parent"] / 2

    card = ModelCard.load(user_store / "site-normals.json")
    site = card.training["site_data"]["without_infection"]
    assert site["volumes"] == 1 and site["finetune_slices"] + site["held_out_slices"] == site["slices"] > 40
    assert card.training["kept_epoch"].startswith("last") and card.training["epochs_run"] == 3
    assert card.validation["without_infection"] == held_out
    text = json.dumps(card.to_json())
    assert "normal-a" not in text and str(negatives) not in text  # counts only, never names
    assert "--negative-volumes" in card.training["command"]
    assert _infection_voxels(user_store / "site-normals.json", sample) < before / 2


def test_finetune_on_labelled_cases_and_negatives_together(tmp_path, untrained_card, user_store):
    negatives = _negatives(tmp_path / "site-normals", "normal-a", "normal-b")
    volumes, labels = tmp_path / "volumes", tmp_path / "labels"
    volumes.mkdir()
    labels.mkdir()
    (volumes / "site1.nrrd").write_bytes(SAMPLE.read_bytes())
    image = sitk.ReadImage(str(SAMPLE))
    hu = sitk.GetArrayFromImage(image)
    mask = np.zeros(hu.shape, np.uint8)
    mask[20:50, 60:100, 60:200] = (hu[20:50, 60:100, 60:200] > -750) & (hu[20:50, 60:100, 60:200] < -300)
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(labels / "site1.nrrd"))

    result = run_cli("finetune", "--base", untrained_card.path, "--name", "site-both", "--volumes", volumes,
                     "--labels", labels, "--negative-volumes", negatives, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "held-out Inf-Net Dice" in result.stdout and "without infection" in result.stdout
    card = ModelCard.load(user_store / "site-both.json")
    assert card.training["site_data"]["volumes"] == 1
    assert card.training["site_data"]["without_infection"]["volumes"] == 2
    assert card.training["hyperparameters"]["ct_per_step"] == card.training["hyperparameters"]["batch_size"]


def _no_lungs(path):
    """A water cylinder in air: a CT with no lungs."""
    z, y, x = np.ogrid[:16, :64, :64]
    phantom = np.where((y - 32) ** 2 + (x - 32) ** 2 < 24 ** 2, 0, -1000).astype(np.int16) + 0 * z
    sitk.WriteImage(sitk.GetImageFromArray(phantom), str(path))


def _mr_like(path):
    sitk.WriteImage(sitk.GetImageFromArray(
        np.random.default_rng(0).integers(0, 1200, (20, 64, 64)).astype(np.int16)), str(path))


@pytest.mark.parametrize("make, name, message", [
    (_no_lungs, "phantom.nrrd", "no lungs found in this CT"),
    (_mr_like, "t1.nii.gz", "Hounsfield"),
])
def test_a_bad_volume_among_the_negatives_is_refused_naming_it(make, name, message, tmp_path, untrained_card,
                                                               user_store):
    negatives = _negatives(tmp_path / "site-normals", "normal-a")
    make(negatives / name)
    result = run_cli("finetune", "--base", untrained_card.path, "--name", "site-normals", "--negative-volumes",
                     negatives, "--epochs", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and message in lines[0], result.stderr
    assert not user_store.exists() or not list(user_store.iterdir())  # nothing written


def test_negative_volumes_must_hold_cts(tmp_path, untrained_card, user_store):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in ((empty, "no CT volumes or DICOM folders"), (tmp_path / "missing", "not a folder")):
        result = run_cli("finetune", "--base", untrained_card.path, "--name", "x", "--negative-volumes", folder)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
