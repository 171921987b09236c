"""The ``lightning-redd`` command: a LightningCLI over :class:`RestorationModule` and
:class:`ImageFolderData`.

    lightning-redd fit --config configs/demo.yaml       # one RED-diff iterate per training step
    lightning-redd predict --config configs/demo.yaml   # the whole solve inside predict_step

Several ``--config`` files merge left to right (e.g. a full config, then a task fragment from
``configs/task/``); any value can be overridden on the command line.
"""
from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from lightning_redd.data.folder import ImageFolderData
from lightning_redd.lit.module import RestorationModule

#: Trainer defaults suited to restoration: one pass over the (repeated) batches, no
#: checkpoints of the frozen prior, and autograd available inside predict.
TRAINER_DEFAULTS = {"max_epochs": 1, "enable_checkpointing": False, "inference_mode": False, "num_sanity_val_steps": 0}


class ReddCLI(LightningCLI):
    """LightningCLI whose ``predict`` keeps no predictions in memory (the writer saves them)."""

    def predict(self, model, datamodule=None, return_predictions=None, ckpt_path=None, **kwargs):
        return self.trainer.predict(
            model, datamodule=datamodule, return_predictions=bool(return_predictions), ckpt_path=ckpt_path, **kwargs
        )


def cli(args=None, run: bool = True) -> ReddCLI:
    """Build (and by default run) the CLI; ``args`` as a list or dict, for tests."""
    return ReddCLI(
        RestorationModule,
        ImageFolderData,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main(args=None) -> None:
    cli(args)
