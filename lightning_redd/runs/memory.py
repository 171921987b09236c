"""The process's resident-memory high-water mark (Linux), shared by compare and the benchmarks."""
from __future__ import annotations


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
