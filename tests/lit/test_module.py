"""The LightningModule, DataModule, writer and CLI on a tiny prior (fast, CPU)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_redd.lit.cli import cli
from helpers import capture_writes, make_images, tiny_args, written

IMG = 16


def args(tmp_path: Path, images: Path, out: str, *extra: str, subcommand: str = "predict") -> list[str]:
    return tiny_args(tmp_path / out, images, *extra, subcommand=subcommand, size=IMG)


def restored(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((root / "restored").glob("*.png"))}






@pytest.mark.slow
def test_fit_and_predict_write_the_same_images(tmp_path, monkeypatch):
    images = make_images(tmp_path / "in")
    seen = capture_writes(monkeypatch)
    cli(args(tmp_path, images, "fit", "--data.batch_size", "2", subcommand="fit"))
    fit = written(seen)
    seen.clear()
    cli(args(tmp_path, images, "pred", "--data.batch_size", "2"))
    pred = written(seen)
    assert sorted(fit) == sorted(pred) == ["img0", "img1", "img2"]
    for name in fit:
        assert (fit[name] - pred[name]).abs().max() <= 1e-5
    a, b = restored(tmp_path / "fit"), restored(tmp_path / "pred")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "pred" / "metrics.csv")))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    assert set(rows[0]) == {"name", "status", "psnr", "ssim", "psnr_init", "ssim_init"}
    assert not list((tmp_path / "pred").rglob("*.tmp"))


@pytest.mark.slow
def test_batch_size_and_batch_mates_do_not_matter(tmp_path, monkeypatch):
    images = make_images(tmp_path / "in", n=4)
    seen = capture_writes(monkeypatch)
    cli(args(tmp_path, images, "b1", "--data.batch_size", "1"))
    one = written(seen)
    seen.clear()
    cli(args(tmp_path, images, "b3", "--data.batch_size", "3"))
    three = written(seen)
    seen.clear()
    cli(args(tmp_path, images, "lim", "--data.batch_size", "2", "--data.limit", "2"))
    limited = written(seen)
    for name in one:
        assert (one[name] - three[name]).abs().max() <= 1e-5
    for name in limited:
        assert (one[name] - limited[name]).abs().max() <= 1e-5


@pytest.mark.slow
def test_skip_existing_resumes_without_redoing(tmp_path, monkeypatch):
    images = make_images(tmp_path / "in")
    seen = capture_writes(monkeypatch)
    cli(args(tmp_path, images, "run", "--data.limit", "2"))
    first = written(seen)
    seen.clear()
    cli(args(tmp_path, images, "run"))  # the same command again (without the limit): resumes
    assert sorted(written(seen)) == ["img2"]  # only the unfinished image was written
    assert [list(b.names) for b in seen] == [["img0", "img1", "img2"]]  # in its batch of the full list
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    assert sorted(restored(tmp_path / "run")) == sorted(first) + ["img2"]


@pytest.mark.slow
def test_mixed_precision_keeps_mu_float32(tmp_path, monkeypatch):
    images = make_images(tmp_path / "in", n=1)
    seen = capture_writes(monkeypatch)
    cli(args(tmp_path, images, "bf16", "--trainer.precision", "bf16-mixed"))
    assert seen[0].x_hat.dtype == torch.float32


# --------------------------------------------------------------------------- bad input
def test_non_image_file_is_named_and_nothing_written(tmp_path):
    images = make_images(tmp_path / "in")
    (images / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt.*skip_non_images"):
        cli(args(tmp_path, images, "bad"))
    assert not (tmp_path / "bad" / "restored").exists()


def test_broken_image_file_is_named(tmp_path):
    images = make_images(tmp_path / "in")
    (images / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"unreadable.*broken.png"):
        cli(args(tmp_path, images, "bad"))
    assert not (tmp_path / "bad" / "restored").exists()


def test_unknown_option_value_is_rejected_with_choices(tmp_path, capsys):
    images = make_images(tmp_path / "in")
    with pytest.raises(SystemExit):
        cli(args(tmp_path, images, "bad", "--model.solver.init_args.weighting", "cubic"))
    err = capsys.readouterr().err
    assert "weighting" in err and "linear" in err
    assert not (tmp_path / "bad").exists()


def test_mask_file_of_wrong_size_is_named(tmp_path):
    images = make_images(tmp_path / "in", n=1)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((7, 9), 255, np.uint8)).save(masks / "img0.png")
    with pytest.raises(ValueError, match=r"mask .*img0.png is 9x7 but its image is \d+x\d+ \(source \d+x\d+\); give masks"):
        cli(args(tmp_path, images, "bad", "--model.operator.init_args.mask", "file", f"--data.param_folders={{mask: {masks}}}"))
    assert not (tmp_path / "bad" / "restored").exists()


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        cli(args(tmp_path, tmp_path / "nowhere", "bad"))


@pytest.mark.slow
def test_lightning_checkpoints_leave_the_frozen_prior_out(tmp_path):
    """A Lightning checkpoint of the module holds no prior weights (the prior is reloaded from
    its own file), and loading such a checkpoint restores the module's own prior."""
    from lightning_redd.lit.module import RestorationModule

    images = make_images(tmp_path / "in", n=1)
    app = cli(args(tmp_path, images, "fit", subcommand="fit"))
    path = tmp_path / "module.ckpt"
    app.trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("prior.")]
    module = app.model
    before = {k: v.clone() for k, v in module.prior.state_dict().items()}
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"], strict=True)
    assert all(torch.equal(before[k], v) for k, v in module.prior.state_dict().items())
    assert isinstance(module, RestorationModule)
