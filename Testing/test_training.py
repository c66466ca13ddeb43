"""`lightseg train` on real slices and on a real CT volume with a .seg.nrrd label; the card it writes."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import REPO, SAMPLE, SEMISEG, run_cli
from LightSegLib.cards import ModelCard, load_network, sha256_of
from LightSegLib.engine import Segmenter
from LightSegLib.errors import LightSegError
from LightSegLib.evaluation import evaluate_slices
from LightSegLib.io import ijk_to_lps
from LightSegLib.postprocess import RECOMMENDED_POSTPROCESSING
from LightSegLib.training.augment import AugmentConfig, augment, intensity
from LightSegLib.training.slices import keep_clear_slices_in_proportion, load_image_folders, split_fold

WINDOW = REPO / "Resources" / "Calibration" / "hu-window-P001.json"


@pytest.fixture
def few_slices(tmp_path):
    """Eight real labelled slices, copied into a folder pair of their own."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("0", "1", "2", "3", "4", "5", "10", "11"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes((SEMISEG / "images" / f"{name}.jpg").read_bytes())
        (tmp_path / "masks" / f"{name}.png").write_bytes((SEMISEG / "masks" / f"{name}.png").read_bytes())
    return tmp_path


def test_train_writes_a_loadable_model_with_its_card(few_slices, tmp_path):
    out = tmp_path / "models"
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "tiny",
                     "-o", out, "--epochs", "2", "--input-size", "64", "--val-fraction", "0.25",
                     "--hu-window-from", WINDOW, "--class-weights", "none", "--dice-weight", "0.5",
                     "--tversky-beta", "0.7", "--min-contrast", "0.6", "--test-time-flips", "horizontal")
    assert result.returncode == 0, result.stderr
    card = ModelCard.load(out / "tiny.json")
    assert card.test_time_flips == ["horizontal"] and "--test-time-flips horizontal" in card.training["command"]
    assert card.postprocessing_settings() == RECOMMENDED_POSTPROCESSING  # a model trained from scratch
    assert card.training["hyperparameters"]["augment"]["min_contrast"] == 0.6
    assert card.training["hyperparameters"]["class_weights"] == "none"
    assert card.training["hyperparameters"]["dice_weight"] == 0.5
    assert card.training["hyperparameters"]["tversky_beta"] == 0.7
    assert card.weights_sha256 == sha256_of(out / "tiny.pt")
    assert card.parameters == 82_666 and card.arch_config["aux"] is False
    assert card.training["command"].startswith("lightseg train --images")
    assert card.training["train_slices"] == 6 and card.training["validation_slices"] == 2
    assert len(card.training["history"]) == 2
    assert card.hu_window.level == json.loads(WINDOW.read_text())["level"]
    assert 0 <= card.validation["kept"]["infnet_dice"] <= 1
    state = torch.load(out / "tiny.pt", weights_only=True)
    assert not any(k.startswith("heads.1.") for k in state)  # auxiliary heads are for training only
    load_network(card)
    # the card's validation figure is the model as it runs, test-time flips included
    segmenter = Segmenter(card, "cpu")
    validation = load_image_folders(few_slices / "images", few_slices / "masks")
    validation = validation.subset([validation.names.index(n) for n in card.training["validation_names"]])
    assert abs(evaluate_slices(segmenter, validation)["mean"]["infnet_dice"]
               - card.validation["kept"]["infnet_dice"]) < 1e-6


def test_card_records_the_whole_chain_of_parents(few_slices, tmp_path):
    parent = ModelCard.load(REPO / "Resources" / "Models" / "miniseg-covid.json")
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "child",
                     "-o", tmp_path / "models", "--init", REPO / "Resources" / "Models" / "miniseg-covid.json",
                     "--epochs", "1", "--input-size", "64", "--val-fraction", "0.25", "--val-fold", "1",
                     "--hu-window-from", WINDOW)
    assert result.returncode == 0, result.stderr
    child = ModelCard.load(tmp_path / "models" / "child.json")
    names = load_image_folders(few_slices / "images", few_slices / "masks").names
    assert sorted(child.training["validation_names"]) == sorted(names[i] for i in split_fold(8, 0.25, 0, fold=1)[1])
    assert child.validation["fold"].endswith("(seed 0, fold 1)")
    lineage = child.training["initialised_from"]
    assert lineage["sha256"] == parent.weights_sha256
    assert lineage["training_command"] == parent.training["command"]
    assert lineage["initialised_from"] == parent.training["initialised_from"] is not None
    assert child.postprocessing == parent.postprocessing  # the initial model's inference settings


