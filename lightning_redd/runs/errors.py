"""Errors of the run folder; each message names the folder (or file) and the fix."""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

#: errors of the disk under the output folder (a permission error counts when it names a path there)
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class RunFolderError(ValueError):
    """The output folder cannot take this run (nothing was computed or changed): exit status 2."""


class RunFolderBusy(RunFolderError):
    """Another run holds the output folder's lock."""


class StorageError(RuntimeError):
    """Writing into the output folder failed during the run (disk full, quota, read-only): exit
    status 4. The message says what is finished and that re-running resumes."""


class FolderProblem(str):
    """One problem of the output folder found before compute (a ``str``, told apart from the
    problems of the inputs so the message can be titled by the output folder)."""


def _os_error(err: BaseException | None) -> OSError | None:
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def storage_error(err: BaseException, root: Path, names: Sequence[str],
                  finished: Callable[[Sequence[str]], set[str]]) -> StorageError | None:
    """A :class:`StorageError` for the ``OSError`` in ``err``'s chain when it is the disk's (full,
    quota, read-only, I/O) or a permission error on a path in output folder ``root``, saying
    how many of the run's images ``names`` are finished (``finished(names)``, e.g.
    ``RunFolder.finished``); else None."""
    os_err, real = _os_error(err), Path(root).resolve()
    if os_err is None:
        return None
    paths = [Path(p).resolve() for p in (os_err.filename, os_err.filename2) if isinstance(p, (str, os.PathLike))]
    ours = any(p == real or real in p.parents for p in paths)
    if os_err.errno not in STORAGE_ERRNOS and not (ours and os_err.errno in (errno.EACCES, errno.EPERM)):
        return None
    done = len(finished(names)) if names else 0
    fix = "free space on that disk (or raise the quota)" if os_err.errno in FULL else "make the folder writable again"
    where = f" ({paths[0]})" if paths else ""
    return StorageError(
        f"writing into the output folder {root} failed during the run: {os_err.strerror or os_err}{where}. {done} of "
        f"{len(names)} image(s) are finished and kept (their files and records are complete); the images being written "
        f"have no record and will be redone. Fix: {fix}, then rerun the same command: it resumes with the "
        f"{len(names) - done} image(s) left"
    )
