"""The spec grammar of compare (--solver, --solvers, --set, --grid): rows, labels and the
message of every mistake, which names what was wrong and the form to use."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from lightning_redd.experiments import spec

ROOT = Path(__file__).resolve().parents[2]
FRAG = str(ROOT / "configs/solver/red_diff.yaml")


def ns(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"solver": [], "solvers": [], "set": [], "grid": [], **kw})


@pytest.mark.parametrize("kw, message", [
    ({}, "give at least one --solver LABEL=FRAGMENT.yaml"),
    ({"solver": ["red_diff"]}, r"--solver 'red_diff' needs the form KEY=VALUE"),
    ({"solver": [f"={FRAG}"]}, "needs the form KEY=VALUE"),
    ({"solver": [f"a={FRAG}", f"a={FRAG}"]}, r"labels must be unique.*give \['a'\] distinct labels"),
    ({"solver": ["a=nowhere.yaml"]}, r"fragment nowhere.yaml \(of 'a'\) does not exist"),
    ({"solver": [f"a={FRAG}"], "set": ["c:x=1"]}, r"--set 'c:x=1' names solver 'c'; known: \['a'\].*leave out 'c:'"),
    ({"solver": [f"a={FRAG}"], "grid": ["b:x=1,2"]}, r"--grid 'b:x=1,2' names solver 'b'"),
    ({"solver": [f"a={FRAG}"], "set": ["a:lr"]}, r"--set 'lr' needs the form KEY=VALUE"),
    ({"solver": [f"a={FRAG}"], "grid": ["a:x.lam=0.1,"]}, r"empty value; give KEY=V1,V2,... \(e.g. x.lam=0.1,0.2\)"),
    ({"solvers": ["nowhere/weighting_*.yaml"]}, r"--solvers 'nowhere/weighting_\*.yaml' matches no file.*quote it"),
])
def test_every_mistake_names_the_fix(kw, message):
    with pytest.raises(SystemExit, match=message):
        spec.build_specs(ns(**kw))


def test_values_with_colons_and_dashes_are_not_labels():
    specs = spec.build_specs(ns(solver=[f"a={FRAG}"], set=["data.root=/x:y", "--data.limit=2"]))
    assert specs[0].sets == (("data.root", "/x:y"), ("data.limit", "2"))


def test_folder_and_base_of_a_label():
    s = spec.Spec("red diff[lr=0.5,lam=1/2]@100", FRAG)
    assert s.folder == "red_diff_lr=0.5_lam=1_2_100" and s.base == "red diff"


def test_the_clock_callback_path_names_the_callback():
    module, name = spec.CLOCK_CALLBACK.rsplit(".", 1)
    from lightning_redd.experiments.clock import SolveClock

    assert getattr(importlib.import_module(module), name) is SolveClock
    args = spec.cli_args(spec.Spec("a", FRAG), [], Path("/o/a"))
    assert args[-1] == f"--trainer.callbacks+={spec.CLOCK_CALLBACK}"
