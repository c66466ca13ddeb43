"""The 3D clean-up of the infection mask: each kept rule on constructed volumes, then on the bundled sample."""

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from LightSegLib.cards import ModelCard
from LightSegLib.engine import Segmenter
from LightSegLib.errors import LightSegError
from LightSegLib.io import INFECTION, LUNG
from LightSegLib.postprocess import PostProcessing, clean_infection
from LightSegLib.report import build_report

SPACING = (2.0, 1.0, 1.0)  # mm along (S, P, L): 2 mm slices, 1 mm pixels
RULES = PostProcessing(min_lesion_mm3=500.0, remove_domes=True)


def chest() -> tuple[np.ndarray, np.ndarray]:
    """A (S, P, L) HU volume and its lung mask: soft tissue everywhere, a box of aerated lung over slices 10-39,
    and below it an organ (liver) whose dome rises into the lung as a cone, its tip surrounded by lung."""
    hu = np.full((40, 80, 80), 40.0, np.float32)
    lungs = np.zeros(hu.shape, bool)
    lungs[10:, 10:70, 10:70] = True
    y, x = np.mgrid[:80, :80]
    for z, radius in zip(range(10, 14), (16, 12, 8, 4)):  # the dome narrows upwards
        lungs[z][(y - 40) ** 2 + (x - 40) ** 2 <= radius ** 2] = False
    hu[lungs] = -850.0
    return hu, lungs


def ring_round_dome(lungs: np.ndarray) -> np.ndarray:
    """What the network calls on a dome tip: the partial-volume rim of lung around it, in its top slices."""
    y, x = np.mgrid[:80, :80]
    rim = np.zeros(lungs.shape, bool)
    for z, radius in zip(range(11, 14), (12, 8, 4)):
        r2 = (y - 40) ** 2 + (x - 40) ** 2
        rim[z] = (r2 > radius ** 2) & (r2 <= (radius + 4) ** 2)
    return rim & lungs


def test_a_blob_on_the_organ_under_the_diaphragm_is_removed_and_a_ground_glass_patch_of_its_size_kept():
    hu, lungs = chest()
    dome = ring_round_dome(lungs)
    patch = np.zeros(lungs.shape, bool)  # a peripheral patch higher up, lung under it, as many voxels as the dome
    patch[24:27, 12:12 + 20, 12:12 + 20] = True
    patch.ravel()[np.flatnonzero(patch)[np.count_nonzero(dome):]] = False
    hu[patch] = -600.0
    assert np.count_nonzero(patch) == np.count_nonzero(dome) and np.count_nonzero(dome) * np.prod(SPACING) > 500

    infection = dome | patch
    removed = clean_infection(infection, hu, lungs, SPACING, RULES)
    assert not (infection & dome).any()
    assert (infection == patch).all()
    assert removed == {"dome": {"components": 1, "ml": round(np.count_nonzero(dome) * np.prod(SPACING) / 1000, 2)}}


def test_a_lesion_lying_on_the_diaphragm_beside_the_dome_is_kept():
    """A basal lesion ends where the lung ends: lung, not the organ, is under most of its lowest slice."""
    hu, lungs = chest()
    lesion = np.zeros(lungs.shape, bool)
    lesion[11:16, 12:30, 56:68] = True  # lateral, away from the dome; its lowest slice has lung below (slice 10)
    lesion &= lungs
    infection = lesion.copy()
    assert clean_infection(infection, hu, lungs, SPACING, RULES) == {}
    assert (infection == lesion).all()


def test_a_bright_tube_through_many_slices_is_removed_by_its_volume():
    """A vessel followed through 20 slices (40 mm) with a 2 x 2 mm cross-section: 160 mm^3, under the minimum."""
    hu, lungs = chest()
    tube = np.zeros(lungs.shape, bool)
    tube[15:35, 30:32, 60:62] = True
    hu[tube] = 20.0
    kept = np.zeros(lungs.shape, bool)
    kept[20:25, 20:30, 20:32] = True  # 5 x 10 x 12 voxels = 1,200 mm^3
    infection = tube | kept
    removed = clean_infection(infection, hu, lungs, SPACING, RULES)
    assert (infection == kept).all()
    assert removed == {"small": {"components": 1, "ml": 0.16}}


@pytest.mark.parametrize("settings", [PostProcessing(), PostProcessing(min_lesion_mm3=100.0),
                                      PostProcessing(remove_domes=True)])
