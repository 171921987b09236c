"""Image sharding across processes: Lightning's DDP machinery without the DDP wrapper.

Restoration has nothing to synchronise between processes: the prior is frozen (every rank
loads the same weights from the same file), and ``mu`` with its Adam state is per image and
lives outside the module (the solver's state), so no gradient of one rank concerns another.
What the processes need from Lightning is its launch (subprocesses, ``srun``, SLURM
environment), the process group (gloo/nccl, used for the small broadcasts and barriers the
DataModule and writer need) and the distributed bookkeeping (ranks, world size).

:class:`ImageShardingStrategy` is :class:`~lightning.pytorch.strategies.DDPStrategy` with its
model setup replaced: the module is moved to its device but never wrapped in
``DistributedDataParallel`` (which refuses a module without trainable parameters, broadcasts
every parameter from rank 0 when it wraps, and all-reduces gradients in backward), and its
states are not broadcast from rank 0 before ``predict`` (a 2.2 GB prior would be sent to
every rank although each already loaded it). This is safe because nothing that DDP would
synchronise exists here: the module has no trainable parameter and no Lightning optimizer.

The CLI uses it whenever several processes run (``--trainer.strategy ddp`` and the other DDP
names map to it); in your own Lightning code pass ``strategy=ImageShardingStrategy()``.
"""
from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.trainer.states import TrainerFn

#: Lightning's DDP strategy names and their start methods -> our names
DDP_NAMES = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


class ImageShardingStrategy(DDPStrategy):
    """DDP's launch and process group, each rank restoring its own images; no DDP wrapper."""

    strategy_name = "image_sharding"

    def setup(self, trainer: L.Trainer) -> None:
        assert self.accelerator is not None and self.model is not None
        self.accelerator.setup(trainer)
        self.precision_plugin.convert_module(self.model)
        self.model_to_device()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)  # the module configures none: the solver owns Adam on mu
        self.setup_precision_plugin()

    def configure_ddp(self) -> None:
        """Never wrap: nothing is synchronised between ranks (see the module docstring)."""


def register() -> None:
    """Register ``image_sharding`` (and ``image_sharding_spawn``/``_fork``) with Lightning."""
    for suffix, start in (("", "popen"), ("_spawn", "spawn"), ("_fork", "fork")):
        name = f"image_sharding{suffix}"
        if name not in StrategyRegistry:
            StrategyRegistry.register(name, ImageShardingStrategy, description=f"image sharding, start method {start}",
                                      start_method=start)


def sharding_name(strategy: str) -> str | None:
    """Our strategy name for one of Lightning's DDP names (``ddp`` -> ``image_sharding``), else ``None``."""
    start = DDP_NAMES.get(strategy)
    if start is None:
        return None
    return {"popen": "image_sharding", "spawn": "image_sharding_spawn", "fork": "image_sharding_fork"}[start]


register()