@pytest.fixture
def few_pseudo_slices(tmp_path):
    """Three real pseudo-labelled slices (soft Inf-Net labels), in a folder pair of their own."""
    pseudo = SEMISEG.parent / "pseudo"
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        (tmp_path / "pseudo" / kind).mkdir(parents=True)
        for name in ("Data-1_coronacases_org_001_100", "Data-1_coronacases_org_002_20", "Data-1_coronacases_org_003_64"):
            (tmp_path / "pseudo" / kind / f"{name}{suffix}").write_bytes((pseudo / kind / f"{name}{suffix}").read_bytes())
    return tmp_path / "pseudo"


def test_train_mixes_pseudo_labelled_slices_into_every_step(few_slices, few_pseudo_slices, tmp_path):
    """The same seeded run from scratch with and without pseudo-labelled slices: the card says what was mixed in, and
    it changes the weights (a run without them is reproducible to the bit, so the difference is theirs)."""
    common = ["train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--epochs", "1",
              "--input-size", "64", "--val-fraction", "0.25", "--class-weights", "none", "--threads", "1", "--keep", "last"]
    for name, extra in (("plain", []), ("plain-again", []),
                        ("mixed", ["--pseudo-images", few_pseudo_slices / "images", "--pseudo-masks",
                                   few_pseudo_slices / "masks", "--pseudo-per-step", "2", "--pseudo-weight", "0.5"])):
        result = run_cli(*common, "--name", name, "-o", tmp_path / "models", *extra)
        assert result.returncode == 0, result.stderr
    states = {name: torch.load(tmp_path / "models" / f"{name}.pt", weights_only=True)
              for name in ("plain", "plain-again", "mixed")}
    def largest_change(other: str) -> float:
        return max(float((states["plain"][k].float() - states[other][k].float()).abs().max()) for k in states["plain"])

    assert largest_change("plain-again") == 0  # seeded from the initial weights on: the same run, the same model
    assert largest_change("mixed") > 1e-3
    card = ModelCard.load(tmp_path / "models" / "mixed.json")
    assert card.training["pseudo_labelled_data"] == {"images": str(few_pseudo_slices / "images"),
                                                     "masks": str(few_pseudo_slices / "masks"), "slices": 3,
                                                     "labelled_by": None}  # Inf-Net's labels carry no provenance
    assert card.training["hyperparameters"]["pseudo_per_step"] == 2
    assert card.training["hyperparameters"]["pseudo_weight"] == 0.5
    assert card.training["train_slices"] == 6  # the pseudo-labelled slices are neither trained on as labels nor validated
    assert ModelCard.load(tmp_path / "models" / "plain.json").training["pseudo_labelled_data"] is None


