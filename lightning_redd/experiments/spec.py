"""What to run: the rows of a comparison, from ``--solver``, ``--solvers``, ``--set`` and ``--grid``.

Grammar (every value is a string handed to ``lightning-redd predict`` as ``--KEY=VALUE``):

* ``--solver LABEL=FRAGMENT.yaml``: one solver, labelled ``LABEL``.
* ``--solvers GLOB``: every matching fragment, labelled by its stem less the pattern's literal
  prefix before ``*`` (``solver/weighting_*.yaml`` -> ``linear``, ``sqrt``, ...).
* ``--set [LABEL:]KEY=VALUE``: an override of solver ``LABEL``, or of every solver without it.
* ``--grid [LABEL:]KEY=V1,V2,...``: one row per value (the product over several grids),
  labelled ``LABEL[key=V1,...]`` with the last part of each key.

Errors are :class:`SystemExit` with a message naming what was wrong and the allowed form.
"""
from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

#: the Lightning callback every run gets (class path for ``--trainer.callbacks+=``)
CLOCK_CALLBACK = "lightning_redd.experiments.clock.SolveClock"


@dataclass(frozen=True)
class Spec:
    """One row of the table: a label, a solver fragment and ``key=value`` overrides."""

    label: str
    fragment: str
    sets: tuple[tuple[str, str], ...] = ()
    grid_keys: tuple[str, ...] = ()  # keys of sets that came from --grid

    @property
    def folder(self) -> str:
        """The run's folder name under ``--out``: the label with unsafe characters as ``_``."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label).strip("_")

    @property
    def base(self) -> str:
        """The solver's label without its grid values (``[...]``) or step count (``@N``)."""
        return self.label.split("[")[0].split("@")[0]


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"compare: {what} {text!r} needs the form KEY=VALUE (e.g. model.solver.init_args.lr=0.5)")
    return key.lstrip("-"), value


def _scoped(text: str, labels: list[str], what: str) -> tuple[str | None, str]:
    """``LABEL:rest`` -> (LABEL, rest) when LABEL names a solver, else (None, text) (all solvers)."""
    head, sep, rest = text.partition(":")
    if sep and head in labels:
        return head, rest
    if sep and "=" not in head:
        raise SystemExit(f"compare: {what} {text!r} names solver {head!r}; known: {labels} "
                         f"(use one of them, or leave out '{head}:' to apply it to every solver)")
    return None, text


def _globbed(pattern: str) -> list[tuple[str, str]]:
    """``(label, path)`` of every file matching ``pattern``; the label is the file's stem less
    the pattern's literal prefix (``solver/weighting_*.yaml`` -> ``linear``, ``sqrt``, ...)."""
    path = Path(pattern)
    paths = sorted(Path("/").glob(pattern.lstrip("/"))) if path.is_absolute() else sorted(Path().glob(pattern))
    if not paths:
        raise SystemExit(f"compare: --solvers {pattern!r} matches no file (a relative pattern is taken from "
                         f"{Path.cwd()}; quote it so the shell does not expand it)")
    prefix = path.name.split("*")[0] if "*" in path.name else ""
    return [(p.stem[len(prefix):] if p.stem.startswith(prefix) and p.stem != prefix else p.stem, str(p)) for p in paths]


def _solvers(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(label, fragment)`` of every ``--solver`` and ``--solvers`` entry, checked."""
    pairs = [_key_value(s, "--solver") for s in args.solver]
    for pattern in args.solvers:
        pairs += _globbed(pattern)
    if not pairs:
        raise SystemExit("compare: give at least one --solver LABEL=FRAGMENT.yaml (or --solvers 'GLOB')")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise SystemExit(f"compare: solver labels must be unique, got {labels}; give {twice} distinct labels "
                         "(--solver LABEL=FRAGMENT.yaml)")
    for label, path in pairs:
        if not Path(path).is_file():
            raise SystemExit(f"compare: solver fragment {path} (of {label!r}) does not exist; give a YAML file "
                             "(a relative path is taken from the current folder)")
    return pairs


def _grids(args: argparse.Namespace, labels: list[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """``{label: [(key, values), ...]}`` of the ``--grid`` entries (unscoped: every label)."""
    grids: dict[str, list[tuple[str, list[str]]]] = {}
    for text in args.grid:
        label, rest = _scoped(text, labels, "--grid")
        key, values = _key_value(rest, "--grid")
        if not all(values.split(",")):
            raise SystemExit(f"compare: --grid {text!r} has an empty value; give KEY=V1,V2,... (e.g. {key}=0.1,0.2)")
        for target in [label] if label else labels:
            grids.setdefault(target, []).append((key, values.split(",")))
    return grids


def build_specs(args: argparse.Namespace) -> list[Spec]:
    """The rows: every ``--solver`` / ``--solvers`` entry with its ``--set`` values, expanded
    over its ``--grid`` values (one row per combination). ``args`` holds the lists
    ``solver``, ``solvers``, ``set`` and ``grid``."""
    pairs = _solvers(args)
    labels = [label for label, _ in pairs]
    sets: dict[str | None, list[tuple[str, str]]] = {}
    for text in args.set:
        label, rest = _scoped(text, labels, "--set")
        sets.setdefault(label, []).append(_key_value(rest, "--set"))
    grids = _grids(args, labels)
    specs = []
    for label, path in pairs:
        own = tuple(sets.get(None, []) + sets.get(label, []))
        axes = grids.get(label, [])
        for combo in itertools.product(*[values for _, values in axes]):
            chosen = tuple((key, v) for (key, _), v in zip(axes, combo))
            name = label + ("[" + ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in chosen) + "]" if chosen else "")
            specs.append(Spec(name, path, own + chosen, tuple(k for k, _ in chosen)))
    return specs


def cli_args(spec: Spec, configs: list[str], root: Path) -> list[str]:
    """The ``lightning-redd predict`` arguments of one run: the base ``configs``, the solver
    fragment, the overrides, the run folder ``root`` and the :data:`CLOCK_CALLBACK`."""
    out = ["predict"]
    for c in [*configs, spec.fragment]:
        out += ["--config", c]
    out += [f"--{k}={v}" for k, v in spec.sets]
    return out + ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", "--overwrite", "true",
                  f"--trainer.callbacks+={CLOCK_CALLBACK}"]
