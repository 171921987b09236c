"""The output folder's checks before any compute; each returns problems, never changes a file.

* overlap: the folder and every subfolder the run writes into, symbolic links followed, must
  lie apart from every input folder; a subfolder that is a link to outside the folder is refused
  (the run would write wherever it points);
* writable: a real probe (create and delete a temporary) in the folder, or its nearest existing
  parent, and in every existing subfolder (a read-only ``logs/`` or ``restored/`` shows here);
* ownership: the run's places hold only files its manifest lists (:mod:`.manifest`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lightning_redd.runs import fsio
from lightning_redd.runs.errors import FolderProblem
from lightning_redd.runs.layout import MANIFEST_DIR, OWN_DIRS, OWN_FILES, RUN_CONFIG, SUBFOLDERS
from lightning_redd.runs.manifest import RANK_FILE, Manifest

PROBE_PREFIX = ".lightning_redd_probe."
#: foreign files named in a message (then a count of the rest)
SHOWN = 5


def inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def problems(root: Path, inputs: Iterable[Path] = ()) -> list[FolderProblem]:
    """Every problem of output folder ``root`` for a run reading ``inputs``; ``[]`` if none."""
    out = overlap_problems(root, inputs) + writable_problems(root)
    return [FolderProblem(p) for p in out + (ownership_problems(root) if not out else [])]


def _subfolders(root: Path) -> dict[str, Path]:
    """Each existing subfolder the run writes into, resolved (links followed)."""
    return {s: (root / s).resolve() for s in SUBFOLDERS if (root / s).exists()}


def overlap_problems(root: Path, inputs: Iterable[Path]) -> list[str]:
    real = root.expanduser().resolve()
    subs = _subfolders(root)
    out = [f"output subfolder {root / s} is a symbolic link to {target}, outside the output folder, so the run would "
           f"write its files there; replace the link by a real folder, or choose another trainer.default_root_dir"
           for s, target in subs.items() if not inside(target, real)]
    out += [f"output subfolder {root / s} is not a folder; move it away or choose another trainer.default_root_dir"
            for s, target in subs.items() if not target.is_dir()]
    for folder in inputs:
        folder = Path(folder).expanduser().resolve()
        clashes = [(n, d) for n, d in [("", real), *subs.items()] if inside(d, folder) or inside(folder, d)]
        if clashes:
            name, where = clashes[0]
            via = f" (its subfolder {name} is {where})" if name else ""
            out.append(f"output folder {root}{via} and input folder {folder} overlap (one lies inside the other), so "
                       "restored images could overwrite inputs; set trainer.default_root_dir to a folder outside the inputs")
    return out


def writable_problems(root: Path) -> list[str]:
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"output folder {root}: {existing} is not a folder; choose another trainer.default_root_dir"]
    folders = [existing] + [root / s for s in SUBFOLDERS if (root / s).is_dir() and not (root / s).is_symlink()]
    out = []
    for folder in folders:
        try:  # a real probe: permissions, ACLs, read-only mounts and immutable folders all show here
            fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, suffix=fsio.TMP_SUFFIX, dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            out.append(f"output folder {root} is not writable ({folder}: {err.strerror}); choose a writable "
                       "trainer.default_root_dir or fix its permissions")
    return out


def present(root: Path) -> list[str]:
    """Relative paths of everything in the run's places (files, links, other non-folders)."""
    out = [name for name in OWN_FILES if (root / name).exists() or (root / name).is_symlink()]
    for sub in OWN_DIRS:
        if not (root / sub).is_dir():
            continue
        for folder, dirs, files in os.walk(root / sub):
            rel = Path(folder).relative_to(root).as_posix()
            out += [f"{rel}/{n}" for n in files] + [f"{rel}/{d}" for d in dirs if (Path(folder) / d).is_symlink()]
    if (root / MANIFEST_DIR).is_dir():
        out += [f"{MANIFEST_DIR}/{p.name}" for p in (root / MANIFEST_DIR).iterdir() if not _journal(p)]
    return out


def _journal(path: Path) -> bool:
    """A manifest journal, or the temporary of one being rewritten."""
    return bool(RANK_FILE.fullmatch(path.name)) or (fsio.is_temporary(path) and bool(RANK_FILE.fullmatch(fsio.destination(path).name)))


def foreign_files(root: Path) -> list[str]:
    """Files in the run's places that its manifest does not list (the manifest is read after
    the listing, so a file a running run creates meanwhile is listed by then: write-ahead)."""
    found = present(root)
    listed = Manifest(root).listed()

    def ours(rel: str) -> bool:
        name = Path(rel).name
        if rel in listed or name.startswith(PROBE_PREFIX):
            return True
        return fsio.is_temporary(Path(rel)) and fsio.destination(Path(rel)).as_posix() in listed

    return sorted(r for r in found if not ours(r))


def ownership_problems(root: Path) -> list[str]:
    foreign = foreign_files(root)
    if not foreign:
        return []
    shown = ", ".join(foreign[:SHOWN]) + (f" (+{len(foreign) - SHOWN} more)" if len(foreign) > SHOWN else "")
    old = (root / RUN_CONFIG).is_file() and not (root / MANIFEST_DIR).is_dir()
    why = (" It looks like a run of a lightning-redd version before manifests, whose files cannot be told from "
           "anyone else's." if old else "")
    return [f"output folder {root} holds {len(foreign)} file(s) that no lightning-redd run wrote there (not in its "
            f"manifest, {MANIFEST_DIR}/): {shown}. A run here would overwrite them or mix its results with them, and "
            f"--overwrite deletes only the files of the manifest.{why} Fix: choose another --trainer.default_root_dir "
            "(or move those files away)"]
