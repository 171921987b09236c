"""The manifest of a run: every file it wrote in its output folder, so it owns exactly those.

``--overwrite`` deletes only what the manifest lists, and a folder whose run's places
(:data:`~lightning_redd.runs.layout.OWN_DIRS`, :data:`~lightning_redd.runs.layout.OWN_FILES`)
hold an unlisted file is refused before any compute. The manifest could not be derived from the
records: a run killed between an image's PNG and its record leaves a PNG no record names, and
a file the user put in ``restored/`` looks the same. So it is kept explicitly, as a journal:

* ``manifest/rank<R>.txt``, one per process rank, appended only by that rank (no two processes
  append to one file, which network file systems do not make atomic); the manifest is the union;
* one JSON string a line, a path relative to the output folder (any file name round-trips);
* write-ahead: a path is appended and fsynced BEFORE its file is created (a batch's paths in one
  append), so at every point of a kill each file of the run is listed; at worst a listed path
  was never written, which is harmless and dropped at the next start (:meth:`Manifest.compact`);
* a line counts once it parses: a kill in the middle of an append leaves an unparsable tail,
  which is ignored and closed by a newline before the next append.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from lightning_redd.runs import fsio
from lightning_redd.runs.layout import MANIFEST_DIR, is_run_path

RANK_FILE = re.compile(r"rank\d+\.txt")


def _paths(data: bytes) -> list[str]:
    """The valid paths of a journal's bytes (partial or foreign lines are skipped)."""
    out = []
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        try:
            path = json.loads(line)
        except ValueError:
            continue
        if is_run_path(path):
            out.append(path)
    return out


def _line(relative: str) -> str:
    return json.dumps(relative, ensure_ascii=False) + "\n"


class Manifest:
    """The manifest of the run in ``root``, as written by process rank ``rank``."""

    def __init__(self, root: str | Path, rank: int = 0) -> None:
        self.root, self.rank = Path(root), int(rank)
        self._mine: set[str] | None = None  # this rank's journal, read at the first claim
        self._open_tail = False  # the journal ends in an unterminated line

    @property
    def folder(self) -> Path:
        return self.root / MANIFEST_DIR

    @property
    def path(self) -> Path:
        return self.folder / f"rank{self.rank}.txt"

    def journals(self) -> list[Path]:
        """Every rank's journal."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if RANK_FILE.fullmatch(p.name) and p.is_file())

    def listed(self) -> set[str]:
        """Every path any rank listed."""
        return {p for j in self.journals() for p in _paths(j.read_bytes())}

    def claim(self, relatives: Iterable[str]) -> None:
        """List ``relatives`` (paths the run is about to write) durably, before they exist."""
        if self._mine is None:
            data = self.path.read_bytes() if self.path.is_file() else b""
            self._mine, self._open_tail = set(_paths(data)), bool(data) and not data.endswith(b"\n")
        new = [r for r in dict.fromkeys(relatives) if r not in self._mine]
        if not new:
            return
        wrong = [r for r in new if not is_run_path(r)]
        if wrong:
            raise ValueError(f"{wrong[0]!r} is not a path of the run folder's layout (see lightning_redd.runs.layout)")
        fsio.append_durably(self.path, ("\n" if self._open_tail else "") + "".join(map(_line, new)))
        self._open_tail = False
        self._mine.update(new)

    def compact(self) -> None:
        """At the start of a run (under the lock): one journal, of the listed paths that exist.
        Nothing is rewritten when the journals are already exactly that."""
        fsio.remove_stale_temporaries([self.folder], lambda dest: bool(RANK_FILE.fullmatch(dest.name)))
        journals = self.journals()
        if not journals:
            return
        listed = self.listed()
        kept = sorted(p for p in listed if (self.root / p).exists() or (self.root / p).is_symlink())
        data = journals[0].read_bytes()
        tidy = data == "".join(map(_line, _paths(data))).encode("utf-8", "surrogateescape")
        if journals == [self.path] and tidy and len(kept) == len(listed):
            return
        self._replace(kept)

    def clear(self) -> None:
        """After the files it lists were deleted (``--overwrite``): an empty manifest."""
        if self.journals():
            self._replace([])

    def _replace(self, paths: list[str]) -> None:
        """This rank's journal becomes ``paths`` (atomically); the other journals go."""
        fsio.atomic_write_text(self.path, "".join(map(_line, paths)))
        for journal in self.journals():
            if journal != self.path:
                journal.unlink(missing_ok=True)
        self._mine, self._open_tail = set(paths), False
