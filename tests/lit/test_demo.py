"""The shipped demo config, for real: fit and predict write the same restored images."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_redd.lit.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run(subcommand: str, out: Path, monkeypatch, *extra: str) -> dict[str, torch.Tensor]:
    from lightning_redd.lit.writer import RestorationWriter

    seen: dict[str, torch.Tensor] = {}
    original = RestorationWriter.write

    def spy(self, trainer, batch_out):
        seen.update({n: batch_out.x_hat[i] for i, n in enumerate(batch_out.names)})
        original(self, trainer, batch_out)

    monkeypatch.setattr(RestorationWriter, "write", spy)
    monkeypatch.chdir(ROOT)  # the config's data.root is relative to the repository
    cli([subcommand, "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(out),
         "--trainer.enable_progress_bar", "false", *extra])
    return seen


@pytest.mark.slow
def test_demo_fit_equals_predict(tmp_path, monkeypatch):
    """fit = predict on the shipped demo config (at 10 of its 200 iterates, to keep the suite
    short), and predict's full run gives the README's PSNR figures."""
    short = ("--model.solver.init_args.num_steps", "10")
    fit = run("fit", tmp_path / "fit", monkeypatch, *short)
    pred = run("predict", tmp_path / "predict_40", monkeypatch, *short)
    assert sorted(fit) == sorted(pred) == ["chelsea", "chelsea_face", "coffee", "motorcycle"]
    for name in fit:
        assert (fit[name] - pred[name]).abs().max() <= 1e-5, name
        a = np.asarray(Image.open(tmp_path / "fit" / "restored" / f"{name}.png"))
        b = np.asarray(Image.open(tmp_path / "predict_40" / "restored" / f"{name}.png"))
        assert np.array_equal(a, b), name
    # fit logged one row per iterate to the CSV logger
    logged = (tmp_path / "fit" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/psnr" in logged and "train/loss_obs" in logged
    # the README's demo figures: mean PSNR 18.16 dB (masked input) -> 24.48 dB (restored)
    run("predict", tmp_path / "predict", monkeypatch)
    rows = list(csv.DictReader(open(tmp_path / "predict" / "metrics.csv", newline="")))
    mean = sum(float(r["psnr"]) for r in rows) / len(rows)
    start = sum(float(r["psnr_init"]) for r in rows) / len(rows)
    assert abs(mean - 24.48) < 0.02 and abs(start - 18.16) < 0.01, (mean, start)


def test_missing_checkpoint_is_named_and_nothing_written(tmp_path, monkeypatch):
    # jsonargparse re-raises the prior's FileNotFoundError inside its own ValueError
    with pytest.raises((FileNotFoundError, ValueError), match=r"(?s)no embedded prior checkpoint at \S*nowhere.safetensors"):
        run("predict", tmp_path / "bad", monkeypatch, "--model.prior.init_args.checkpoint", str(tmp_path / "nowhere.safetensors"))
    assert not (tmp_path / "bad" / "restored").exists()