def test_each_rule_runs_only_when_asked(settings):
    hu, lungs = chest()
    dome = ring_round_dome(lungs)
    speck = np.zeros(lungs.shape, bool)
    speck[30, 40, 40] = True  # 2 mm^3
    infection = dome | speck
    clean_infection(infection, hu, lungs, SPACING, settings)
    assert (infection & dome).any() != settings.remove_domes
    assert (infection & speck).any() != (settings.min_lesion_mm3 > 2)


def test_a_component_the_confirming_network_touches_is_kept_whole_and_one_it_misses_is_removed():
    """The confirming network's calls need only touch a component: the slices it missed stay (faint opacity
    continuing a lesion it sees); a component it does not touch anywhere goes, whatever its size."""
    hu, lungs = chest()
    lesion = np.zeros(lungs.shape, bool)
    lesion[20:30, 20:30, 20:30] = True  # 2,000 mm^3 over 10 slices
    unseen = np.zeros(lungs.shape, bool)
    unseen[20:30, 20:30, 50:60] = True  # the same size, apart from it
    confirmed = np.zeros(lungs.shape, bool)
    confirmed[28:30, 24:26, 24:26] = True  # the confirming network sees the lesion in two slices only
    infection = lesion | unseen
    settings = dataclasses.replace(RULES, confirm_with="miniseg-confirm")
    removed = clean_infection(infection, hu, lungs, SPACING, settings, confirmed)
    assert (infection == lesion).all()
    assert removed == {"unconfirmed": {"components": 1, "ml": 2.0}}
    with pytest.raises(ValueError, match="confirming network miniseg-confirm"):
        clean_infection(lesion.copy(), hu, lungs, SPACING, settings)  # the rule cannot run without its calls


def test_a_new_network_drops_the_confirming_network_and_a_site_version_keeps_it():
    from LightSegLib.postprocess import RECOMMENDED_POSTPROCESSING, settings_for_new_network

    confirmed = dataclasses.replace(RULES, confirm_with="miniseg-confirm").to_card()
    assert settings_for_new_network(confirmed) == RULES.to_card() == {"min_lesion_mm3": 500.0, "remove_domes": True}
    assert settings_for_new_network(None) == RECOMMENDED_POSTPROCESSING.to_card()
    assert PostProcessing.from_card(confirmed).confirm_with == "miniseg-confirm"


def test_card_settings_are_checked_when_the_card_loads(tmp_path, untrained_card):
    assert PostProcessing.from_card({}) == PostProcessing()
    assert PostProcessing.from_card(RULES.to_card()) == RULES
    card = untrained_card.to_json() | {"postprocessing": {"remove_vessels": True}}
    path = tmp_path / "bad.json"
    path.write_text(__import__("json").dumps(card))
    with pytest.raises(LightSegError, match="unknown postprocessing settings"):
        ModelCard.load(path)


def test_the_engine_applies_the_cards_rules_and_reports_them(sample):
    """The shipped default's rules on the bundled sample: every voxel they drop goes from infection to lung, nothing
    else changes, and the report says what was removed. The probability map is the network's, before the rules."""
    from LightSegLib import registry

    card = registry.resolve("miniseg-covid")
    assert card.postprocessing_settings() == RULES
    shape = sitk.GetArrayViewFromImage(sample).shape
    probability_raw, probability_cleaned = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    raw = Segmenter(card, "cpu", postprocessing=PostProcessing()).segment_volume(sample, probabilities=probability_raw)
    cleaned_segmenter = Segmenter(card, "cpu")
    cleaned = cleaned_segmenter.segment_volume(sample, probabilities=probability_cleaned)
    before = sitk.GetArrayViewFromImage(raw.labels)
    after = sitk.GetArrayViewFromImage(cleaned.labels)
    dropped = before != after
    assert dropped.any()
    assert (before[dropped] == INFECTION).all() and (after[dropped] == LUNG).all()
    assert (probability_raw == probability_cleaned).all()
    removed = cleaned.postprocessing["removed"]
    voxel_ml = np.prod(sample.GetSpacing()) / 1000
    assert sum(r["ml"] for r in removed.values()) == pytest.approx(dropped.sum() * voxel_ml, abs=0.01 * len(removed))
    report = build_report(cleaned, card, "cpu", "sample")
    assert report["postprocessing"] == {"settings": RULES.to_card(), "removed": removed}
    assert raw.postprocessing == {"settings": PostProcessing().to_card(), "removed": {}}


def test_a_callers_settings_replace_the_cards(untrained_card):
    with_rules = dataclasses.replace(untrained_card, postprocessing=RULES.to_card())
    assert Segmenter(with_rules, "cpu").postprocessing == RULES
    assert Segmenter(with_rules, "cpu", postprocessing=PostProcessing()).postprocessing == PostProcessing()
