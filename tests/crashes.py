"""Crashes injected at a run's writes (a test helper): what a kill leaves on disk, in process."""
from __future__ import annotations

import json
from pathlib import Path

from lightning_redd.runs import fsio
from lightning_redd.runs.layout import MANIFEST_DIR, OWN_DIRS, OWN_FILES


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in a run catches it, so the disk is left as a kill leaves it."""


def crash_at(monkeypatch, k: int, phase: str) -> list[str]:
    """Crash at the ``k``-th write of a run (``k`` from 1; 0: never), counting file writes
    (:func:`fsio.atomic_write`) and manifest appends (:func:`fsio.append_durably`): ``during``
    it (a partial temporary file or a partial manifest line stays behind, the destination is
    untouched) or right ``after`` it. Returns the log of the writes so far, in order: a file's
    path relative to its run folder, or ``+`` and the paths a manifest append listed (sorted),
    e.g. ``"+records/a.json restored/a.png"``."""
    original_write, original_append = fsio.atomic_write, fsio.append_durably
    log: list[str] = []

    def write(path, write, **kwargs):
        path = Path(path)
        log.append(path.relative_to(_run_root(path)).as_posix())
        if len(log) == k and phase == "during":
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f".{path.name}.killed{k}{fsio.TMP_SUFFIX}").write_bytes(b"partial")
            raise Crash(f"write {k} ({path.name})")
        out = original_write(path, write, **kwargs)
        if len(log) == k:
            raise Crash(f"after write {k} ({path.name})")
        return out

    def append(path, text):
        log.append("+" + " ".join(sorted(json.loads(line) for line in text.split("\n") if line.strip())))
        if len(log) == k and phase == "during":
            original_append(path, text[: max(1, len(text) // 2)].rstrip("\n"))
            raise Crash(f"append {k} ({Path(path).name})")
        out = original_append(path, text)
        if len(log) == k:
            raise Crash(f"after append {k} ({Path(path).name})")
        return out

    monkeypatch.setattr(fsio, "atomic_write", write)
    monkeypatch.setattr(fsio, "append_durably", append)
    return log


def _run_root(path):
    """The run folder a written file belongs to: the parent of its top-level place."""
    for parent in path.parents:
        if path.relative_to(parent).parts[0] in (*OWN_DIRS, *OWN_FILES, MANIFEST_DIR):
            return parent
    raise AssertionError(f"{path} is in no run folder's places")