def test_pseudo_label_writes_the_models_probabilities_as_soft_masks(few_slices, few_pseudo_slices, tmp_path):
    """Self-training input: one 0-255 mask per slice, exactly the model's probability map, and which model made
    them, which a model trained on them records in its card."""
    from LightSegLib import registry
    from LightSegLib.engine import Segmenter
    from LightSegLib.network import predict_image

    out = tmp_path / "self-labels"
    result = run_cli("pseudo-label", few_pseudo_slices / "images", "--model", "miniseg-covid", "-o", out,
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    labelled = load_image_folders(few_pseudo_slices / "images", out, soft=True)
    assert labelled.names == load_image_folders(few_pseudo_slices / "images", few_pseudo_slices / "masks").names
    segmenter = Segmenter(registry.resolve("miniseg-covid"), "cpu")
    for image, mask in zip(labelled.images, labelled.targets):
        expected = predict_image(segmenter.model, segmenter.spec, image, segmenter.device)
        assert mask.shape == image.shape
        assert np.abs(mask - expected).max() <= 0.5 / 255 + 1e-6
    assert max(mask.max() for mask in labelled.targets) > 0.5  # these slices are infected: not a blank map
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    shipped = ModelCard.load(REPO / "Resources" / "Models" / "miniseg-covid.json")
    provenance = json.loads((out / "pseudo-labels.json").read_text())
    assert provenance["model"] == "miniseg-covid" and provenance["weights_sha256"] == shipped.weights_sha256
    assert provenance["command"].startswith("lightseg pseudo-label ") and provenance["slices"] == 3
    assert provenance["threshold"] is None
    hard = tmp_path / "hard-labels"
    result = run_cli("pseudo-label", few_pseudo_slices / "images", "--model", "miniseg-covid", "-o", hard,
                     "--threshold", "0.5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    hard_labelled = load_image_folders(few_pseudo_slices / "images", hard, soft=True)
    for image, hard_mask in zip(hard_labelled.images, hard_labelled.targets):
        expected = predict_image(segmenter.model, segmenter.spec, image, segmenter.device)
        assert set(np.unique(hard_mask)) == {0.0, 1.0}
        assert np.array_equal(hard_mask == 1.0, expected >= 0.5)
    assert json.loads((hard / "pseudo-labels.json").read_text())["threshold"] == 0.5
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "student",
                     "-o", tmp_path / "models", "--epochs", "1", "--input-size", "64", "--val-fraction", "0.25",
                     "--pseudo-images", few_pseudo_slices / "images", "--pseudo-masks", out)
    assert result.returncode == 0, result.stderr
    assert ModelCard.load(tmp_path / "models" / "student.json").training["pseudo_labelled_data"]["labelled_by"] == provenance


def test_pseudo_label_refuses_to_overwrite_and_rejects_bad_folders(few_pseudo_slices, tmp_path):
    out = tmp_path / "self-labels"
    out.mkdir()
    (out / "mine.png").write_bytes(b"the user's file")
    result = run_cli("pseudo-label", few_pseudo_slices / "images", "-o", out, "--model", "no-such-model",
                     "--device", "cpu")  # the output is checked before the model is looked up and loaded
    assert result.returncode == 2 and "self-labels: output exists (use --force" in result.stderr
    assert (out / "mine.png").read_bytes() == b"the user's file"
    result = run_cli("pseudo-label", tmp_path / "nope", "-o", tmp_path / "other", "--device", "cpu")
    assert result.returncode == 2 and "nope: not a folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_cli("pseudo-label", tmp_path / "empty", "-o", tmp_path / "other", "--device", "cpu")
    assert result.returncode == 2 and "empty: no image files in the folder" in result.stderr
    for threshold in ("0", "1.5"):
        result = run_cli("pseudo-label", few_pseudo_slices / "images", "-o", tmp_path / "other", "--threshold",
                         threshold, "--device", "cpu")
        assert result.returncode == 2 and f"{float(threshold)}: pseudo-label threshold must be in (0, 1]" in result.stderr
    assert not (tmp_path / "other").exists()
    result = run_cli("pseudo-label", few_pseudo_slices / "images", "-o", out, "--device", "cpu", "--force")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([p.stem + ".png" for p in (few_pseudo_slices / "images").iterdir()] + ["pseudo-labels.json"])


def test_pseudo_stream_hands_out_every_slice_once_per_pass():
    from LightSegLib.training.loop import SliceStream
    from LightSegLib.training.slices import SliceSet

    data = SliceSet([np.full((8, 8), i / 10, np.float32) for i in range(5)], [np.zeros((8, 8), np.float32)] * 5,
                    [str(i) for i in range(5)])
    stream = SliceStream(data, 8, torch.device("cpu"), torch.Generator().manual_seed(0))
    taken = torch.cat([stream.take(2)[0] for _ in range(5)])[:, 0, 0, 0]  # ten slices: two full passes
    first, second = (sorted(round(float(v) * 10) for v in half) for half in (taken[:5], taken[5:]))
    assert first == second == [0, 1, 2, 3, 4]


def test_class_weights():
    from LightSegLib.training.loop import class_weights

    enet = class_weights("enet", 0.05)
    assert enet[1] > 3 * enet[0]  # the rare infection class weighs more
    assert torch.equal(class_weights("none", 0.05), torch.ones(2))
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights("focal", 0.05)


def test_overlap_loss_is_soft_dice_at_half_and_penalises_misses_above():
    from LightSegLib.training.loop import overlap_loss

    gen = torch.Generator().manual_seed(0)
    prob = torch.rand(3, 1, 16, 16, generator=gen)
    target = (torch.rand(3, 1, 16, 16, generator=gen) > 0.6).float()
    dims = (1, 2, 3)
    soft_dice = (1 - (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)).mean()
    assert torch.equal(overlap_loss(prob, target), soft_dice)  # bit for bit, so earlier recipes still reproduce
    tp, fp, fn = ((prob * target).sum(dims), (prob * (1 - target)).sum(dims), ((1 - prob) * target).sum(dims))
    tversky = (1 - (2 * tp + 1) / (2 * tp + 2 * 0.3 * fp + 2 * 0.7 * fn + 1)).mean()
    assert torch.allclose(overlap_loss(prob, target, beta=0.7), tversky)

    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1  # 16 infected pixels
    missed, extra = target.clone(), target.clone()
    missed[..., 2, 2:6] = 0  # 4 infected pixels missed
    extra[..., 6, 2:6] = 1  # 4 clear pixels marked
    assert overlap_loss(missed, target, beta=0.7) > overlap_loss(missed, target) > overlap_loss(missed, target, beta=0.3)
    assert overlap_loss(extra, target, beta=0.7) < overlap_loss(extra, target) < overlap_loss(extra, target, beta=0.3)


def test_train_refuses_to_overwrite_and_rejects_bad_folders(few_slices, tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    (out / "tiny.json").write_text("{}")
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "tiny",
                     "-o", out, "--epochs", "1")
    assert result.returncode == 2 and "--force" in result.stderr
    result = run_cli("train", "--images", tmp_path / "nope", "--masks", few_slices / "masks", "--name", "x",
                     "-o", out)
    assert result.returncode == 2 and "nope: not a folder" in result.stderr
    result = run_cli("train", "--arch", "unet9000", "--images", few_slices / "images", "--masks",
                     few_slices / "masks", "--name", "x", "-o", out)
    assert result.returncode == 2 and "unknown architecture 'unet9000'" in result.stderr
    result = run_cli("train", "--arch", "malunet", "--input-size", "100", "--images", few_slices / "images",
                     "--masks", few_slices / "masks", "--name", "x", "-o", out)
    assert result.returncode == 2 and "multiple of 32 for malunet" in result.stderr
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "x",
                     "-o", out, "--val-fraction", "0.25", "--val-fold", "4")
    assert result.returncode == 2 and "validation fold 4 does not exist" in result.stderr
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "x",
                     "-o", out, "--pseudo-images", few_slices / "images")
    assert result.returncode == 2 and "give both --pseudo-images and --pseudo-masks" in result.stderr
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "x",
                     "-o", out, "--tversky-beta", "1")
    assert result.returncode == 2 and "--tversky-beta must be between 0 and 1" in result.stderr
    result = run_cli("train", "--images", few_slices / "images", "--masks", few_slices / "masks", "--name", "x",
                     "-o", out, "--min-contrast", "0")
    assert result.returncode == 2 and "--min-contrast must be above 0 and at most 1" in result.stderr
    assert not (out / "x.json").exists()


