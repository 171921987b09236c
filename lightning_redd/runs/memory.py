"""The process's resident memory (Linux ``/proc/self``), for compare and the benchmarks alike.

The one place that reads ``/proc`` for memory: the current resident size, its high-water mark
(``VmHWM``) and the reset of that mark, plus ``ru_maxrss`` (the process's peak since it
started, which cannot be reset) where ``/proc`` is absent. All sizes are in bytes.
"""
from __future__ import annotations

import os
import resource
import sys


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def resident_bytes() -> int | None:
    """The current resident set size (``/proc/self/statm``); None where it cannot be read."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def peak_resident_bytes() -> int | None:
    """The RSS high-water mark since the last :func:`reset_peak_rss` (``VmHWM`` of
    ``/proc/self/status``); None where it cannot be read."""
    try:
        with open("/proc/self/status") as fh:
            line = next(ln for ln in fh if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024  # the kernel reports KiB
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def process_peak_bytes() -> int:
    """The process's peak resident size since it started (``ru_maxrss``; never reset)."""
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
