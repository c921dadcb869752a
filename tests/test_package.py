"""The release's version has one source, ``channels_neffos.__version__``.

pyproject.toml reads it (``[tool.setuptools.dynamic]``); the installed distribution's metadata
must say the same, or the install is stale (reinstall: ``scripts/test`` does). The built
artifacts themselves are checked by ``scripts/check-package``.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import channels_neffos

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli comes with build (the test extra) on 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_version_is_the_installed_distributions() -> None:
    assert channels_neffos.__version__ == importlib.metadata.version("channels-neffos")


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "channels_neffos.__version__"}
