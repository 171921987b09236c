"""Durable, atomic file writes: the one place files of a run are created.

:func:`atomic_write` writes to a hidden temporary name in the destination's folder
(``.<name>.<random>.tmp``), flushes and fsyncs it, renames it over the destination and fsyncs
the folder. A crash at any point leaves either the old file or the new one, never a
truncated one; a crash before the rename can leave a stale temporary file, which
:func:`remove_stale_temporaries` cleans. :func:`append_durably` is the other write: an append
to a journal (the run's manifest), fsynced before it returns. Files get the permissions of an ordinary
``open()``: ``0o666`` minus the process's umask (0644 under the usual umask 022), not the
0600 of ``tempfile.mkstemp``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions a new file gets: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, durable: bool = True) -> Path:
    """Create or replace ``path`` with what ``write(fh)`` writes to a binary file handle.

    Args:
        path: destination; its parent folders are created.
        write: writes the content (e.g. ``lambda fh: image.save(fh, format="PNG")``).
        durable: fsync the file and its folder (off only for scratch files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), durable=durable)


def append_durably(path: str | os.PathLike, text: str) -> Path:
    """Append ``text`` (UTF-8) to ``path`` in one ``write`` and fsync it (and, for a new file,
    its folder) before returning. A crash can leave at most an unterminated tail of ``text``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    data = text.encode("utf-8", "surrogateescape")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)
    return path


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file :func:`atomic_write` creates."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX)


def destination(path: Path) -> Path:
    """The file a temporary ``.<name>.<random>.tmp`` of :func:`atomic_write` was going to become."""
    return path.with_name(path.name[1 : -len(TMP_SUFFIX)].rsplit(".", 1)[0])


def remove_stale_temporaries(folders: list[Path], owned: Callable[[Path], bool] = lambda dest: True) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write` left directly in
    ``folders`` (only names of the form ``.<name>.<random>.tmp`` whose destination ``owned``
    accepts); returns what was removed."""
    removed = []
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if p.is_file() and not p.is_symlink() and is_temporary(p) and owned(destination(p)):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
