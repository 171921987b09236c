"""The wheel ships every subpackage and the bundled configs and demo data."""
from __future__ import annotations

import tomllib
from pathlib import Path

from lightning_redd import resources

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lightning_redd").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_bundled_configs_and_data_are_the_repository_folders():
    assert resources.bundled_dir("configs").resolve() == (ROOT / "configs").resolve()
    assert sorted(p.name for p in (resources.bundled_dir("data") / "demo").glob("*.png")) == sorted(
        p.name for p in (ROOT / "data" / "demo").glob("*.png"))
    assert "demo" in resources.config_names() and "task/sr_block" in resources.config_names()
    assert resources.resolve_config("demo") == str(ROOT / "configs" / "demo.yaml")
    assert resources.resolve_data("package:demo").resolve() == (ROOT / "data" / "demo").resolve()
