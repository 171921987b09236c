"""One run per output folder at a time: an exclusive ``flock`` on ``<folder>/.lightning-redd.lock``.

Rank 0 takes the lock after every check passed and before anything is written or deleted, and
holds it for the whole run; the other ranks are started by it (or wait for it in the process
group), so they write only while it holds the lock. Two runs in one folder would restore the
same images twice and delete each other's files in flight, so a second run is refused with the
holder's PID, host and start time, which the holder writes into the lock file.

The kernel releases a ``flock`` when its holder dies (also on NFS, where Linux maps it to a
POSIX lock), so a killed run never blocks the next one; the next run finds the dead run's PID
still in the file (a clean end empties it) and says so. The lock file is never deleted: deleting
it while another process waits on it would let two runs hold two different files.

Holds are counted per process and folder (:func:`acquire` twice, :func:`release` twice), so the
CLI and the writer callback can both hold the lock of one run.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lightning_redd.runs import fsio
from lightning_redd.runs.errors import RunFolderBusy
from lightning_redd.runs.layout import LOCK_FILE

#: seconds a start waits for the lock before it refuses (covers another run's momentary probe)
GRACE_S = 2.0


@dataclass
class _Hold:
    fd: int
    count: int


_HELD: dict[str, _Hold] = {}


def _key(root: Path) -> str:
    return str(Path(root).expanduser().resolve())


def _read(fd: int) -> dict:
    """The holder's description in the lock file ({} if empty or unreadable)."""
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe(info: dict) -> str:
    """``PID 123 on host h, started 2026-01-02 10:00:00 UTC`` (what is known of it)."""
    if not info.get("pid"):
        return "PID and host unknown: its lock file holds no description"
    return f"PID {info['pid']} on host {info.get('host', '?')}" + (f", started {info['started']}" if info.get("started") else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(root: Path, info: dict) -> RunFolderBusy:
    orphan = info.get("pid") and info.get("host") == socket.gethostname() and not _alive(int(info["pid"]))
    note = "; it is no longer running, but a child process of it (e.g. a data-loader worker) still holds the lock" if orphan else ""
    return RunFolderBusy(
        f"output folder {root} is in use by another lightning-redd run ({describe(info)}{note}): two runs in one folder "
        "would restore the same images twice and delete each other's files in flight. Fix: wait for that run to end "
        "(the same command then resumes what is left), or choose another --trainer.default_root_dir"
    )


def check_free(root: str | os.PathLike) -> None:
    """Raise :class:`RunFolderBusy` if another process holds the lock of ``root``; creates nothing
    (a shared lock for an instant, which a starting run's :data:`GRACE_S` absorbs)."""
    path = Path(root) / LOCK_FILE
    if _key(root) in _HELD or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(Path(root), _read(fd)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def acquire(root: str | os.PathLike) -> dict | None:
    """Take (or, in a process already holding it, count again) the lock of ``root``, creating the
    folder and its lock file; raise :class:`RunFolderBusy` if another process holds it. Returns
    the description a dead holder left (its run was killed), else None."""
    key = _key(root)
    if key in _HELD:
        _HELD[key].count += 1
        return None
    Path(root).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(root) / LOCK_FILE, os.O_RDWR | os.O_CREAT, fsio.file_mode())
    try:
        _wait_for(fd, Path(root))
        left = _read(fd) or None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": secrets.token_hex(8),
              "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = _Hold(fd, 1)
    return left


def _wait_for(fd: int, root: Path) -> None:
    deadline = time.monotonic() + GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise _busy(root, _read(fd)) from None
            time.sleep(0.05)


def release(root: str | os.PathLike) -> None:
    """Give back one hold; the last one empties the file (a clean end) and unlocks it."""
    hold = _HELD.get(_key(root))
    if hold is None:
        return
    hold.count -= 1
    if hold.count > 0:
        return
    del _HELD[_key(root)]
    try:
        os.ftruncate(hold.fd, 0)
    except OSError:  # a full or read-only disk: the lock still goes with the descriptor
        pass
    finally:
        os.close(hold.fd)


def token(root: str | os.PathLike) -> str | None:
    """The random token this process wrote into the lock file of ``root`` when it took the lock
    (None if it holds no lock there): the other ranks read the file to prove they see the same
    folder (:mod:`lightning_redd.runs.shared`)."""
    hold = _HELD.get(_key(root))
    return _read(hold.fd).get("token") if hold is not None else None


def read_token(root: str | os.PathLike) -> str | None:
    """The token in the lock file of ``root`` as this process sees it (None: no file, no token)."""
    try:
        fd = os.open(Path(root) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read(fd).get("token")
    finally:
        os.close(fd)


def held(root: str | os.PathLike) -> bool:
    """Whether this process holds the lock of ``root``."""
    return _key(root) in _HELD