def test_train_from_a_ct_volume_and_a_seg_nrrd_label(sample, tmp_path):
    """A real CT and a Slicer segmentation (cropped to the segment, as Slicer may save it): slices with lung only."""
    volumes, labels = tmp_path / "volumes", tmp_path / "labels"
    volumes.mkdir()
    labels.mkdir()
    (volumes / "case1.nrrd").write_bytes(SAMPLE.read_bytes())
    hu = sitk.GetArrayFromImage(sample)
    infection = np.zeros(hu.shape, bool)
    infection[30:40, 60:120, 40:100] = hu[30:40, 60:120, 40:100] > -750  # dense lung: a synthetic label
    cropped = sitk.GetImageFromArray(infection[25:45].astype(np.uint8))
    cropped.CopyInformation(sample[:, :, 25:45])
    segmentation = slicerio.create_segmentation(cropped.GetSize(), ijk_to_lps(cropped))
    slicerio.add_segment(segmentation, np.transpose(infection[25:45], (2, 1, 0)), {"name": "Infection"})
    slicerio.write_segmentation(str(labels / "case1.seg.nrrd"), segmentation)

    out = tmp_path / "models"
    result = run_cli("train", "--volumes", volumes, "--labels", labels, "--name", "from-ct", "-o", out,
                     "--epochs", "1", "--input-size", "64", "--hu-window-from", WINDOW)
    assert result.returncode == 0, result.stderr
    data = ModelCard.load(out / "from-ct.json").training["data"]
    assert data["volumes_dir"] == str(volumes) and data["volumes"] == 1
    assert 0 < data["slices_with_lung"] <= sample.GetSize()[2]
    assert data["slices_with_infection"] == 10
    assert data["label_source"] == ["segment 'Infection', resampled onto the volume grid"]


