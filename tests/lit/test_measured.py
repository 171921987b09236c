"""Measured data (``MeasuredFolderData``): the user's own y, masks and kernels read from files.

* Round trip: the demo images measured synthetically, y (and masks, kernels) saved as files,
  restored from the files: the same result as the synthetic run (y saved as float64 ``.npy``
  round-trips exactly; the bound below covers the kernel deblur, whose per-image transfer
  functions are computed batched instead of shared).
* Every bad input named with its file and fix, all in one error, before any compute.
* Without ground truth ``metrics.csv`` holds the data consistency; two gloo processes give the
  one-process result.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image

from lightning_redd.data.folder import ImageFolderData, InputProblems
from lightning_redd.data.measured import MeasuredFolderData, read_measurement, write_measurement
from lightning_redd.lit.module import RestorationModule
from lightning_redd.operators.blur import GaussianBlur, KernelBlur
from lightning_redd.operators.denoising import Denoising
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.jpeg import CHROMA_TABLE, JPEG, LUMA_TABLE, scaled_table
from lightning_redd.operators.super_resolution import BlockAverageSR
from lightning_redd.solvers.red_diff import RedDiff

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
KEYS = [(i, 0, False) for i in range(4)]  # the 4 demo images in one batch
PAIR = KEYS[:2]  # the round trips restore 2 of them (seconds each)


@pytest.fixture(scope="module")
def prior():
    from lightning_redd.priors.embedded import EmbeddedPrior

    return EmbeddedPrior()


def solve(prior, operator, data) -> tuple[RestorationModule, "Restored"]:  # noqa: F821
    module = RestorationModule(operator=operator, prior=prior, solver=RedDiff(num_steps=STEPS, lr=0.5, lam=0.05))
    batch = data.check()[PAIR]
    return module, module.predict_step(batch, 0)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


KERNEL = GaussianBlur(kernel_size=15, sigma=1.5).kernel[0, 0]
TASKS = {  # synthetic operator, its file-fed twin, and what each image's files hold
    "inpainting": (lambda: Inpainting(mask="strokes", coverage=(0.2, 0.3)), lambda: Inpainting(mask="file"), "mask"),
    "sr4": (lambda: BlockAverageSR(factor=4, sigma_y=0.01), lambda: BlockAverageSR(factor=4, sigma_y=0.01), None),
    "deblur": (lambda: GaussianBlur(kernel_size=15, sigma=1.5, sigma_y=0.01), lambda: KernelBlur(sigma_y=0.01), "kernel"),
    "jpeg": (lambda: JPEG(quality=10), lambda: JPEG(quality=10), None),
}
#: largest |difference| of the restored float images, file-fed vs synthetic (measured: 0 for
#: inpainting, SR and JPEG; ~1e-6 for the kernel deblur, float32 rounding of batched FFTs)
ROUND_TRIP_BOUND = {"inpainting": 0.0, "sr4": 0.0, "deblur": 1e-4, "jpeg": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_restoring_from_files_equals_the_synthetic_run(prior, tmp_path, task):
    synthetic, fed, param = TASKS[task]
    clean = ImageFolderData(root="package:demo", image_size=64, output_dir=str(tmp_path / "o1"))
    module, first = solve(prior, synthetic(), clean)
    names = first.names
    for i, name in enumerate(names):  # what the user's files would hold
        write_measurement(tmp_path / "y" / f"{name}.npy", first.y[i])
    if param == "mask":
        op, _ = module.measure(clean.check()[PAIR])
        for i, name in enumerate(names):
            _png(tmp_path / "masks" / f"{name}.png", (op.mask[i, 0] * 255).byte().numpy())
    if param == "kernel":
        for name in names:
            (tmp_path / "kernels").mkdir(exist_ok=True)
            np.save(tmp_path / "kernels" / f"{name}.npy", KERNEL.double().numpy())
    operator = fed()
    folders = {"mask": str(tmp_path / "masks")} if param == "mask" else {"kernel": str(tmp_path / "kernels")} if param else None
    measured = MeasuredFolderData(root=str(tmp_path / "y"), image_size=64, output_dir=str(tmp_path / "o2"),
                                  ground_truth="package:demo", param_folders=folders, file_params=operator.file_params())
    module2, second = solve(prior, operator, measured)
    assert second.names == names
    assert torch.equal(second.y, first.y) or param == "mask"  # y read back exactly
    diff = (second.x_hat - first.x_hat).abs().max().item()
    assert diff <= ROUND_TRIP_BOUND[task], diff
    assert second.consistency["residual"].shape == (2,)


def test_measurement_files_read_back(tmp_path):
    y = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # noisy: leaves [-1, 1]
    write_measurement(tmp_path / "a.npy", y)
    assert torch.equal(read_measurement(tmp_path / "a.npy"), y)  # float64 .npy: exact, not clipped
    gray = y[:1].clamp(-1, 1)
    write_measurement(tmp_path / "g.png", gray)
    back = read_measurement(tmp_path / "g.png", channels=1)
    assert (back - gray).abs().max() <= 1 / 65535 + 1e-7  # 16-bit gray: half a step of [0, 1] is 2 / 65535 / 2
    write_measurement(tmp_path / "c.png", y)
    assert (read_measurement(tmp_path / "c.png") - y.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6  # 8-bit RGB
    assert read_measurement(tmp_path / "g.png", channels=3).shape == (3, 8, 8)  # gray replicated


def test_jpeg_files_give_their_own_tables_and_match_the_operator(tmp_path):
    """A real JPEG file (PIL's encoder): the tables read from it are libjpeg's quality tables,
    and the operator's decoded y of the clean image is close to the file's: measured over the
    4 demo images, mean |difference| 1.6/2.0/2.5 levels at q 10/50/90 with nearest chroma
    upsampling, 0.85/1.05/1.27 with ``bilinear`` (libjpeg's fancy upsampling); the rest is
    libjpeg's integer DCT and its rounding of the input."""
    from lightning_redd.operators.file_params import read_jpeg_tables
    from lightning_redd.operators.jpeg import jpeg_quality

    x = ImageFolderData(root="package:demo", image_size=64, output_dir=str(tmp_path / "o")).check()[KEYS]["x"]
    for q, nearest_bound, bilinear_bound in ((10, 1.7, 0.95), (50, 2.1, 1.15), (90, 2.6, 1.4)):
        errors = {"nearest": [], "bilinear": []}
        for i in range(4):
            img = Image.fromarray(((x[i] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
            img.save(tmp_path / f"{i}.jpg", quality=q, subsampling=2)
            tables = read_jpeg_tables(tmp_path / f"{i}.jpg")
            assert torch.equal(tables["jpeg_luma"], scaled_table(LUMA_TABLE, q)) and jpeg_quality(tables["jpeg_luma"]) == q
            assert torch.equal(tables["jpeg_chroma"], scaled_table(CHROMA_TABLE, q))
            clean = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1)[None]
            for mode in errors:
                ours = JPEG(quality=q, chroma_upsampling=mode).measure(clean, [None])
                errors[mode].append(((ours[0] - read_measurement(tmp_path / f"{i}.jpg")).abs() * 127.5).mean().item())
        assert np.mean(errors["nearest"]) < nearest_bound and np.mean(errors["bilinear"]) < bilinear_bound, (q, errors)


def test_consistency_of_a_closed_form_case():
    """Identity operator: the residual of ``x_hat = y - d`` is ``||d||``; its RMS / 2 is the
    implied sigma_y."""
    op = Denoising(sigma_y=0.1).bind([0, 1], (3, 4, 4))
    y = torch.zeros(2, 3, 4, 4)
    d = torch.full((2, 3, 4, 4), 0.2)
    got = RestorationModule.consistency(op, y - d, y)
    assert torch.allclose(got["residual"], torch.full((2,), 0.2 * 48**0.5, dtype=torch.float64))
    assert torch.allclose(got["sigma_y_implied"], torch.full((2,), 0.1, dtype=torch.float64))
    assert torch.equal(got["sigma_y"], torch.full((2,), 0.1, dtype=torch.float64))
    masked = Inpainting(mask="half").bind([0], (3, 4, 4))  # only the observed half counts
    r = RestorationModule.consistency(masked, torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4))
    assert torch.allclose(r["sigma_y_implied"], torch.tensor([0.5], dtype=torch.float64))


# ---------------------------------------------------------------------- errors, all at once
def _cli(*args: str):
    from lightning_redd.lit.cli import cli

    return cli(list(args))


@pytest.mark.slow
def test_every_bad_file_is_named_at_once(tmp_path):
    y, masks, kernels = tmp_path / "y", tmp_path / "masks", tmp_path / "kernels"
    for name, size in (("a", 64), ("b", 64), ("c", 64), ("d", 32)):
        _png(y / f"{name}.png", np.zeros((size, size, 3), np.uint8))
    _png(masks / "a.png", np.full((64, 64), 255, np.uint8))
    _png(masks / "b.png", np.full((60, 64), 255, np.uint8))  # wrong size; c has none
    kernels.mkdir()
    np.save(kernels / "a.npy", np.full((5, 5), 0.05))  # sums to 1.25
    np.save(kernels / "b.npy", np.full((65, 65), 1 / 65**2))  # larger than the image
    np.save(kernels / "c.npy", np.full((4, 4), 1 / 16))  # even
    messages = {}
    for config, kind, folder in (("deblur", "kernel", kernels), ("inpainting", "mask", masks)):
        with pytest.raises(InputProblems) as info:
            _cli("predict", "--config", f"configs/measured/{config}.yaml", "--data.root", str(y), "--data.ground_truth",
                 "null", f"--data.param_folders={{{kind}: {folder}}}", "--trainer.default_root_dir", str(tmp_path / "out"))
        messages[kind] = str(info.value)
    mixed = (r"measurements of mixed sizes in .*y \(64x64: 3 file\(s\) \(a.png, b.png, c.png\); 32x32: 1 file\(s\) "
             r"\(d.png\)\); one run restores one size")
    for kind, expected in (
        ("mask", mixed),
        ("mask", r"masks.b.png is 64x60 but its image is 64x64; give masks of the image's size"),
        ("mask", r"no mask for image 'c' in .*masks: add c.png"),
        ("mask", r"no mask for image 'd'"),
        ("kernel", mixed),
        ("kernel", r"kernels.a.npy sums to 1.25, not 1; divide it by its sum"),
        ("kernel", r"kernels.b.npy is 65x65, larger than the 64x64 image; crop it"),
        ("kernel", r"kernels.c.npy is 4x4; kernels must be square with an odd side"),
        ("kernel", r"no kernel for image 'd' in .*kernels: add d.npy"),
    ):
        assert __import__("re").search(expected, messages[kind]), (expected, messages[kind])
    assert "4 problem(s), nothing was restored" in messages["mask"]
    assert "5 problem(s), nothing was restored" in messages["kernel"]
    assert not (tmp_path / "out" / "restored").exists()
    with pytest.raises(InputProblems, match=r"data.param_folders.mask is set, but the operator reads no mask files "
                                            r"\(it reads: kernel\)"):
        _cli("predict", "--config", "configs/measured/deblur.yaml", "--data.root", str(y), "--data.ground_truth", "null",
             f"--data.param_folders={{mask: {masks}, kernel: {kernels}}}", "--trainer.default_root_dir", str(tmp_path / "o"))


@pytest.mark.slow
def test_an_sr_factor_that_does_not_fit_the_prior_is_named(tmp_path):
    for name in ("a", "b"):
        _png(tmp_path / "y" / f"{name}.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(InputProblems, match=r"are 32x32, but BlockAverageSR makes 16x16 measurements of the prior's 64x64 "
                                            r"images; these fit factor 2: set model.operator.init_args.factor 2"):
        _cli("predict", "--config", "configs/measured/sr4.yaml", "--data.root", str(tmp_path / "y"),
             "--data.ground_truth", "null", "--trainer.default_root_dir", str(tmp_path / "out"))
    _png(tmp_path / "y2" / "b.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputProblems, match=r"no ground truth for measurement 'a' in .*y2: add a.png, or set data.ground_truth null"):
        _cli("predict", "--config", "configs/measured/sr4.yaml", "--data.root", str(tmp_path / "y"),
             "--data.ground_truth", str(tmp_path / "y2"), "--trainer.default_root_dir", str(tmp_path / "out"))


# ---------------------------------------------------------------------- the CLI, 1 and 2 processes
MEASURED_RUN = ("predict", "--config", "configs/measured/sr4.yaml", "--data.ground_truth", "null",
                "--trainer.enable_progress_bar", "false", "--model.solver.init_args.num_steps", "4",
                "--data.batch_size", "1", "--data.limit", "2")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_measured_run_without_ground_truth_on_one_and_two_processes(tmp_path, monkeypatch):
    """One process (in this one) and two (gloo, a fresh interpreter) give the same table and images."""
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.chdir(ROOT)  # the config's data.root is relative to the repository
    _cli(*MEASURED_RUN, "--trainer.default_root_dir", str(one))
    run_cli([*MEASURED_RUN, "--trainer.default_root_dir", str(two)], ROOT, 2)  # checks that 2 ranks started
    rows = [list(csv.DictReader(open(d / "metrics.csv"))) for d in (one, two)]
    assert [r["name"] for r in rows[0]] == [r["name"] for r in rows[1]] == ["chelsea", "chelsea_face"]
    assert list(rows[0][0]) == ["name", "status", "residual", "sigma_y_implied", "sigma_y"]  # no scores without ground truth
    for a, b in zip(*rows):
        assert a["name"] == b["name"] and b["status"] == "ok"
        for k in ("residual", "sigma_y_implied"):  # float-level differences only (thread counts)
            assert abs(float(a[k]) - float(b[k])) <= 2e-4, (k, a, b)
        implied = float(a["residual"]) / (3 * 16 * 16) ** 0.5 / 2  # RMS / 2 over the 16x16 RGB measurement
        assert float(a["sigma_y"]) == 0.01 and abs(float(a["sigma_y_implied"]) - implied) < 1e-4
    for name in ("chelsea", "chelsea_face"):  # within the README's bound between process counts (3 levels)
        pa, pb = (np.asarray(Image.open(d / "restored" / f"{name}.png")).astype(int) for d in (one, two))
        assert np.abs(pa - pb).max() <= 3, name
