"""Every registered solver runs through the public CLI both ways, ``predict`` (the whole solve in
``predict_step``, under inference mode turned off) and ``fit`` (one ``solver.step`` per training
step), with the same results as its output files show. Parametrised over ``SOLVERS``, each in the
cheap configuration its ``requirements.settings`` declare."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_redd.lit.cli import cli
from lightning_redd.solvers.all import SOLVERS


def make_images(folder: Path, n: int = 3, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def solver_args(name: str) -> list[str]:
    """``--model.solver`` and its ``init_args`` from the solver's declared cheap settings."""
    cls = SOLVERS[name]
    args = ["--model.solver", f"{cls.__module__}.{cls.__qualname__}"]
    for key, value in cls.requirements.settings.items():
        args += [f"--model.solver.init_args.{key}", str(value)]
    return args


def run(out: Path, images: Path, subcommand: str, name: str) -> Path:
    cli([
        subcommand, "--seed_everything", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(out), "--model.prior", "helpers.ConvPrior",
        "--model.operator", "lightning_redd.operators.inpainting.Inpainting",
        "--model.operator.init_args.mask", "random", "--model.operator.init_args.sigma_y", "0.02",
        *solver_args(name), "--data.root", str(images), "--data.image_size", "16", "--data.batch_size", "2",
    ])
    return out


def records(root: Path) -> dict[str, dict]:
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_fit_and_predict_give_the_same_restorations(name, tmp_path):
    """Same images: the starting estimates' PNGs byte for byte, the restored PNGs byte for byte,
    and each record's PSNR of the float estimate within 1e-4 dB (fit pads its last batch by
    repeating an image, so a convolution sees other batch mates: rounding ~1e-7 relative)."""
    images = make_images(tmp_path / "in")
    fit, pred = run(tmp_path / "fit", images, "fit", name), run(tmp_path / "predict", images, "predict", name)
    rf, rp = records(fit), records(pred)
    assert sorted(rf) == sorted(rp) == ["img0", "img1", "img2"]
    for n in rp:
        assert rf[n]["status"] == rp[n]["status"] == "ok" and rf[n]["nfe"] == rp[n]["nfe"], n
        assert abs(rf[n]["scores"]["psnr"] - rp[n]["scores"]["psnr"]) <= 1e-4, n
        assert (fit / "init" / f"{n}.png").read_bytes() == (pred / "init" / f"{n}.png").read_bytes(), n
        assert (fit / "restored" / f"{n}.png").read_bytes() == (pred / "restored" / f"{n}.png").read_bytes(), n
        assert abs(rp[n]["scores"]["psnr"] - rp[n]["scores"]["psnr_init"]) > 1e-3, n  # the solver did something
    assert len(list((pred / "restored").glob("*.png"))) == 3
