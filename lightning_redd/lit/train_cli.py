"""``lightning-redd-train``: a LightningCLI over :class:`DDPMModule` and :class:`PhotoPatches`.

    lightning-redd-train fit --config configs/train_prior.yaml

At the end of ``fit`` the EMA weights are exported to ``<trainer.default_root_dir>/embedded64.safetensors``
and a DDIM sample grid to ``<trainer.default_root_dir>/samples.png``.
"""
from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from lightning_redd.data.photos import PhotoPatches
from lightning_redd.lit.train_prior import DDPMModule


class TrainPriorCLI(LightningCLI):
    """Links the data's patch size to the network's ``image_size`` so they cannot disagree."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.network.init_args.image_size")


def train_main(args: list[str] | None = None, run: bool = True) -> TrainPriorCLI:
    """Entry point of ``lightning-redd-train``; ``args`` overrides ``sys.argv`` (used by tests)."""
    return TrainPriorCLI(
        DDPMModule,
        PhotoPatches,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    train_main()
