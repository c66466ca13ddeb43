"""A model whose infection components a second network must confirm (``postprocessing.confirm_with``): the
shipped pair ``miniseg-covid-confirmed`` on the bundled sample, checked against its two networks run apart."""

import json
import shutil

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SAMPLE, run_cli
from LightSegLib import registry
from LightSegLib.engine import Segmenter
from LightSegLib.errors import LightSegError
from LightSegLib.io import INFECTION, LUNG


def labels_of(model_id: str, image: sitk.Image) -> tuple[np.ndarray, dict, dict]:
    result = Segmenter(registry.resolve(model_id), "cpu").segment_volume(image)
    return sitk.GetArrayFromImage(result.labels), result.postprocessing["removed"], result.timings


def test_the_pair_keeps_exactly_the_components_its_confirming_network_touches(sample):
    """Each network run alone on every slice with its own card's rules, then the components of the first that the
    second's calls touch (26-connected, as the clean-up labels them): the pair's output, voxel for voxel, from one
    run in which the confirming network starts from the slices with infection (53 of the sample's 74 lung slices)."""
    outline, _, _ = labels_of("miniseg-covid", sample)
    confirming, _, _ = labels_of("miniseg-confirm", sample)
    pair, removed, timings = labels_of("miniseg-covid-confirmed", sample)
    assert "confirming_network" in timings
    components = cc3d.connected_components(outline == INFECTION, connectivity=26)
    touched = np.unique(components[(confirming == INFECTION) & (components > 0)])
    expected = np.isin(components, touched[touched > 0])
    assert ((pair == INFECTION) == expected).all()
    dropped = (outline == INFECTION) & ~expected
    assert dropped.any() and (pair[dropped] == LUNG).all() and ((pair > 0) == (outline > 0)).all()
    voxel_ml = np.prod(sample.GetSpacing()) / 1000
    assert removed["unconfirmed"]["ml"] == pytest.approx(dropped.sum() * voxel_ml, abs=0.01)


def test_segment_reports_the_unconfirmed_components(tmp_path):
    result = run_cli("segment", SAMPLE, "--model", "miniseg-covid-confirmed", "-o", tmp_path / "out.seg.nrrd",
                     "--report", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["postprocessing"]["settings"]["confirm_with"] == "miniseg-confirm"
    assert report["postprocessing"]["removed"]["unconfirmed"]["components"] > 0


def test_the_confirming_networks_card_names_its_training_and_held_out_cts():
    card = registry.resolve("miniseg-confirm")
    assert card.training["command"].startswith("lightseg train") and "--neighbour-mm 5" in card.training["command"]
    assert card.neighbour_slices_mm == 5.0 and card.postprocessing_settings().confirm_with == ""
    trained, held_out = set(card.training["trained_on_cts"]), set(card.training["held_out_cts"])
    assert trained == {"P001", "LIDC-IDRI-0001", "POPI-00"} and not trained & held_out
    pair = registry.resolve("miniseg-covid-confirmed")
    assert pair.weights_sha256 == registry.resolve("miniseg-covid").weights_sha256  # the same outlining network


def test_a_confirming_model_that_needs_confirming_itself_is_refused(tmp_path):
    card = json.loads(registry.card_path("miniseg-confirm").read_text())
    card["postprocessing"]["confirm_with"] = "miniseg-confirm"
    shutil.copy(registry.card_path("miniseg-confirm").with_suffix(".pt"), tmp_path / card["weights_file"])
    (tmp_path / "loop.json").write_text(json.dumps(card))
    outline = json.loads(registry.card_path("miniseg-covid").read_text())
    outline["postprocessing"]["confirm_with"] = str(tmp_path / "loop.json")
    shutil.copy(registry.card_path("miniseg-covid").with_suffix(".pt"), tmp_path / outline["weights_file"])
    (tmp_path / "outline.json").write_text(json.dumps(outline))
    with pytest.raises(LightSegError, match="cannot need confirming itself"):
        Segmenter(registry.resolve(str(tmp_path / "outline.json")), "cpu")
