"""``data.resize: none`` end to end (CLI, in process, tiny priors): images restored at their own
H x W, batched by size, the prior tiled by itself away from its own size.

The wrapper itself (bit-identical at the prior's size, exact with the Gaussian prior, seams on
4x4 tiles, gradients, chunking) is tested in ``tests/priors/test_tiled.py``; here: what the
run does with it.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import capture_writes, output_files, tiny_args, written
from PIL import Image

from lightning_redd.data.folder import InputProblems
from lightning_redd.lit.cli import cli
from lightning_redd.priors.tiled import TiledPrior

#: name -> (H, W): two sizes shared by two images each, one odd non-square size, one of the prior's size
SIZES = {"a": (20, 24), "b": (24, 40), "c": (20, 24), "d": (16, 16), "e": (24, 40), "f": (21, 35)}


def mixed_folder(folder: Path, sizes: dict[str, tuple[int, int]] = SIZES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name, (h, w) in sizes.items():
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder






def rows(root: Path) -> list[dict]:
    with open(root / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_images_keep_their_sizes_and_batches_hold_one_size(tmp_path, monkeypatch):
    """Six images of four sizes, batch 2 (synthetic degradation, ``fit``): every restored PNG has
    its file's size, no batch mixes sizes, a size group's images share batches in index order,
    one metrics row per image; the prior (declared 16 px) is tiled by itself at every other size."""
    images = mixed_folder(tmp_path / "in")
    seen = capture_writes(monkeypatch)
    made: list = []
    original = TiledPrior.__init__
    monkeypatch.setattr(TiledPrior, "__init__", lambda self, *a, **k: (made.append(k), original(self, *a, **k))[1])
    cli(tiny_args(tmp_path / "out", images, "--data.resize", "none", "--data.batch_size", "2", "--model.prior",
                  "helpers.SizedConvPrior", "--model.tiling.tile_batch", "3", "--model.tiling.overlap", "2",
                  subcommand="fit", steps=3))
    assert [list(b.names) for b in seen] == [["a", "c"], ["b", "e"], ["d"], ["f"]]
    for name, (h, w) in SIZES.items():
        assert Image.open(tmp_path / "out" / "restored" / f"{name}.png").size == (w, h)
    assert [r["name"] for r in rows(tmp_path / "out")] == sorted(SIZES)
    assert len(made) == 3 and all(k["tile_batch"] == 3 and k["overlap"] == 2 for k in made)  # 20x24, 24x40, 21x35; not 16x16


@pytest.mark.slow
def test_batch_mates_and_batch_size_do_not_matter(tmp_path, monkeypatch):
    """The same mixed folder in batches of 1 and of 3: every image's estimate equals (measured:
    bit for bit; bound 1e-6) and the PNGs are identical."""
    images = mixed_folder(tmp_path / "in")
    seen = capture_writes(monkeypatch)
    out = {}
    for b in (1, 3):
        seen.clear()
        cli(tiny_args(tmp_path / f"b{b}", images, "--data.resize", "none", "--data.batch_size", str(b),
                      "--model.prior", "helpers.SizedConvPrior", steps=3))
        out[b] = written(seen)
    assert sorted(out[1]) == sorted(out[3]) == sorted(SIZES)
    for name in SIZES:
        assert (out[1][name] - out[3][name]).abs().max() <= 1e-6
    assert output_files(tmp_path / "b1")["restored/b.png"] == output_files(tmp_path / "b3")["restored/b.png"]


@pytest.mark.slow
def test_an_image_of_the_prior_s_size_is_restored_as_without_resize_none(tmp_path):
    """16x16 images at a 16 px prior: ``resize: none`` gives byte for byte the default run's
    files (the module uses the prior itself at its own size)."""
    images = mixed_folder(tmp_path / "in", {"p": (16, 16), "q": (16, 16)})
    cli(tiny_args(tmp_path / "default", images, "--model.prior", "helpers.SizedConvPrior", steps=3))
    cli(tiny_args(tmp_path / "none", images, "--data.resize", "none", "--model.prior", "helpers.SizedConvPrior", steps=3))
    assert output_files(tmp_path / "none") == output_files(tmp_path / "default")


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["red_diff.RedDiff", "dps.DPS"])
def test_closed_form_the_tiled_run_equals_the_untiled_run(tmp_path, monkeypatch, solver):
    """The analytic Gaussian prior (independent pixels) declared 16 px, so the module tiles it at
    20x24, 24x40 and 21x35, against the same prior undeclared (any size, untiled): RED-diff and
    DPS (gradients through the tiles) give the same estimates to float precision (bound 1e-4)."""
    images = mixed_folder(tmp_path / "in")
    seen = capture_writes(monkeypatch)
    out = {}
    for name, prior in (("tiled", "helpers.SizedGaussianPrior"), ("plain", "lightning_redd.priors.gaussian.GaussianPrior")):
        seen.clear()
        extra = ["--model.prior.init_args.mean", "0.1"] + (["--model.tiling.shift", "time"] if name == "tiled" else [])
        cli(tiny_args(tmp_path / name, images, "--data.resize", "none", "--data.batch_size", "2", "--model.prior", prior,
                      *extra, "--model.solver", f"lightning_redd.solvers.{solver}", "--model.solver.init_args.num_steps", "8"))
        out[name] = written(seen)
    for name in SIZES:
        assert out["tiled"][name].shape[-2:] == SIZES[name]
        torch.testing.assert_close(out["tiled"][name], out["plain"][name], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_sizes_the_operator_refuses_are_named_before_compute(tmp_path, capsys):
    """Block SR x4 on images of 20x24, 21x35 and 24x40: the 21x35 image is named with the
    operator's fix, nothing is written."""
    images = mixed_folder(tmp_path / "in", {"a": (20, 24), "f": (21, 35), "b": (24, 40)})
    argv = tiny_args(tmp_path / "out", images, "--data.resize", "none", "--model.operator",
                     "lightning_redd.operators.super_resolution.BlockAverageSR", "--model.operator.init_args.factor", "4")
    with pytest.raises(InputProblems) as err:
        cli(argv)
    message = str(err.value)
    assert "f.png: 35x21" in message and "a.png" not in message and "b.png" not in message
    assert "data.resize none" in message and "20" in message  # the nearest size the factor divides
    assert not (tmp_path / "out" / "restored").exists()


