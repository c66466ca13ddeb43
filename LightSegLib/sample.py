"""The bundled sample CT (a derived copy of COVID-CT-MD case P001; see Resources/SampleData/README.md)."""

from __future__ import annotations

from pathlib import Path

from .errors import LightSegError
from .registry import PACKAGE_ROOT

SAMPLE_NAME = "P001-chest.nrrd"


def sample_path() -> Path:
    path = PACKAGE_ROOT / "Resources" / "SampleData" / SAMPLE_NAME
    if not path.is_file():
        raise LightSegError("the bundled sample CT is missing from this installation", path)
    return path
