"""CPU peak memory of one unit of work, in a fresh process per mode.

The parent (``bench.py``) re-runs itself with ``--child MODE``; the child builds the prior and
the problem, runs ``warmup`` units, then ``mem_repeats`` units, each preceded by
``gc.collect`` + ``malloc_trim`` + a reset of the kernel's RSS high-water mark (Linux:
``/proc/self/clear_refs`` <- 5, then ``VmHWM``; both read by :mod:`lightning_redd.runs.memory`
through ``bench_cases.Clock``), and prints each unit's peak above the RSS at
its start as one JSON line. A fresh process keeps the model build and the other modes'
caches out of the figure. Where the high-water mark cannot be reset (not Linux), ``ru_maxrss``
is used and a unit whose peak is masked by an earlier one reads NaN.
"""
from __future__ import annotations

import json
import subprocess
import sys

from bench_cases import Clock

from lightning_redd.runs.memory import reset_peak_rss


def child_peaks(run_units) -> None:
    """Child body: ``run_units(clock)`` runs the units on a memory clock; print the peaks (MiB)."""
    import torch

    clock = Clock(torch.device("cpu"), cpu_memory=True)
    resettable = reset_peak_rss()
    skip = run_units(clock)
    peaks = clock.peaks_mib[skip:] if resettable else [float("nan")]
    print(json.dumps({"peaks_mib": peaks, "resettable": resettable}))


def cpu_peak(script: str, argv: list[str], timeout: float | None = None) -> dict:
    """Run ``script argv`` in a fresh interpreter; returns its JSON line (or ``{"error": ...}``)."""
    proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])
