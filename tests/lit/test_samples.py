"""Several posterior samples per image (``data.samples_per_image``, issue 26 part B): seeds,
sharding, the refusal of a bad value, and end-to-end runs on the tiny prior (three different
samples; the standard deviation zero where a noise-free measurement pins a pixel; sample ``k``
the same whatever the sample count and batch size; one sample as before, byte for byte; two
processes as one; a crash between an image's samples, then the same command)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import capture_writes, make_images, output_files, run_cli, tiny_args
from PIL import Image

from lightning_redd import seeding
from lightning_redd.data.folder import ImageFolderData
from lightning_redd.data.sampling import ShardedBatches
from lightning_redd.lit.cli import cli
from lightning_redd.lit.samples import STD_WHITE, mean_and_std, sample_name, std_image
from lightning_redd.runs import config as run_config
from lightning_redd.runs import fsio
from lightning_redd.runs.checks import foreign_files
from lightning_redd.runs.manifest import Manifest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


# --------------------------------------------------------------------------- units
def test_sample_zero_keeps_the_one_sample_seed_and_other_samples_get_their_own():
    for stream in seeding.STREAMS:
        assert seeding.image_seed(3, 7, stream, 0) == seeding.image_seed(3, 7, stream)
    seeds = {seeding.image_seed(3, 7, "solver", k) for k in range(5)}
    assert len(seeds) == 5
    assert seeding.image_seed(3, 8, "solver") not in seeds  # nor another image's stream
    with pytest.raises(ValueError, match="sample"):
        seeding.image_seed(0, 0, "solver", -1)


def test_every_sample_of_an_image_goes_to_the_rank_that_owns_it():
    indices = range(5)
    for world in (1, 2):
        units = []
        for rank in range(world):
            mine = [key for batch in ShardedBatches(list(range(5)), indices, batch_size=2, num_replicas=world, rank=rank,
                                                    samples=3) for key in batch]
            images = {i for i, *_ in mine}
            assert images == set(list(indices)[rank::world])
            assert [(i, s) for i, _, _, _, s in mine] == [(i, k) for i in sorted(images) for k in range(3)]
            units += mine
        assert len(units) == 15
    one = list(ShardedBatches(list(range(5)), indices, batch_size=2))
    assert one == [[(0, 0, False, False, 0), (1, 0, False, False, 0)], [(2, 0, False, False, 0), (3, 0, False, False, 0)],
                   [(4, 0, False, False, 0)]]


def test_a_batch_is_skipped_only_when_every_image_it_holds_is_finished():
    sampler = ShardedBatches(list(range(5)), range(3), batch_size=2, samples=3, done={0})
    # units (0,0) (0,1) | (0,2) (1,0) | (1,1) (1,2) | (2,0) (2,1) | (2,2): the first batch is image 0's only
    assert [[(i, s) for i, *_, s in b] for b in sampler.batches(0)][0] == [(0, 2), (1, 0)]
    assert [k[3] for k in next(iter(sampler))] == [True, False]  # image 0's last sample: solved, not written


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_samples_per_image_below_one_is_refused_naming_the_fix(tmp_path, bad):
    with pytest.raises(ValueError, match=r"samples_per_image must be an integer >= 1.*set it to 1"):
        ImageFolderData(root=str(tmp_path), samples_per_image=bad)


def test_one_sample_leaves_the_run_signature_and_folder_as_they_were():
    base = {"data": {"root": "/x", "seed": 0}, "model": {"a": 1}}
    one = run_config.signature({**base, "data": {**base["data"], "samples_per_image": 1}})
    three = run_config.signature({**base, "data": {**base["data"], "samples_per_image": 3}})
    assert one == run_config.signature(base)
    assert three["data.samples_per_image"] == 3 and run_config.folder_name(three, []) != run_config.folder_name(one, [])


def test_the_paper_time_grid_leaves_a_red_diff_run_signature_and_folder_as_they_were():
    """time_grid came after runs were recorded: at "linear" (what every earlier run did) the signature, and so the
    folder and the resume check, are those of a run recorded without the key; "quadratic" is a setting of its own."""
    base = {"data": {"root": "/x", "seed": 0}, "model": {"solver": {"class_path": "R", "init_args": {"num_steps": 100}}}}
    def with_grid(grid):
        return run_config.signature({**base, "model": {"solver": {"class_path": "R", "init_args": {"num_steps": 100, "time_grid": grid}}}})
    assert with_grid("linear") == run_config.signature(base)
    quad = with_grid("quadratic")
    assert quad["model.solver.init_args.time_grid"] == "quadratic"
    assert run_config.folder_name(quad, []) != run_config.folder_name(with_grid("linear"), [])
    assert run_config.differences(run_config.signature(base), with_grid("linear")) == []


def test_mean_and_std_maps():
    samples = torch.tensor([[[[0.0, 1.5]]], [[[0.5, 1.0]]], [[[1.0, 0.0]]]])  # (3, 1, 1, 2); 1.5 is clipped to 1
    mean, std = mean_and_std(samples)
    levels = torch.tensor([[128, 255], [191, 255], [255, 128]], dtype=torch.float64) / 127.5 - 1  # as saved
    assert torch.allclose(mean, levels.mean(0).float().view(1, 1, 2))
    assert torch.allclose(std, (levels.std(0) / 2).view(1, 1, 2))
    img = std_image(torch.tensor([[[0.0, STD_WHITE / 2, 1.0]]] * 3, dtype=torch.float64))
    assert img.shape == (1, 1, 3) and torch.allclose(img, torch.tensor([[[-1.0, 0.0, 1.0]]]))
    assert sample_name("a_s1", 0) == "a_s1_s0"


# --------------------------------------------------------------------------- whole runs
def run(tmp_path: Path, images: Path, out: str, *extra: str, **kwargs) -> Path:
    cli(tiny_args(tmp_path / out, images, *extra, steps=3, **kwargs))
    return tmp_path / out


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int32)


@pytest.mark.slow
def test_three_samples_differ_and_the_run_writes_their_mean_std_grid_and_spread(tmp_path):
    images = make_images(tmp_path / "in", n=2)
    out = run(tmp_path, images, "n3", "--data.samples_per_image", "3", "--data.batch_size", "2")
    for name in ("img0", "img1"):
        s = [png(out / "samples" / f"{name}_s{k}.png") for k in range(3)]
        assert all(not np.array_equal(s[a], s[b]) for a, b in ((0, 1), (0, 2), (1, 2)))
        mean = png(out / "restored" / f"{name}.png")
        assert np.abs(mean - np.mean(s, axis=0)).max() <= 1  # the mean of the float samples, rounded
        assert png(out / "std" / f"{name}.png").ndim == 2
        grid = png(out / "grids" / f"{name}.png")  # measured | init | 3 samples | mean | std | truth
        assert grid.shape[1] == 8 * (16 + 2) - 2
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["name"] for r in rows] == ["img0", "img1"]
    for col in ("psnr", "ssim", "psnr_init", "std_mean", "psnr_samples_mean", "psnr_samples_std", "ssim_samples_mean"):
        assert all(r[col] != "" for r in rows), col
    assert all(float(r["std_mean"]) > 0 and float(r["psnr_samples_std"]) > 0 for r in rows)
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["img0.png", "img1.png"]
    assert foreign_files(out) == [] and all((out / p).is_file() for p in Manifest(out).listed())


@pytest.mark.slow
def test_noise_free_inpainting_pins_the_observed_pixels_so_their_std_is_zero(tmp_path, monkeypatch):
    """DDRM at ``sigma_y = 0`` (``eta_b = 1``) sets every observed spectral coordinate to
    ``ybar`` at its last step, and inpainting's SVD is a selection of pixels: each sample keeps
    the observed pixels exactly (measured: std 0.0 there), so the tolerance is float rounding,
    1e-6 in [0, 1] units; the std PNG is black (level 0) at every pixel observed in all channels.
    RED-diff only pulls observed pixels towards ``y`` by Adam steps on the data term, so at a
    few iterates it does not pin them (not asserted)."""
    images = make_images(tmp_path / "in", n=1)
    seen = capture_writes(monkeypatch)
    out = run(tmp_path, images, "ddrm", "--data.samples_per_image", "3", "--model.operator.init_args.sigma_y", "0",
              "--model.solver", "lightning_redd.solvers.ddrm.DDRM", "--model.solver.init_args.num_steps", "4")
    xs = torch.cat([b.x_hat for b in seen])
    y = seen[0].y[0]
    observed = y != 0  # the measurement is zero exactly at the missing pixels (no 8-bit level maps to 0)
    _, std = mean_and_std(xs)
    assert 0.2 < observed.double().mean() < 0.9
    assert float(std[observed].max()) <= 1e-6
    assert float(std[~observed].mean()) > 0.05  # the missing pixels do vary
    std_png = png(out / "std" / "img0.png")
    assert std_png[observed.all(0).numpy()].max() == 0 and std_png[(~observed).all(0).numpy()].mean() > 10


@pytest.mark.slow
def test_sample_k_is_the_same_whatever_the_sample_count_and_the_batch_size(tmp_path):
    """Sample 1 of N = 2 (batch 1) equals sample 1 of N = 3 (batch 4) byte for byte, and every
    sample of N = 3 at batch 1 and batch 4; sample 0 is the one-sample run's restored image."""
    images = make_images(tmp_path / "in", n=2)
    n2 = run(tmp_path, images, "n2b1", "--data.samples_per_image", "2", "--data.batch_size", "1")
    n3b1 = run(tmp_path, images, "n3b1", "--data.samples_per_image", "3", "--data.batch_size", "1")
    n3b4 = run(tmp_path, images, "n3b4", "--data.samples_per_image", "3", "--data.batch_size", "4")
    one = run(tmp_path, images, "one", "--data.batch_size", "1")
    for name in ("img0", "img1"):
        s = f"samples/{name}_s1.png"
        assert (n2 / s).read_bytes() == (n3b1 / s).read_bytes() == (n3b4 / s).read_bytes()
        assert (n3b1 / f"samples/{name}_s0.png").read_bytes() == (one / f"restored/{name}.png").read_bytes()
    # every file (grids are per image with several samples): the mean, the std and the scores
    # come from the samples as saved, so equal sample files give equal records
    assert output_files(n3b1) == output_files(n3b4)