@pytest.mark.slow
def test_measurements_of_mixed_sizes_are_restored_at_the_sizes_they_come_from(tmp_path, monkeypatch):
    """Block SR x4 measurements (float64 ``.npy``) of 20x24, 24x40 and 16x16 images in one folder,
    ``data.resize none``: each restored at 4 times its measurement's size, equal (bound 1e-5) to
    the synthetic run of the clean images; one metrics row per measurement."""
    import numpy as np

    from lightning_redd.data.images import load_image
    from lightning_redd.data.measured import write_measurement
    from lightning_redd.operators.super_resolution import BlockAverageSR

    sizes = {"a": (20, 24), "b": (24, 40), "d": (16, 16), "e": (24, 40)}
    images = mixed_folder(tmp_path / "in", sizes)
    (tmp_path / "y").mkdir()
    for name in sizes:
        x = load_image(images / f"{name}.png", 0, 3, "none")[None]
        write_measurement(tmp_path / "y" / f"{name}.npy", BlockAverageSR(factor=4, sigma_y=0.0).bind([0], x.shape[1:]).measure(x, [None])[0])
    common = ("--data.resize", "none", "--data.batch_size", "2", "--model.prior", "helpers.SizedConvPrior",
              "--model.operator", "lightning_redd.operators.super_resolution.BlockAverageSR",
              "--model.operator.init_args.factor", "4", "--model.operator.init_args.sigma_y", "0.0")
    seen = capture_writes(monkeypatch)
    cli(tiny_args(tmp_path / "synthetic", images, *common, steps=3))
    synthetic = written(seen)
    seen.clear()
    cli(tiny_args(tmp_path / "measured", tmp_path / "y", *common, "--data", "lightning_redd.data.measured.MeasuredFolderData",
                  "--data.root", str(tmp_path / "y"), "--data.ground_truth", str(images), steps=3))
    measured = written(seen)
    for name, (h, w) in sizes.items():
        assert measured[name].shape[-2:] == (h, w)
        torch.testing.assert_close(measured[name], synthetic[name], rtol=0, atol=1e-5)
    assert [r["name"] for r in rows(tmp_path / "measured")] == sorted(sizes)
    assert np.isfinite([float(r["psnr"]) for r in rows(tmp_path / "measured")]).all()


def test_the_image_size_of_a_measurement_is_found_or_refused():
    """Block SR, phase retrieval (rounded padding) and an operator that makes no odd side."""
    from lightning_redd.data.measured import image_size_for
    from lightning_redd.operators.phase_retrieval import PhaseRetrieval
    from lightning_redd.operators.super_resolution import BlockAverageSR

    sr = BlockAverageSR(factor=4)
    assert image_size_for(sr.output_shape, 3, 64, (5, 9)) == (20, 36)
    pr = PhaseRetrieval()
    for hw in ((20, 24), (21, 35), (64, 64)):
        made = tuple(pr.output_shape((3, *hw))[1:])
        assert tuple(pr.output_shape((3, *image_size_for(pr.output_shape, 3, 64, made)))[1:]) == made
    assert image_size_for(lambda s: (s[0], 2 * s[1], 2 * s[2]), 3, 64, (7, 8)) is None


@pytest.mark.slow
def test_every_metric_scores_images_at_their_own_size(tmp_path, alexnet_weights, inception_weights, resnet_weights):
    """psnr, ssim, lpips, top1 per image and kid, fid over the run, on images of two sizes (32x40
    and 40x56; LPIPS-alex needs 31 px a side): one row per image, finite per-image scores, dataset
    metrics present (Inception and the classifier resize internally, the others score at full size)."""
    import json

    sizes = {"a": (32, 40), "b": (40, 56)}
    images = mixed_folder(tmp_path / "in", sizes)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({n: i for i, n in enumerate(sizes)}))
    cli(tiny_args(tmp_path / "out", images, "--data.resize", "none", "--model.prior", "helpers.SizedConvPrior", "--metrics.names=[psnr,ssim,lpips,top1,kid,fid]",
                  f"--metrics.lpips_weights={alexnet_weights}", f"--metrics.inception_weights={inception_weights}",
                  "--metrics.classifier=resnet18.tv_in1k", f"--metrics.classifier_weights={resnet_weights}",
                  f"--metrics.labels={labels}", steps=2))
    table = rows(tmp_path / "out")
    assert [r["name"] for r in table] == sorted(sizes)
    assert all(np.isfinite(float(r[k])) for r in table for k in ("psnr", "ssim", "lpips", "top1"))
    dataset = json.loads((tmp_path / "out" / "summary.json").read_text())["dataset"]
    assert {"kid", "fid"} <= {k.split("_")[0] for k in dataset}
