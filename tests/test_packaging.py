"""The wheel holds every subpackage: setuptools installs only the packages pyproject.toml lists, and an editable
install hides a missing one (edgec.parity once went missing from the list while every test passed)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgec").rglob("__init__.py")}
    assert found - listed == set(), (
        f"subpackages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    )