@pytest.mark.slow
def test_one_sample_per_image_is_byte_identical_to_a_run_without_the_option(tmp_path):
    images = make_images(tmp_path / "in", n=3)
    plain = run(tmp_path, images, "plain", "--data.batch_size", "2")
    one = run(tmp_path, images, "one", "--data.batch_size", "2", "--data.samples_per_image", "1")
    assert output_files(plain) == output_files(one)
    assert not (one / "samples").exists() and not (one / "std").exists()
    assert run_config.read(one) == run_config.read(plain)


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in the run catches it."""


def crash_after(monkeypatch, relative: str) -> None:
    """Crash right after the file ``relative`` (to its run folder) is durable."""
    original = fsio.atomic_write

    def write(path, write, **kwargs):
        out = original(path, write, **kwargs)
        if Path(path).as_posix().endswith("/" + relative):
            raise Crash(relative)
        return out

    monkeypatch.setattr(fsio, "atomic_write", write)


@pytest.mark.slow
@pytest.mark.parametrize("subcommand", ["predict", "fit"])
def test_a_crash_between_samples_then_the_same_command_gives_the_uninterrupted_files(tmp_path, monkeypatch, subcommand):
    """Batch 2 of units (image, sample): [img0 s0, s1] [img0 s2, img1 s0] [img1 s1, s2]. A crash
    after img0's second sample (its image unfinished), after img0's record (img1's first sample
    on disk) and after img1's second sample: the rerun redoes only the unfinished image (a
    finished image's sample in a redone batch is solved, not written) and ends with the
    uninterrupted run's files and manifest, byte for byte."""
    images = make_images(tmp_path / "in", n=2)
    extra = ("--data.samples_per_image", "3", "--data.batch_size", "2")
    reference = run(tmp_path, images, "reference", *extra, subcommand=subcommand)
    for point in ("samples/img0_s1.png", "records/img0.json", "samples/img1_s1.png"):
        out = f"crash-{point.replace('/', '-')}"
        with monkeypatch.context() as m:
            crash_after(m, point)
            with pytest.raises(Crash):
                run(tmp_path, images, out, *extra, subcommand=subcommand)
        with monkeypatch.context() as m:
            seen = capture_writes(m)
            run(tmp_path, images, out, *extra, subcommand=subcommand)
        kept = {(n, int(b.sample[i])) for b in seen for i, n in enumerate(b.names) if bool(b.keep[i])}
        redone = {"img1"} if point == "records/img0.json" else {"img0", "img1"} if "img0_s" in point else {"img1"}
        assert kept == {(n, k) for n in redone for k in range(3)}, point
        assert output_files(tmp_path / out) == output_files(reference), point
        assert Manifest(tmp_path / out).listed() == Manifest(reference).listed()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_write_what_one_does(tmp_path):
    """Three images, two samples each, batch 3 on two processes (rank 0: img0 and img2, rank 1:
    img1) against one in-process run: every file, grids included (one per image), byte for byte."""
    images = make_images(tmp_path / "in", n=3)
    extra = ("--data.samples_per_image", "2", "--data.batch_size", "3")
    one = run(tmp_path, images, "p1", *extra)
    run_cli(tiny_args(tmp_path / "p2", images, *extra, steps=3), TESTS, 2)
    assert output_files(tmp_path / "p2") == output_files(one)
    assert sorted(p.name for p in (tmp_path / "p2" / "manifest").iterdir()) == ["rank0.txt", "rank1.txt"]
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "p2" / "metrics.csv").read_text())))) == 3


