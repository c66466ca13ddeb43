"""HU window calibration recovers a known window from real CT values."""

import numpy as np

from LightSegLib.calibration import QUANTILES, crop_hu_values, fit_window


def test_recovers_a_known_window_from_the_real_ct(sample):
    values, slices = crop_hu_values(sample)
    assert slices > 50 and values.size > 100_000
    level, width = -520.0, 1260.0
    # training slices made from this CT with a known window: their intensity quantiles
    training = np.quantile(np.clip((values - (level - width / 2)) / width, 0, 1), QUANTILES)
    fit = fit_window(training, values)
    assert abs(fit.level - level) <= 10 and abs(fit.width - width) <= 20
    assert fit.distance < 0.005
    assert all(d > fit.distance for d in fit.reference_distances.values())


def test_shipped_calibration_is_what_the_command_measures(tmp_path):
    import json

    from conftest import P001_DICOM, REPO, SEMISEG, run_cli

    out = tmp_path / "w.json"
    result = run_cli("calibrate-window", "--images", SEMISEG / "images", "--volume", P001_DICOM, "-o", out)
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    shipped = json.loads((REPO / "Resources" / "Calibration" / "hu-window-P001.json").read_text())
    assert (measured["level"], measured["width"]) == (shipped["level"], shipped["width"])
