"""The two kinds of metric and how dataset-level ones sync across processes.

Per-image metric: a callable ``fn(x, ref) -> (B,)`` on the tensors' device (``psnr``,
``ssim``, an :class:`~lightning_redd.metrics.lpips.LPIPS` object).

Dataset-level metric: a :class:`DatasetMetric` that accumulates batches with
``update(x, ref, names=None)`` and reports ``compute(gather=None) -> dict[str, float]``. Its
whole state is a few tensors (:meth:`DatasetMetric.states`) whose rows are concatenated over
processes. ``compute`` syncs them through ``gather``, a function ``tensor -> list of every
process's tensor`` whose first dimension may differ between processes (torchmetrics'
``gather_all_tensors`` is one). With ``gather=None`` it uses that function when
``torch.distributed`` is initialised with more than one process and the local state
otherwise. Under DDP every process must call ``compute`` (it is a collective), and all get
the same result.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Gather = Callable[[torch.Tensor], list[torch.Tensor]]


def default_gather() -> Gather | None:
    """torchmetrics' ``gather_all_tensors`` under multi-process ``torch.distributed``, else ``None``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        from torchmetrics.utilities.distributed import gather_all_tensors

        return gather_all_tensors
    return None


class DatasetMetric:
    """Base of dataset-level metrics: named states, each a list of row blocks ``(n, *shape)``.

    Subclasses declare states with :meth:`add_state` and append blocks in ``update``;
    ``names`` are the result keys the metric can report (e.g. ``("kid", "fid")``). States
    live on the device of the last ``update``'s input (the collective needs them there).
    """

    names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._states: dict[str, list[torch.Tensor]] = {}
        self._specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._device = torch.device("cpu")

    def add_state(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> None:
        """Declare a state whose rows have ``shape`` (``()`` for scalars per image)."""
        self._states[name], self._specs[name] = [], (tuple(shape), dtype)

    def append(self, name: str, block: torch.Tensor) -> None:
        """Add rows ``(n, *shape)`` to a state (kept detached, on the block's device)."""
        shape, dtype = self._specs[name]
        if tuple(block.shape[1:]) != shape:
            raise ValueError(f"state {name!r} of {type(self).__name__} takes rows of shape {shape}, got {tuple(block.shape[1:])}")
        self._device = block.device
        self._states[name].append(block.detach().to(dtype))

    def update(self, x: torch.Tensor, ref: torch.Tensor | None = None, names: Sequence[str] | None = None) -> None:
        raise NotImplementedError

    def compute(self, gather: Gather | None = None) -> dict[str, float]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every accumulated batch (the networks stay built)."""
        for blocks in self._states.values():
            blocks.clear()

    def states(self) -> dict[str, torch.Tensor]:
        """The local state: each named tensor is the row-wise concatenation of its blocks."""
        out = {}
        for k, blocks in self._states.items():
            shape, dtype = self._specs[k]
            out[k] = torch.cat(blocks) if blocks else torch.empty((0, *shape), dtype=dtype, device=self._device)
        return out

    def synced_states(self, gather: Gather | None = None) -> dict[str, torch.Tensor]:
        """:meth:`states` concatenated over processes (see the module docstring for ``gather``)."""
        gather = gather or default_gather()
        local = self.states()
        if gather is None:
            return local
        return {k: torch.cat([t.to(v.device) for t in gather(v)]) for k, v in local.items()}
