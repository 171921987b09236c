"""Every YAML in configs/ parses with its CLI (run=False semantics, without building the
networks: the paper's 552 M-parameter prior is only type-checked here)."""
from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from lightning_redd.lit.cli import ReddCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*.yaml"))


class ParseOnly(ReddCLI):
    """Parses and validates the whole config (types, choices, class paths) but builds nothing."""

    def instantiate_classes(self) -> None:
        self.parsed = self.config

    def _run_subcommand(self, subcommand: str) -> None:
        pass

    def again(self, args: list[str]) -> ParseOnly:
        """What ``__init__`` does after building the parser, for other arguments: parsing is
        a quarter of building the parser, which every test would otherwise repeat."""
        self.parse_arguments(self.parser, args)
        self._parse_ckpt_path()
        self.subcommand = self.config["subcommand"]
        self.before_instantiate_classes()
        self.instantiate_classes()
        return self


def arguments(files: tuple[Path, ...]) -> list[str]:
    return ["predict"] + [a for f in files for a in ("--config", str(f))]


_SHARED: list[ParseOnly] = []


def shared_parser() -> ParseOnly:
    """One parser for the module's tests (that it parses as a fresh one does is tested below)."""
    if not _SHARED:
        _SHARED.append(ParseOnly(args=arguments((CONFIGS / "demo.yaml",)), run=True))
    return _SHARED[0]


@functools.lru_cache(maxsize=None)
def _parsed(files: tuple[Path, ...]) -> Namespace:
    return shared_parser().again(arguments(files)).parsed


def parse(*files: Path) -> SimpleNamespace:
    """The files parsed (once per combination: several tests read the same ones; they only read)."""
    return SimpleNamespace(parsed=_parsed(files))


def test_the_shared_parser_parses_as_a_fresh_one():
    """No value of an earlier parse leaks into a later one: a fragment's keys, a prior fragment's
    checkpoint and flags, a derived output folder."""
    sequence = [(CONFIGS / "demo.yaml", CONFIGS / "task" / "jpeg.yaml"), (CONFIGS / "demo.yaml",),
                (CONFIGS / "prior" / "adm_imagenet256.yaml", CONFIGS / "imagenet256" / "sr4.yaml"),
                (CONFIGS / "imagenet256" / "sr4.yaml",)]
    shared = [shared_parser().again(arguments(files)).parsed.as_dict() for files in sequence]
    for i in (1, 3):  # each after a parse that sets more
        assert shared[i] == ParseOnly(args=arguments(sequence[i]), run=True).parsed.as_dict()
    assert shared[0] != shared[1] and shared[2] != shared[3]  # the sequence does change values


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
    """The demo builds for real: prior weights found, operator and solver valid; its network runs
    in bf16 exactly where this CPU has bf16 matrix instructions."""
    from lightning_redd.priors.speed import cpu_bf16_is_fast

    cli = ReddCLI(args=["--config", str(CONFIGS / "demo.yaml")], run=False)
    assert cli.model.num_iterates == 130 and cli.model.solver.time_grid == "quadratic"
    assert cli.model.prior.image_size == cli.datamodule.image_size == 64
    assert cli.model.prior.cpu_bf16 == "auto" and cli.model.prior.cpu_bf16_active is cpu_bf16_is_fast()


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
    assert c.data.init_args.image_size == 256 and c.data.init_args.batch_size == 4 and c.seed_everything == 0
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
    assert c.data.init_args.image_size == (64 if name == "embedded" else 256)


