"""Ground-glass opacity and consolidation: the pattern network, the pattern map and its outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import SAMPLE, SEMISEG, run_cli
from LightSegLib.io import INFECTION


@pytest.fixture(scope="module")
def segmenters():
    from LightSegLib.pipeline import make_segmenter

    with_patterns = make_segmenter(None, "cpu")
    from LightSegLib.engine import Segmenter

    return with_patterns, Segmenter(with_patterns.card, "cpu")


def test_the_shipped_pattern_network_calls_dense_consolidation_and_faint_ground_glass():
    """On a lung crop windowed as the engine windows it (level -405, width 1430): a disc at 0 HU (consolidation's
    density) and one at -600 HU (ground-glass) in lung at -850 HU."""
    from LightSegLib.patterns.model import load_pattern_model

    def windowed(hu: float) -> float:
        return (hu - (-405 - 715)) / 1430

    yy, xx = np.mgrid[:288, :288]
    crop = np.full((288, 288), windowed(-850), np.float32)
    dense = (yy - 100) ** 2 + (xx - 90) ** 2 < 30 ** 2
    faint = (yy - 190) ** 2 + (xx - 200) ** 2 < 30 ** 2
    crop[dense], crop[faint] = windowed(0), windowed(-600)
    crop += np.random.default_rng(0).normal(0, 0.01, crop.shape).astype(np.float32)
    consolidation = load_pattern_model().consolidation(torch.from_numpy(crop)[None, None], full_size=True)[0].numpy()
    assert consolidation[dense].mean() > 0.5 > consolidation[faint].mean()


def test_a_dense_core_is_consolidation_and_a_faint_halo_ground_glass_in_a_volume(segmenters):
    """The bundled chest CT with a constructed lesion in the middle of one lung: a -50 HU core (consolidation's
    density) inside a -600 HU halo (ground-glass), the common COVID-19 picture; and a -600 HU patch in the other lung.
    The infection model calls them (measured: about 95 % of their voxels) and the pattern map says consolidation in
    the core (about 90 %) and ground-glass in the halo and the patch (about 98 %); the high-opacity rule (> -200 HU)
    agrees. A smooth dense sphere alone is not called infection at all (it looks like a nodule), hence the halo."""
    with_patterns, _ = segmenters
    image = sitk.ReadImage(str(SAMPLE))
    lungs = sitk.GetArrayViewFromImage(with_patterns.segment_volume(image).labels) > 0
    hu = sitk.GetArrayFromImage(image)
    k, j, i = np.indices(hu.shape)
    z = int(np.median(np.nonzero(lungs.any(axis=(1, 2)))[0]))
    regions = {}
    for half, name in ((slice(0, hu.shape[2] // 2), "lesion"), (slice(hu.shape[2] // 2, None), "patch")):
        in_half = np.zeros_like(lungs)
        in_half[:, :, half] = lungs[:, :, half]
        _, cj, ci = (int(np.median(a)) for a in np.nonzero(in_half[z - 2:z + 3]))
        distance2 = (k - z) ** 2 * 4 + (j - cj) ** 2 + (i - ci) ** 2  # 4 mm slices, 1.5 mm pixels
        regions[name] = (distance2 < 12 ** 2) & lungs
        if name == "lesion":
            regions["core"] = (distance2 < 6 ** 2) & lungs
    hu[regions["lesion"] | regions["patch"]] = -600
    hu[regions["core"]] = -50
    changed = sitk.GetImageFromArray(hu)
    changed.CopyInformation(image)
    result = with_patterns.segment_volume(changed)
    labels = sitk.GetArrayViewFromImage(result.labels)
    patterns = sitk.GetArrayViewFromImage(result.patterns)
    halo = regions["lesion"] & ~regions["core"]
    for name, voxels, expected, share in (("core", regions["core"], 2, 0.8), ("halo", halo, 1, 0.9),
                                          ("patch", regions["patch"], 1, 0.9)):
        called = voxels & (labels == INFECTION)
        assert called.sum() > 0.8 * voxels.sum(), f"the {name} is not called infection"
        assert (patterns[called] == expected).mean() > share, name
    assert (hu[regions["core"]] > -200).all() and (hu[halo | regions["patch"]] <= -200).all()


def test_patterns_split_the_infection_and_leave_the_labels_as_they_were(segmenters, sample):
    from LightSegLib.report import build_report

    with_patterns, without = segmenters
    result, plain = with_patterns.segment_volume(sample), without.segment_volume(sample)
    labels = sitk.GetArrayViewFromImage(result.labels)
    assert np.array_equal(labels, sitk.GetArrayViewFromImage(plain.labels)) and plain.patterns is None
    patterns = sitk.GetArrayViewFromImage(result.patterns)
    assert np.array_equal(patterns > 0, labels == INFECTION) and set(np.unique(patterns)) <= {0, 1, 2}
    for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(result.patterns, getter)() == getattr(sample, getter)()
    report = build_report(result, with_patterns.card, "cpu", "sample")
    figures = report["patterns"]
    assert abs(figures["ground_glass_ml"] + figures["consolidation_ml"] - report["infection_ml"]) <= 0.11
    for side in ("right", "left"):
        assert abs(figures[side]["ground_glass_ml"] + figures[side]["consolidation_ml"]
                   - report["lungs"][side]["infection_ml"]) <= 0.11


def test_segment_writes_the_pattern_map_and_four_segments(tmp_path):
    out = tmp_path
    result = run_cli("segment", SAMPLE, "-o", out / "r.seg.nrrd", "--patterns", out / "p.nrrd", "--report",
                     out / "r.json")
    assert result.returncode == 0, result.stderr
    assert "patterns: ground-glass" in result.stdout
    patterns, source = sitk.ReadImage(str(out / "p.nrrd")), sitk.ReadImage(str(SAMPLE))
    for getter in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert getattr(patterns, getter)() == getattr(source, getter)()
    segmentation = slicerio.read_segmentation(str(out / "r.seg.nrrd"))
    names = [s["name"] for s in segmentation["segments"]]
    assert names == ["Lungs", "Infection", "Ground-glass opacity", "Consolidation"]
    report = json.loads((out / "r.json").read_text())
    voxels = np.bincount(sitk.GetArrayViewFromImage(patterns).ravel(), minlength=3)
    ml = np.prod(patterns.GetSpacing()) / 1000
    assert report["patterns"]["consolidation_ml"] == pytest.approx(voxels[2] * ml, abs=0.06)


def test_a_slice_gets_a_png_pattern_map_and_bad_pattern_paths_are_refused(tmp_path):
    image = SEMISEG / "images" / "0.jpg"
    result = run_cli("segment", image, "-o", tmp_path / "labels.png", "--patterns", tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(tmp_path / "p.png") as png, Image.open(image) as source:
        values = np.asarray(png)
        assert png.size == source.size and set(np.unique(values)) <= {0, 1, 2}
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    assert np.array_equal(values > 0, labels > 0)

    refused = run_cli("segment", SAMPLE, "-o", tmp_path / "v.nrrd", "--patterns", tmp_path / "v.png")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "PNG output is for 2D slices" in refused.stderr and "v.png" in refused.stderr
    assert not (tmp_path / "v.nrrd").exists() and not (tmp_path / "v.png").exists()


def test_train_patterns_writes_a_card_with_its_cross_validation_and_refuses_bad_masks(tmp_path):
    result = run_cli("train-patterns", "--images", SEMISEG / "images", "--masks", SEMISEG / "masks-multiclass",
                     "--name", "p", "-o", tmp_path, "--folds", "2", "--steps", "3", "--threads", "1")
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "p.json").read_text())
    cv = card["validation"]["cross_validation"]
    assert cv["folds"] == 2 and cv["images"] == 50
    assert {"ground_glass_dice", "consolidation_dice"} <= set(cv["network"]) and "gray_level_threshold" in cv
    assert card["training"]["command"].startswith("lightseg train-patterns --images")

    again = run_cli("train-patterns", "--images", SEMISEG / "images", "--masks", SEMISEG / "masks-multiclass",
                    "--name", "p", "-o", tmp_path, "--folds", "0", "--steps", "3")
    assert again.returncode == 2 and "use --force" in again.stderr

    masks = tmp_path / "bad-masks"
    masks.mkdir()
    from PIL import Image

    Image.fromarray(np.full((20, 20), 3, np.uint8)).save(masks / "0.png")
    bad = run_cli("train-patterns", "--images", SEMISEG / "images", "--masks", masks, "--name", "q", "-o",
                  tmp_path, "--folds", "0", "--steps", "3")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "0.png" in bad.stderr
    assert not (tmp_path / "q.json").exists()
