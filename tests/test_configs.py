"""Every YAML in configs/ parses with its CLI (run=False semantics, without building the
networks: the paper's 552 M-parameter prior is only type-checked here)."""
from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_redd.data.folder import ImageFolderData
from lightning_redd.lit.cli import TRAINER_DEFAULTS, ReddCLI
from lightning_redd.lit.module import RestorationModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*.yaml"))


class ParseOnly(ReddCLI):
    """Parses and validates the whole config (types, choices, class paths) but builds nothing."""

    def instantiate_classes(self) -> None:
        self.parsed = self.config

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse(*files: Path, cli_class=ParseOnly, model=RestorationModule, data=ImageFolderData):
    args = ["predict"]
    for f in files:
        args += ["--config", str(f)]
    return cli_class(model, data, trainer_defaults=TRAINER_DEFAULTS, args=args, run=True)


def config_id(p: Path) -> str:
    return str(p.relative_to(CONFIGS))


def test_there_are_configs():
    names = {config_id(p) for p in ALL}
    assert "demo.yaml" in names and any(n.startswith("task/") for n in names)


@pytest.mark.parametrize("path", [p for p in ALL if not p.name.startswith("train_prior")], ids=config_id)
def test_restoration_config_parses(path):
    files = (CONFIGS / "demo.yaml", path) if path.parent.name == "task" else (path,)
    cli = parse(*files)
    model = cli.parsed.predict.model
    assert model.operator.class_path.startswith("lightning_redd.operators.")
    assert cli.parsed.predict.trainer.inference_mode is False


@pytest.mark.parametrize("path", [p for p in ALL if p.name.startswith("train_prior")], ids=config_id)
def test_training_config_parses(path):
    from lightning_redd.data.photos import PhotoPatches
    from lightning_redd.lit.train_prior import DDPMModule

    class TrainParseOnly(LightningCLI):
        def instantiate_classes(self) -> None:
            self.parsed = self.config

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    cli = TrainParseOnly(DDPMModule, PhotoPatches, args=["fit", "--config", str(path)], run=True)
    assert cli.parsed.fit.model.network.class_path.endswith("UNet")


def test_demo_config_instantiates():
    """The demo builds for real: prior weights found, operator and solver valid."""
    cli = ReddCLI(RestorationModule, ImageFolderData, trainer_defaults=TRAINER_DEFAULTS,
                  args=["--config", str(CONFIGS / "demo.yaml")], run=False)
    assert cli.model.num_iterates == 200
    assert cli.model.prior.image_size == cli.datamodule.image_size == 64
