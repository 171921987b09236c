"""Every configs/task/*.yaml is an operator-only fragment that jsonargparse can instantiate."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

ArgumentParser = pytest.importorskip("jsonargparse").ArgumentParser  # a project dependency

from lightning_redd.operators.base import ForwardOperator

TASKS = sorted((Path(__file__).resolve().parents[2] / "configs" / "task").glob("*.yaml"))


def test_there_are_task_configs():
    assert len(TASKS) >= 10


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_task_config_instantiates(path):
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= {"model", "data"} and list(raw["model"]) in (["operator"], ["operator", "solver"])
    assert set(raw.get("data", {})) <= {"param_folders"}, "a task fragment's data part only names its parameter files"
    if "solver" in raw["model"]:  # a 64 px preset: the solver's knobs only, never its class (tests/test_configs.py)
        assert list(raw["model"]["solver"]) == ["init_args"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model.operator", type=ForwardOperator)
    cfg = parser.parse_object({"model": {"operator": raw["model"]["operator"]}})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    op = instantiate(cfg).model.operator
    assert isinstance(op, ForwardOperator)
    assert type(op).__name__ == raw["model"]["operator"]["class_path"].rsplit(".", 1)[1]
    for key, value in raw["model"]["operator"]["init_args"].items():
        if key in ("sigma_y", "channels"):
            assert getattr(op, key) == value
    if raw["model"]["operator"]["init_args"].get("mask") == "file":
        return  # its masks come with the data (data.param_folders.mask)
    if path.stem == "deblur_anisotropic":
        assert op.sigma == tuple(raw["model"]["operator"]["init_args"]["sigma"]) and op.angle == 30.0
    size = 128
    bound = op.bind([0], (op.channels, size, size))
    y = bound(torch.zeros(1, op.channels, size, size))
    assert tuple(y.shape[1:]) == bound.output_shape((op.channels, size, size))
