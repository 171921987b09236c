"""Two gloo processes on the CPU (``--trainer.devices 2 --trainer.strategy ddp``): ``predict`` of
the demo config, resuming a 1-process run, gives the 1-process result within the README's bound
with one merged ``metrics.csv`` row per image; every metric merges across ranks. ``fit`` on two
processes is test_resume_batches.py::test_a_mixed_size_folder_on_two_processes_equals_one[fit]
(byte for byte against one process) and fit = predict on the demo config is test_demo.py."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["chelsea", "chelsea_face", "coffee", "motorcycle"]
#: the README's bound between batch layouts / process counts: max difference of an 8-bit pixel
#: (measured on the full demo: <= 2 levels; see README "Results across devices and batches")
PIXEL_BOUND = 3
STEPS = 30


def run(out: Path, subcommand: str, *extra: str, processes: int = 1):
    """``lightning-redd <subcommand>`` on the demo config, in this interpreter (1 process) or in a
    fresh one (several: gloo)."""
    argv = [subcommand, "--config", "configs/demo.yaml", "--trainer.default_root_dir", str(out),
            "--trainer.enable_progress_bar", "false", "--model.solver.init_args.num_steps", str(STEPS),
            "--model.prior.init_args.cpu_bf16", "off", *extra]  # float32: the README's bound is float32's
    return run_cli(argv, ROOT, processes)


def restored(out: Path) -> dict[str, np.ndarray]:
    return {n: np.asarray(Image.open(out / "restored" / f"{n}.png")).astype(int) for n in NAMES}


def table(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The 1-process reference, restored in this interpreter."""
    out = tmp_path_factory.mktemp("dist") / "one"
    run(out, "predict")
    return out


def assert_two_equal_one(one: Path, two: Path, bound: dict[str, int]) -> None:
    """One merged metrics.csv row per image (no per-rank file left), every image within ``bound``
    levels of the 1-process run's, PSNR within 0.05 dB."""
    rows = table(two)
    assert [r["name"] for r in rows] == NAMES and all(r["status"] == "ok" for r in rows)
    assert not list(two.glob("metrics.rank*.csv"))
    ref, got = restored(one), restored(two)
    for n in NAMES:
        assert np.abs(ref[n] - got[n]).max() <= bound.get(n, PIXEL_BOUND), n
    for a, b in zip(table(one), rows):
        assert abs(float(a["psnr"]) - float(b["psnr"])) < 0.05, a["name"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_run_started_on_one_process_finishes_on_two_within_the_bound(one_process, tmp_path):
    """``predict`` on 2 processes, resuming a 1-process run that finished chelsea: chelsea is not
    redone, the other 3 images (restored on 2 processes) are within the bound of the 1-process run."""
    out = tmp_path / "resumed"
    run(out, "predict", "--data.limit", "1")
    first = (out / "records" / "chelsea.json").read_bytes()
    run(out, "predict", processes=2)
    assert (out / "records" / "chelsea.json").read_bytes() == first  # not redone
    # chelsea was restored alone (a batch of 1), the reference restored it in a batch of 4: at 30
    # iterates (not converged) the batch size moved it by up to 4 levels on 12 pixels on a
    # Sapphire Rapids CPU; the others by at most PIXEL_BOUND
    assert_two_equal_one(one_process, out, {"chelsea": PIXEL_BOUND + 2})


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_give_the_same_metric_table(tmp_path, alexnet_weights, inception_weights, resnet_weights):
    """Every metric (per-image psnr, ssim, lpips, top1; dataset-level kid, fid) from 1 and 2
    processes, on the tiny prior with batch 1 (so both runs restore every image alone); the CSV
    log and plots/psnr.png hold every rank's batches (the same as 1 process)."""
    import json

    from helpers import make_images, tiny_args

    images = make_images(tmp_path / "in", n=4, size=32)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({f"img{i}": i for i in range(4)}))
    metrics = ["--metrics.names=[psnr,ssim,lpips,top1,kid,fid]",
               f"--metrics.lpips_weights={alexnet_weights}", f"--metrics.inception_weights={inception_weights}",
               "--metrics.classifier=resnet18.tv_in1k", f"--metrics.classifier_weights={resnet_weights}",
               f"--metrics.labels={labels}", "--data.batch_size", "1"]
    outs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n in (1, 2):
        run_cli(tiny_args(outs[n], images, *metrics, "--trainer.logger", "true", size=32, steps=4), ROOT / "tests", n)
    one, two = (outs[n] / "metrics.csv" for n in (1, 2))
    assert one.read_text() == two.read_text()
    assert set(table(outs[1])[0]) >= {"psnr", "ssim", "lpips", "top1", "psnr_init", "lpips_init"}
    s1, s2 = (json.loads((outs[n] / "summary.json").read_text())["dataset"] for n in (1, 2))
    # Inception features are float32 and the two runs use 2 vs 1 CPU threads: measured 7e-7 relative
    assert set(s1) >= {"kid", "fid", "top1"} and s1 == pytest.approx(s2, rel=1e-5, abs=1e-8)
    # the CSV log and the plot cover every rank's batches: rank r's j-th batch is logged at the
    # step of batch g = 2j + r (here image g), as the 1-process run logs image g's batch
    logs = {n: list(csv.DictReader(open(outs[n] / "logs" / "version_0" / "metrics.csv", newline=""))) for n in (1, 2)}
    assert [r["step"] for r in logs[2] if r.get("predict/psnr")] == ["3", "7", "11", "15"]
    assert [{k: v for k, v in r.items() if k.startswith("predict/") or k == "step"} for r in logs[2]] == \
        [{k: v for k, v in r.items() if k.startswith("predict/") or k == "step"} for r in logs[1]]
    assert (outs[2] / "plots" / "psnr.png").read_bytes() == (outs[1] / "plots" / "psnr.png").read_bytes()

