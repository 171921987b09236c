"""The one piece of Lightning in the experiments: a callback that clocks a ``predict`` run.

:class:`SolveClock` times every predict batch (measuring ``y`` plus the whole solve; CUDA is
synchronised around it) and the peak memory of the solve, and writes
``<default_root_dir>/compare_clock.json`` at the end of predict::

    {"device": "cpu", "threads": 1, "predict_start": <unix time>,
     "memory": "cpu VmHWM (reset at predict start)", "start_mib": ..., "load_peak_mib": ...,
     "peak_mib": ..., "batches": [[seconds, images], ...], "batch_size": ...}

Memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset at predict start); on the CPU the
resident-set high-water mark (``VmHWM``, reset at predict start, so model loading does not
count; read through :mod:`lightning_redd.runs.memory`), or the process's ``ru_maxrss`` where
the mark cannot be reset.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from lightning_redd.runs.memory import peak_resident_bytes, process_peak_bytes, reset_peak_rss, resident_bytes

CLOCK_FILE = "compare_clock.json"
MIB = 2**20


class SolveClock(L.Callback):
    """Times every predict batch and the peak memory of the solve (see the module docstring)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, int]] = []
        self.info: dict = {}

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_predict_start(self, trainer, pl_module) -> None:
        self.batches, dev = [], pl_module.device
        self.info = {"device": dev.type, "predict_start": time.time(), "threads": torch.get_num_threads()}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            self.info.update(memory="cuda max_memory_allocated", start_mib=torch.cuda.memory_allocated(dev) / MIB)
            return
        rss = resident_bytes()
        self.info["load_peak_mib"] = process_peak_bytes() / MIB
        reset = reset_peak_rss() and rss is not None
        self.info.update(memory="cpu VmHWM (reset at predict start)" if reset else "cpu ru_maxrss (process peak)",
                         start_mib=(rss or 0) / MIB)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        self.batches.append((time.perf_counter() - self._t0, len(batch["name"])))

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.info["device"] == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / MIB
        elif self.info["memory"].startswith("cpu VmHWM"):
            peak = (peak_resident_bytes() or 0) / MIB
        else:
            peak = process_peak_bytes() / MIB
        self.info.update(peak_mib=peak, batches=self.batches, batch_size=max((n for _, n in self.batches), default=0))
        if trainer.is_global_zero:
            Path(trainer.default_root_dir, CLOCK_FILE).write_text(json.dumps(self.info, indent=1) + "\n")


def images_run(clock: dict) -> int:
    """How many images the clocked predict batches held."""
    return sum(n for _, n in clock.get("batches", []))