def test_measured_data_without_ground_truth_gets_the_samples_mean_consistency():
    """No ``x``: nothing to score, so the record holds the consistency columns averaged over
    the samples (the writer holds no operator to measure the mean) and ``std_mean``."""
    from lightning_redd.lit.restored import Restored
    from lightning_redd.lit.samples import SampleGatherer
    from lightning_redd.metrics.scorer import Scorer

    x_hat = torch.stack([torch.full((3, 4, 4), v) for v in (0.0, 0.5)])
    r = Restored(names=("m", "m"), index=torch.tensor([0, 0]), x_hat=x_hat, x_init=torch.zeros(2, 3, 4, 4),
                 y=torch.zeros(2, 3, 4, 4), diverged=torch.tensor([False, False]), nfe=5, seconds=0.1,
                 consistency={"residual": torch.tensor([1.0, 3.0]), "sigma_y": torch.tensor([0.0, 0.0])},
                 sample=torch.tensor([0, 1]), samples=2)
    files, records = SampleGatherer(Scorer()).add(r)
    (name, record), = records
    assert name == "m" and record["nfe"] == 10 and record["samples"] == 2
    assert record["scores"]["residual"] == 2.0 and record["scores"]["sigma_y"] == 0.0
    assert record["scores"]["std_mean"] == pytest.approx(float(torch.tensor([128.0, 191.0]).std() / 255))  # levels / 255: [0, 1] units
    assert [f for f, _ in files] == ["samples/m_s0.png", "samples/m_s1.png", "restored/m.png", "std/m.png", "init/m.png",
                                     "measured/m.png", "grids/m.png"]
