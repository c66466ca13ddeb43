"""Where the infection lies (zones, anterior/posterior, peripheral/central) and how dense, on constructed lungs."""

import json

import numpy as np
import pytest

from conftest import SAMPLE, run_cli
from LightSegLib.io import INFECTION, LUNG
from LightSegLib.lungs import LEFT, RIGHT
from LightSegLib.regions import regional_measurements

SPACING = (2.0, 1.5, 1.5)  # canonical (S, P, L), mm


@pytest.fixture
def chest():
    """Two box-shaped lungs, 30 slices high, 100 x 70 voxels in-plane, all lung and no infection, at -800 HU."""
    sides = np.zeros((30, 120, 160), np.uint8)
    sides[:, 10:110, 5:75] = RIGHT
    sides[:, 10:110, 85:155] = LEFT
    labels = np.where(sides > 0, LUNG, 0).astype(np.uint8)
    hu = np.full(sides.shape, -800, np.int16)
    return sides, labels, hu


def measure(chest):
    sides, labels, hu = chest
    return regional_measurements(labels, sides, hu, INFECTION, SPACING)


def test_infection_in_the_upper_third_of_one_lung_is_the_upper_zone(chest):
    sides, labels, _ = chest
    labels[20:, :, :][sides[20:] == RIGHT] = INFECTION
    right, left = measure(chest)["right"], measure(chest)["left"]
    assert right["zones_percent"] == {"upper": 100.0, "middle": 0.0, "lower": 0.0}
    assert left["zones_percent"] == {"upper": 0.0, "middle": 0.0, "lower": 0.0}
    assert right["anterior_percent"] == right["posterior_percent"] == pytest.approx(100 / 3, abs=0.01)


def test_infection_in_the_front_half_is_anterior(chest):
    sides, labels, _ = chest
    labels[:, :60][sides[:, :60] == LEFT] = INFECTION  # rows 10-59 of 10-109: the anterior half
    left = measure(chest)["left"]
    assert left["anterior_percent"] == 100.0 and left["posterior_percent"] == 0.0


def test_a_rim_is_peripheral_and_a_core_is_central(chest):
    sides, labels, _ = chest
    labels[:, 10:110, 5:10] = INFECTION  # the right lung's outer 7.5 mm
    labels[:, 55:65, 135:140] = INFECTION  # the left lung's core: 45 mm and more from its surface
    regions = measure(chest)
    assert regions["right"]["peripheral_percent"] > 0 and regions["right"]["central_percent"] == 0.0
    assert regions["left"]["peripheral_percent"] == 0.0 and regions["left"]["central_percent"] > 0


def test_high_opacity_counts_infection_denser_than_minus_200_hu(chest):
    sides, labels, hu = chest
    labels[:10][sides[:10] == RIGHT] = INFECTION  # a third of the right lung infected ...
    hu[:5][sides[:5] == RIGHT] = -100  # ... half of it dense (consolidation-like)
    hu[10:15][sides[10:15] == RIGHT] = 0  # dense but not infected: not counted
    regions = measure(chest)
    assert regions["right"]["high_opacity_percent"] == pytest.approx(100 / 6, abs=0.01)
    assert regions["left"]["high_opacity_percent"] == 0.0


def test_segment_reports_the_regions_in_json_and_on_the_terminal(tmp_path):
    result = run_cli("segment", SAMPLE, "-o", tmp_path / "labels.nrrd", "--report", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    for side in ("right", "left"):
        regions = report["regions"][side]
        assert set(regions["zones_percent"]) == {"upper", "middle", "lower"}
        assert 0 <= regions["high_opacity_percent"] <= report["lungs"][side]["percent_involved"] + 0.5
    assert "definitions" in report["regions"] and "right lung by region: upper" in result.stdout
