"""Shared fixtures: the real data beside the checkout, temporary model stores, the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Qt tests render without a display

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSEG_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"
P001_DICOM = DATA / "covid-ct-md" / "P001"
P001_LABELS = DATA / "covid-ct-md" / "P001_slice_labels.csv"
SEMISEG = DATA / "covid-semiseg" / "train"
SAMPLE = REPO / "Resources" / "SampleData" / "P001-chest.nrrd"


def pytest_configure(config: pytest.Config) -> None:
    if not DATA.is_dir():
        raise pytest.UsageError(f"the shared data folder is missing: {DATA} (set LIGHTSEG_SHARED)")


@pytest.fixture(autouse=True)
def user_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty user model store, so nothing touches ~/.lightseg."""
    home = tmp_path_factory.mktemp("lightseg-home")
    monkeypatch.setenv("LIGHTSEG_HOME", str(home))
    return home / "models"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m LightSegLib ARGS`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "LightSegLib", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=900)


def models_table_rows() -> dict[str, str]:
    """The rows of ``lightseg models`` (header dropped), keyed by model id."""
    return {line.split()[0]: line for line in run_cli("models").stdout.splitlines()[1:]}


@pytest.fixture(scope="session")
def p001() -> sitk.Image:
    from LightSegLib.io import read_image

    return read_image(P001_DICOM).image


@pytest.fixture(scope="session")
def sample() -> sitk.Image:
    from LightSegLib.io import read_image

    return read_image(SAMPLE).image


@pytest.fixture(scope="session")
def untrained_card(tmp_path_factory: pytest.TempPathFactory):
    """A MiniSeg with random weights and the calibrated HU window, for tests of plumbing (not of accuracy)."""
    import json

    import torch

    from LightSegLib.cards import HUWindow, ModelCard, save_model
    from LightSegLib.models import MiniSeg, count_parameters

    torch.manual_seed(0)
    model = MiniSeg(3, 2, aux=False)
    window = json.loads((REPO / "Resources" / "Calibration" / "hu-window-P001.json").read_text())
    card = ModelCard(id="untrained-test", version="0", architecture="miniseg",
                     arch_config={"in_channels": 3, "num_classes": 2, "aux": False}, input_size=[96, 96],
                     normalisation={"mean": [0.5] * 3, "std": [0.3] * 3},
                     hu_window=HUWindow(window["level"], window["width"], "test"), weights_file="untrained-test.pt",
                     weights_sha256="", parameters=count_parameters(model), licence="test only")
    path = save_model(card, model.state_dict(), tmp_path_factory.mktemp("models"))
    return ModelCard.load(path)