def test_volume_training_needs_a_window(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "l").mkdir()
    result = run_cli("train", "--volumes", tmp_path / "v", "--labels", tmp_path / "l", "--name", "x", "-o", tmp_path)
    assert result.returncode == 2 and "HU window" in result.stderr


def test_split_and_clear_slice_proportion_are_seeded():
    train, val = split_fold(50, 0.2, seed=0)
    assert len(val) == 10 and len(train) == 40 and not set(train) & set(val)
    assert np.array_equal(split_fold(50, 0.2, seed=0)[1], val)
    data = load_image_folders(SEMISEG / "images", SEMISEG / "masks")
    data.targets[0] = np.zeros_like(data.targets[0])
    data.targets[1] = np.zeros_like(data.targets[1])
    kept = keep_clear_slices_in_proportion(data, max_clear_fraction=0.02, seed=0)
    assert len(kept) == 48 + 1


def test_validation_folds_of_one_seed_cover_every_slice_once():
    """Cross-validation: folds 0-4 at 1/5 are disjoint, cover all 50 slices, and fold 0 is the default split."""
    folds = [split_fold(50, 0.2, seed=0, fold=k) for k in range(5)]
    assert np.array_equal(folds[0][1], split_fold(50, 0.2, seed=0)[1])
    validated = np.concatenate([val for _, val in folds])
    assert sorted(validated) == list(range(50))
    for train, val in folds:
        assert len(train) == 40 and not set(train) & set(val)
    with pytest.raises(LightSegError, match="folds 0 to 4"):
        split_fold(50, 0.2, seed=0, fold=5)


def test_augmentation_keeps_images_and_targets_aligned():
    """The same geometric transform moves image and target: a bright square and its mask stay together."""
    image = torch.zeros(4, 1, 64, 64)
    image[:, :, 20:36, 24:40] = 1.0
    target = image.clone()
    gen = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(window_jitter=0, gamma_range=(1, 1), blur_probability=0, sharpen_probability=0,
                        noise_probability=0)
    out_image, out_target = augment(image, target, cfg, gen)
    assert torch.allclose(out_image, out_target, atol=1e-5)
    assert out_image.min() >= 0 and out_image.max() <= 1
    assert not torch.equal(out_image, image)


def test_contrast_augmentation_makes_lesions_fainter_about_the_slice_median(few_slices):
    """--min-contrast: on a real labelled slice the lesion-to-parenchyma difference shrinks by the drawn factor,
    the median (parenchyma) stays, and at 1 (the default) the slice is untouched."""
    data = load_image_folders(few_slices / "images", few_slices / "masks")
    image = torch.as_tensor(data.images[0], dtype=torch.float32).view(1, 1, *data.images[0].shape).repeat(8, 1, 1, 1)
    lesion = torch.as_tensor(data.targets[0] > 0.5).expand_as(image)
    assert lesion.any()
    still = dict(window_jitter=0, gamma_range=(1, 1), blur_probability=0, sharpen_probability=0, noise_probability=0)
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(intensity(image, AugmentConfig(**still), gen), image, atol=1e-6)
    faint = intensity(image, AugmentConfig(min_contrast=0.5, **still), gen)
    median = image[0].median()
    ratio = torch.stack([(f[m] - median).abs().mean() / (i[m] - median).abs().mean()
                         for f, i, m in zip(faint, image, lesion)])
    assert torch.all((ratio >= 0.5 - 1e-4) & (ratio <= 1 + 1e-4)) and ratio.std() > 0.02
    assert torch.allclose(faint.flatten(1).median(1).values, image.flatten(1).median(1).values, atol=1e-6)


def test_time_budget_anneals_the_learning_rate():
    """Under --minutes the poly schedule follows elapsed time when that is further along than the steps."""
    from LightSegLib.training.loop import _progress

    assert _progress(10, 100, 30.0, None) == 0.1
    assert _progress(10, 100, 30.0, 1.0) == 0.5  # half the minute spent, a tenth of the steps done
    assert _progress(90, 100, 6.0, 1.0) == 0.9
    assert _progress(10, 100, 120.0, 1.0) == 1.0

