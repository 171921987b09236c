"""The solver registry fills itself, and the property suite follows it.

A :class:`~lightning_redd.solvers.base.Solver` subclass with a ``name`` is in ``SOLVERS`` once its
module is imported; classes without one (abstract intermediates) are not. The last test proves
the suite needs no edit for a new solver: a module defining two toy solvers, collected before
test_solver_properties.py in one pytest run, gets their property tests; the well-behaved toy
passes them all, the toy that mixes batch mates fails batch independence.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import lightning_redd.solvers.all as all_solvers
from lightning_redd.solvers.base import SOLVERS, Solver, SolverState
from lightning_redd.solvers.ddim import DDIM

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry():
    """``SOLVERS``, restored after the test (classes defined in a test must not leak)."""
    saved = dict(SOLVERS)
    yield SOLVERS
    SOLVERS.clear()
    SOLVERS.update(saved)


@dataclass
class CopyState(SolverState):
    iterates: ClassVar[tuple[str, ...]] = ("x",)
    x: torch.Tensor = None  # type: ignore[assignment]


class Identity(Solver):
    """Returns ``pinv(y)``: the smallest complete solver (no name: not registered)."""

    state_type = CopyState
    num_iterates = 1  # type: ignore[assignment]

    def prepare(self, state, y, op, prior):
        state.x = state.x_init.clone()

    def iterate(self, state, y, op, prior):
        return {}

    def estimate(self, state):
        return state.x.clone()


def test_every_built_in_solver_is_registered_under_its_name():
    classes = {getattr(all_solvers, n) for n in all_solvers.__all__ if n != "SOLVERS"}
    assert set(SOLVERS.values()) >= classes and all_solvers.SOLVERS is SOLVERS
    assert {c.name for c in classes} == {"red_diff", "ddim", "dps", "pigdm", "ddrm", "classical"}
    assert all(SOLVERS[c.name] is c for c in classes) and Solver not in SOLVERS.values()


def test_a_named_subclass_registers_itself_an_unnamed_one_does_not(registry):
    before = dict(registry)

    class Walk(Identity):
        name = "test_walk"

    class Intermediate(DDIM):  # inherits DDIM's name, sets none of its own
        pass

    assert registry["test_walk"] is Walk and registry["ddim"] is DDIM and Intermediate not in registry.values()
    assert set(registry) - set(before) == {"test_walk"}


def test_bad_names_and_incomplete_classes_are_refused(registry):
    with pytest.raises(ValueError, match="'ddim' is taken by lightning_redd.solvers.ddim.DDIM; give .* another name"):
        type("Other", (Identity,), {"name": "ddim"})
    with pytest.raises(TypeError, match="must be an identifier"):
        type("Spaced", (Identity,), {"name": "two words"})
    with pytest.raises(TypeError, match=r"does not implement \['iterate'\]: implement them or drop its name"):
        type("Half", (Solver,), {"name": "half", "num_iterates": 1, "prepare": Identity.prepare, "estimate": Identity.estimate})
    with pytest.raises(TypeError, match="abstract"):
        Solver()


TOYS = '''
"""Toy solvers for the property suite (written by test_solver_registry.py)."""
from dataclasses import dataclass
from typing import ClassVar

import torch

from lightning_redd.solvers.base import Requirements, Solver, SolverState


@dataclass
class WalkState(SolverState):
    iterates: ClassVar[tuple[str, ...]] = ("x",)
    x: torch.Tensor = None


class ToyWalk(Solver):
    """x <- x - 0.1 eps_hat(x, t) + 0.01 z: one denoiser call per iterate, per-image noise."""

    name = "toy_walk"
    state_type = WalkState
    requirements = Requirements(settings={"steps": 3})

    def __init__(self, *, steps: int = 3, noise: str = "auto") -> None:
        super().__init__(noise=noise)
        self.steps = steps

    @property
    def num_iterates(self):
        return self.steps

    def prepare(self, state, y, op, prior):
        state.x = state.x_init.clone()

    def iterate(self, state, y, op, prior):
        t = torch.full((state.x.shape[0],), 500 - 100 * state.k, dtype=torch.long, device=state.x.device)
        with torch.no_grad():
            state.x = state.x - 0.1 * prior.eps(state.x, t) + 0.01 * state.noise.randn(state.x.shape[1:])
        return {"t": t}

    def estimate(self, state):
        return state.x.detach().clone()


class ToyMixer(ToyWalk):
    """Broken on purpose: each image moves towards the batch mean."""

    name = "toy_mixer"

    def iterate(self, state, y, op, prior):
        stats = super().iterate(state, y, op, prior)
        state.x = state.x + 0.1 * state.x.mean(dim=0, keepdim=True)
        return stats
'''


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_new_solver_gets_the_property_suite_through_the_registry_alone(tmp_path):
    (tmp_path / "test_toy_solvers.py").write_text(textwrap.dedent(TOYS))
    report = tmp_path / "report.xml"
    cmd = [sys.executable, "-m", "pytest", str(tmp_path / "test_toy_solvers.py"), "tests/solvers/test_solver_properties.py",
           "-k", "toy_walk or toy_mixer", "-p", "no:cacheprovider", "-o", "addopts=", "-q", f"--junitxml={report}"]
    # no conftest (its torchvision import), no third-party plugins and not the project's addopts
    # (`-n 2` needs pytest-xdist): the run is mostly torch's import
    cmd += ["--noconftest"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        results[case.get("name")] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    walk = {n: r for n, r in results.items() if "toy_walk" in n}
    mixer = {n: r for n, r in results.items() if "toy_mixer" in n}
    assert len(walk) >= 8 and set(walk.values()) == {"passed"}, (walk, done.stdout[-3000:])
    assert mixer["test_an_image_alone_equals_it_in_a_batch[toy_mixer-auto]"] == "failed", mixer
    assert mixer["test_two_shards_solved_apart_equal_the_whole_batch[toy_mixer-auto]"] == "failed", mixer
    assert done.returncode == 1  # the mixer's failures, nothing else