# --------------------------------------------------------------------------- 64 px task presets
#: configs/task/ files owned elsewhere (operator-only fragments, not presets).
NOT_PRESETS = {"inpainting_file"}
PRESETS = sorted(p for p in (CONFIGS / "task").glob("*.yaml") if p.stem not in NOT_PRESETS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_task_preset_fits_the_64px_prior_and_says_what_was_measured(path):
    """Each preset sets the operator and RED-diff's knobs (never the solver class, so a solver
    fragment after it replaces them); on top of the demo it runs RED-diff with those knobs at
    64 px; its header names the prior, the measured tuning-split PSNR against the starting
    estimate, and the command that measured it."""
    raw = yaml.safe_load(path.read_text())
    knobs = raw["model"]["solver"]
    assert list(knobs) == ["init_args"] and set(knobs["init_args"]) == {"num_steps", "time_grid", "lr", "lam"}
    assert knobs["init_args"]["time_grid"] == "linear"  # as measured: the demo's quadratic grid is not inherited
    c = parse(CONFIGS / "demo.yaml", path).parsed.predict
    assert c.model.solver.class_path == "lightning_redd.solvers.red_diff.RedDiff" and c.data.init_args.image_size == 64
    assert {k: getattr(c.model.solver.init_args, k) for k in knobs["init_args"]} == knobs["init_args"]
    assert 0 <= c.model.operator.init_args.sigma_y <= 0.05
    head = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    assert "64 px embedded prior" in head and "NOT yet tuned" not in head
    m = re.search(r"measured (\d+\.\d\d) dB mean PSNR vs (\d+\.\d\d) dB of the starting estimate", head)
    assert m, head
    assert "tuning split" in head and ("lightning_redd.lit.compare table" in head or "lightning_redd.experiments table" in head or "docs/results/reproduce.sh" in head)
    # a baseline on the same task: the solver fragment after the preset replaces its RED-diff knobs
    dps = parse(CONFIGS / "demo.yaml", path, CONFIGS / "solver" / "dps.yaml").parsed.predict.model.solver
    assert dps.class_path == "lightning_redd.solvers.dps.DPS" and "lr" not in dps.init_args and "time_grid" not in dps.init_args


#: The paper's 256 px task settings (kept in the self-contained paper configs, independent of configs/task/).
PAPER_OPERATORS = {
    "deblur_gauss": {"kernel_size": 61, "sigma": 3.0, "pinv_rtol": 0.03, "sigma_y": 0.05},
    "hdr": {"gain": 2.0, "sigma_y": 0.05},
    "inpaint_freeform": {"mask": "strokes", "coverage": [0.1, 0.2], "sigma_y": 0.05},
    "jpeg": {"quality": 10, "chroma_subsampling": True, "surrogate": "straight_through", "sigma_y": 0.0},
    "nonlinear_blur": {"kernel_size": 31, "intensity": 0.5, "response": 3.0, "sigma_y": 0.05},
    "phase_retrieval": {"pad_ratio": 0.25, "sigma_y": 0.05},
    "sr4": {"factor": 4, "sigma_y": 0.05},
}


@pytest.mark.parametrize("dataset", sorted(PAPER_PRIORS))
@pytest.mark.parametrize("task", sorted(PAPER_OPERATORS))
def test_paper_configs_keep_their_256px_task_settings(dataset, task):
    path = CONFIGS / dataset / f"{task}.yaml"
    assert "configs/task" not in path.read_text() and "task/" not in path.read_text()
    raw = yaml.safe_load(path.read_text())["model"]["operator"]["init_args"]
    assert raw == PAPER_OPERATORS[task]


@pytest.mark.parametrize("preset,task", [("deblur_gaussian", "deblur_gaussian"), ("hdr", "hdr"), ("inpainting_box", "inpainting_box"),
                                         ("inpainting_strokes", "inpainting_strokes"), ("sr_block", "sr_block4")])
def test_presets_of_the_results_tasks_are_those_tasks(preset, task):
    """The five presets whose knobs come from docs/RESULTS.md's tuning hold exactly the operator tuned there
    (configs/ablations/task/) and the values its tuned RED-diff fragment chose."""
    raw = yaml.safe_load((CONFIGS / "task" / f"{preset}.yaml").read_text())["model"]
    assert raw["operator"] == yaml.safe_load((CONFIGS / "ablations" / "task" / f"{task}.yaml").read_text())["model"]["operator"]
    tuned = yaml.safe_load((CONFIGS / "ablations" / "tuned" / task / "solver" / "red_diff.yaml").read_text())
    assert raw["solver"]["init_args"] == {k: tuned["model"]["solver"]["init_args"][k] for k in ("num_steps", "time_grid", "lr", "lam")}
