"""The package list in ``pyproject.toml`` names every LightSegLib package, so an install that is not editable (a
wheel) carries all of them."""

import tomllib

from conftest import REPO


def test_every_lightseglib_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "LightSegLib").rglob("__init__.py")}
    assert found == listed
