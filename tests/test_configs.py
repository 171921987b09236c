"""Every YAML in configs/ parses with its CLI (run=False semantics, without building the
networks: the paper's 552 M-parameter prior is only type-checked here)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml
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


#: Paper configs are the task part; their prior fragment goes first (``--config`` merge left to right).
PAPER_PRIORS = {"imagenet256": "adm_imagenet256.yaml", "ffhq256": "adm_ffhq256.yaml"}


def composition(path: Path) -> tuple[Path, ...]:
    """The ``--config`` files a user passes with ``path``: fragments (task/, solver/, prior/)
    after the demo, paper configs after their prior fragment, others alone."""
    if path.parent.name in ("task", "solver", "prior"):
        return (CONFIGS / "demo.yaml", path)
    if path.parent.name in PAPER_PRIORS:
        return (CONFIGS / "prior" / PAPER_PRIORS[path.parent.name], path)
    return (path,)


@pytest.mark.parametrize("path", [p for p in ALL if not p.name.startswith("train_prior")], ids=config_id)
def test_restoration_config_parses(path):
    files = composition(path)
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


# --------------------------------------------------------------------------- fragments
ADM_FLAGS = {  # the published guided-diffusion flags of the two paper priors
    "imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8"),
    "ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, attention_resolutions="16"),
}
COMMON_FLAGS = dict(channel_mult="", num_heads=4, num_head_channels=64, num_heads_upsample=-1, learn_sigma=True,
                    class_cond=False, use_scale_shift_norm=True, resblock_updown=True, use_new_attention_order=False,
                    dropout=0.0, use_fp16=False, checkpoint=None)
PAPER_TASKS = {  # task -> (operator class, RED-diff lr), as in the self-contained files these replaced
    "deblur_gauss": ("lightning_redd.operators.blur.GaussianBlur", 0.5),
    "hdr": ("lightning_redd.operators.hdr.HDR", 0.5),
    "inpaint_freeform": ("lightning_redd.operators.inpainting.Inpainting", 0.25),
    "jpeg": ("lightning_redd.operators.jpeg.JPEG", 0.5),
    "nonlinear_blur": ("lightning_redd.operators.nonlinear_blur.NonlinearBlur", 0.5),
    "phase_retrieval": ("lightning_redd.operators.phase_retrieval.PhaseRetrieval", 0.5),
    "sr4": ("lightning_redd.operators.super_resolution.BlockAverageSR", 0.5),
}


@pytest.mark.parametrize("dataset", sorted(PAPER_PRIORS))
@pytest.mark.parametrize("task", sorted(PAPER_TASKS))
def test_paper_config_composes_with_its_prior_fragment(dataset, task):
    """prior fragment + task file = the values of the former self-contained files (checked
    key by key when they were split), minus the logger that hard-coded its save_dir."""
    path = CONFIGS / dataset / f"{task}.yaml"
    c = parse(*composition(path)).parsed.predict
    prior = c.model.prior
    assert prior.class_path == "lightning_redd.priors.adm.ADMPrior"
    flags = {**ADM_FLAGS[dataset], **COMMON_FLAGS}
    assert {k: getattr(prior.init_args, k) for k in flags} == flags
    operator, lr = PAPER_TASKS[task]
    assert c.model.operator.class_path == operator
    assert c.model.solver.class_path == "lightning_redd.solvers.red_diff.RedDiff"
    assert (c.model.solver.init_args.num_steps, c.model.solver.init_args.lr, c.model.solver.init_args.lam) == (1000, lr, 0.25)
    assert c.data.image_size == 256 and c.data.batch_size == 4 and c.seed_everything == 0
    # no fixed folder: each composition gets its own (config names + a hash of the settings)
    assert re.fullmatch(rf"outputs/adm_{dataset}\+{task}-[0-9a-f]{{8}}", c.trainer.default_root_dir) and c.trainer.logger is None
    assert "save_dir" not in path.read_text()
    # alone, the task file names only the prior's class: it cannot silently run another prior
    alone = parse(path).parsed.predict.model.prior
    assert alone.class_path == prior.class_path and alone.init_args.checkpoint is None


SOLVER_CLASSES = {
    "ddim": "lightning_redd.solvers.ddim.DDIM", "dps": "lightning_redd.solvers.dps.DPS",
    "pigdm": "lightning_redd.solvers.pigdm.PiGDM", "ddrm": "lightning_redd.solvers.ddrm.DDRM",
    "classical": "lightning_redd.solvers.classical.Classical", "red_diff": "lightning_redd.solvers.red_diff.RedDiff",
}


@pytest.mark.parametrize("name", sorted(SOLVER_CLASSES))
def test_solver_fragment_sets_only_the_solver_with_every_knob(name):
    """Each fragment sets only model.solver, lists every constructor knob, and (except
    RED-diff's, which holds the paper's S = 1000, lr 0.5 over the quick-run defaults) uses
    the constructor's defaults, which are the published ones."""
    raw = yaml.safe_load((CONFIGS / "solver" / f"{name}.yaml").read_text())
    assert set(raw) == {"model"} and set(raw["model"]) == {"solver"}
    c = parse(*composition(CONFIGS / "solver" / f"{name}.yaml")).parsed.predict.model.solver
    assert c.class_path == SOLVER_CLASSES[name]
    module, cls = SOLVER_CLASSES[name].rsplit(".", 1)
    params = inspect.signature(getattr(__import__(module, fromlist=[cls]), cls)).parameters
    assert set(raw["model"]["solver"]["init_args"]) == set(params)
    if name != "red_diff":
        defaults = {k: p.default for k, p in params.items()}
        assert {k: getattr(c.init_args, k) for k in params} == defaults


@pytest.mark.parametrize("name", ["embedded", "adm_imagenet256", "adm_ffhq256"])
def test_prior_fragment_sets_only_the_prior_and_image_size(name):
    raw = yaml.safe_load((CONFIGS / "prior" / f"{name}.yaml").read_text())
    assert set(raw) == {"model", "data"} and set(raw["model"]) == {"prior"} and set(raw["data"]) == {"image_size"}
    c = parse(*composition(CONFIGS / "prior" / f"{name}.yaml")).parsed.predict
    assert c.data.image_size == (64 if name == "embedded" else 256)
