"""SIGUSR1 before the run starts: recorded, never fatal.

SLURM (``--signal=USR1@90``, ``scancel --signal=USR1``) may send ``SIGUSR1`` while a task is
still starting: importing torch and Lightning, checking the inputs, joining the process group.
Python's default action for it ends the process, so a job whose time limit came early would die
without a requeue. :func:`install` (run by the ``lightning-redd`` command before it imports
anything heavy) records the signal instead; once the run starts,
:class:`~lightning_redd.lit.requeue.RequeueOnSignal` takes the record over with :func:`take`
and stops at the first batch boundary, as for a signal received mid-run.

Standard library only: this module must load in milliseconds.
"""
from __future__ import annotations

import signal

SIGNUM = int(getattr(signal, "SIGUSR1", 10))
_received = False


def _record(signum, frame) -> None:
    global _received
    _received = True


def install() -> None:
    """Record ``SIGUSR1`` from now on, unless a handler is already set (someone else's: keep it)."""
    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        if signal.getsignal(SIGNUM) in (signal.SIG_DFL, None):
            signal.signal(SIGNUM, _record)
    except ValueError:  # not the main thread: nothing to install
        pass


def take() -> bool:
    """Whether ``SIGUSR1`` arrived since :func:`install` (or the last call); clears the record."""
    global _received
    received, _received = _received, False
    return received


def pending() -> bool:
    """Whether a recorded ``SIGUSR1`` waits to be taken."""
    return _received
