"""Running one row of a comparison through the real ``lightning-redd predict``, or reusing it.

Each row runs in its own folder ``OUT/<spec.folder>/`` (the usual run layout: ``restored/``,
``measured/``, ``init/``, ``records/``), by default in a fresh subprocess
(``python -m lightning_redd.experiments child ...``) so that its peak memory is the solver's own.
A finished run leaves ``compare_run.json`` (its arguments, the contents of its config files, its
clock and wall time); with ``resume`` a folder whose file matches the row's arguments and config
contents (less the keys the arguments set) and holds a record for every image solved is reused.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lightning_redd.experiments.clock import CLOCK_FILE, images_run
from lightning_redd.experiments.spec import Spec, cli_args

MODULE = "lightning_redd.experiments"  # python -m MODULE child ... (not __name__: "__main__" under -m)
RUN_FILE = "compare_run.json"
CHILD_LOG = "compare_child.log"
ISOLATIONS = ("process", "none")


def _pruned(contents: dict | None, spec: Spec) -> dict | None:
    """Config contents less the keys the run's arguments override (those cannot change it)."""
    if contents is None:
        return None
    keys = {k for k, _ in spec.sets} | {"trainer.default_root_dir", "trainer.enable_progress_bar"}
    out = json.loads(json.dumps(contents))
    for doc in out.values():
        for key in keys:
            *parents, last = key.split(".")
            node = doc
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    return out


def _reusable(spec: Spec, root: Path, args: list[str], contents: dict) -> dict | None:
    """The saved run of ``root`` when it matches ``args`` and ``contents`` and holds every record."""
    from lightning_redd.runs.folder import RunFolder

    saved = root / RUN_FILE
    if not saved.is_file():
        return None
    done = json.loads(saved.read_text())
    if done.get("args") != args or _pruned(done.get("contents"), spec) != _pruned(contents, spec):
        return None
    records = RunFolder(root).records()
    if len(records) < images_run(done["clock"]):
        print(f"compare: {spec.label}: {root} holds {len(records)} of {images_run(done['clock'])} records; "
              "running it again", file=sys.stderr)
        return None
    print(f"compare: {spec.label}: reusing {root}", file=sys.stderr)
    return {**done, "spec": spec, "root": root, "records": records}


def _launch(spec: Spec, args: list[str], root: Path, isolate: str, threads: int | None) -> None:
    """One ``lightning-redd predict`` with ``args``: in a child process or in this one."""
    if isolate == "process":
        cmd = [sys.executable, "-m", MODULE, "child"] + (["--threads", str(threads)] if threads else []) + ["--", *args]
        with open(root / CHILD_LOG, "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = (root / CHILD_LOG).read_text()[-3000:]
            raise RuntimeError(f"compare: {spec.label} failed (exit {rc}); end of {root / CHILD_LOG}:\n{tail}")
        return
    if isolate != "none":
        raise ValueError(f"compare: unknown isolate {isolate!r}; allowed: {ISOLATIONS}")
    from lightning_redd.lit.cli import cli

    if threads:
        import torch

        torch.set_num_threads(threads)
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when both sys.argv[1:] and args are given
    try:
        cli(args)
    finally:
        sys.argv = argv


def run_spec(spec: Spec, configs: list[str], out: Path, *, isolate: str, threads: int | None, resume: bool) -> dict:
    """Run one row in ``out/<spec.folder>`` (``isolate``: ``process`` or ``none``; ``threads``:
    torch threads of the run), or reuse it with ``resume`` when its arguments and the contents
    of its config files, less the keys the arguments override, are unchanged; returns
    ``{"spec", "root", "args", "clock", "wall", "isolate", "records"}``."""
    from lightning_redd.runs.folder import RunFolder

    root = out / spec.folder
    args = cli_args(spec, configs, root)
    contents = json.loads(json.dumps({c: yaml.safe_load(Path(c).read_text()) for c in [*configs, spec.fragment]}))
    reused = _reusable(spec, root, args, contents) if resume else None
    if reused is not None:
        return reused
    (root / RUN_FILE).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / CLOCK_FILE).unlink(missing_ok=True)
    print(f"compare: {spec.label}: lightning-redd {shlex.join(args)}", file=sys.stderr)
    started = time.perf_counter()
    _launch(spec, args, root, isolate, threads)
    wall = time.perf_counter() - started
    if not (root / CLOCK_FILE).is_file():
        raise RuntimeError(f"compare: {spec.label}: the run ended without {root / CLOCK_FILE} (did predict run?)")
    clock = json.loads((root / CLOCK_FILE).read_text())
    records = RunFolder(root).records()
    if len(records) < images_run(clock):
        raise RuntimeError(f"compare: {spec.label}: {images_run(clock)} images solved but {len(records)} records "
                           f"written under {root / 'records'}; not saved as finished")
    saved = {"args": args, "contents": contents, "clock": clock, "wall": wall, "isolate": isolate}
    (root / RUN_FILE).write_text(json.dumps(saved, indent=1) + "\n")
    return {**saved, "spec": spec, "root": root, "records": records}


def child_main(argv: list[str]) -> int:
    """``python -m lightning_redd.experiments child [--threads N] -- PREDICT-ARGS...``: one run."""
    p = argparse.ArgumentParser(prog="compare child")
    p.add_argument("--threads", type=int)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from lightning_redd.lit.cli import cli

    cli(a.rest[1:] if a.rest[:1] == ["--"] else a.rest)
    return 0
