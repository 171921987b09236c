"""Every solver runs through the Lightning module both ways: ``predict`` (the whole solve in
``predict_step``, under inference mode turned off) and ``fit`` (one ``solver.step`` per
training step), with the same results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_redd.lit.cli import cli

SOLVERS = {
    "red_diff": ["lightning_redd.solvers.red_diff.RedDiff"],
    "ddim": ["lightning_redd.solvers.ddim.DDIM", "--model.solver.init_args.eta", "0.5"],
    "dps": ["lightning_redd.solvers.dps.DPS", "--model.solver.init_args.zeta", "0.5"],
    "pigdm": ["lightning_redd.solvers.pigdm.PiGDM"],
    "ddrm": ["lightning_redd.solvers.ddrm.DDRM"],
    "classical": ["lightning_redd.solvers.classical.Classical", "--model.solver.init_args.regulariser", "laplace"],
}


def make_images(folder: Path, n: int = 3, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def run(tmp_path: Path, images: Path, subcommand: str, solver: list[str], monkeypatch) -> dict:
    from lightning_redd.lit.writer import RestorationWriter

    seen: dict = {}
    original = RestorationWriter.write

    def spy(self, trainer, out):
        seen.update({n: (out.x_hat[i], out.x_init[i]) for i, n in enumerate(out.names)})
        original(self, trainer, out)

    monkeypatch.setattr(RestorationWriter, "write", spy)
    cli([
        subcommand, "--seed_everything", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path / subcommand), "--model.prior", "helpers.ConvPrior",
        "--model.operator", "lightning_redd.operators.inpainting.Inpainting",
        "--model.operator.init_args.mask", "random", "--model.operator.init_args.sigma_y", "0.02",
        "--model.solver", solver[0], "--model.solver.init_args.num_steps", "4", *solver[1:],
        "--data.root", str(images), "--data.image_size", "16", "--data.batch_size", "2",
    ])
    return seen


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_fit_and_predict_give_the_same_restorations(name, tmp_path, monkeypatch):
    images = make_images(tmp_path / "in")
    fit = run(tmp_path, images, "fit", SOLVERS[name], monkeypatch)
    pred = run(tmp_path, images, "predict", SOLVERS[name], monkeypatch)
    assert sorted(fit) == sorted(pred) == ["img0", "img1", "img2"]
    for n in fit:
        scale = max(1.0, float(pred[n][0].abs().max()))
        assert (fit[n][0] - pred[n][0]).abs().max() <= 1e-5 * scale, n
        assert (fit[n][1] - pred[n][1]).abs().max() == 0
        assert (pred[n][0] - pred[n][1]).abs().max() > 1e-3  # the solver did something
    assert len(list((tmp_path / "predict" / "restored").glob("*.png"))) == 3
