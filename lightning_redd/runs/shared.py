"""Every process must see the same output folder: checked once, before any compute.

On several nodes the output folder must be on a file system every node mounts: each rank
writes its own images and records there, and rank 0 merges ``metrics.csv`` from all records
and skips the finished images on a resume. A folder local to each node (a node's ``/tmp``, a
scratch disk) would leave each node's work where the others cannot see it, and the merged
table would miss it. So once rank 0 holds the folder's lock (whose file holds a random token,
:func:`lightning_redd.runs.lock.token`), every rank reads the lock file and all ranks compare
what they read with rank 0's token; if any rank does not see it, every rank refuses with the
same message, naming the ranks and hosts that do not see it.
"""
from __future__ import annotations

import socket
from pathlib import Path

from lightning_redd.runs import lock
from lightning_redd.runs.errors import RunFolderError


class FolderNotShared(RunFolderError):
    """Some process does not see the output folder rank 0 writes into."""


def my_view(root: Path, token: str | None) -> tuple[str, bool]:
    """``(this host, whether this process reads rank 0's token in the lock file of root)``."""
    return socket.gethostname(), token is not None and lock.read_token(root) == token


def check(root: Path, views: list[tuple[str, bool]]) -> None:
    """Raise :class:`FolderNotShared` unless every rank saw rank 0's token (``views[r]`` is rank
    ``r``'s :func:`my_view`)."""
    missing = [(r, host) for r, (host, seen) in enumerate(views) if not seen]
    if not missing:
        return
    host0 = views[0][0]
    shown = ", ".join(f"rank {r} on {host}" for r, host in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    raise FolderNotShared(
        f"output folder {root} is not the same folder for every process: {shown} "
        f"do{'es' if len(missing) == 1 else ''} not see the lock file rank 0 (on {host0}) wrote there, so each node would keep "
        "its images where the others cannot see them (no merged metrics.csv, images redone on a resume). Fix: put "
        "--trainer.default_root_dir on a file system every node mounts (shared storage, not a node's /tmp or local disk)"
    )
