"""A real SLURM requeue: a 2-task gloo predict of the demo images through slurm/predict.sbatch,
SIGUSR1 mid-run, the job requeued and finished; the result equals a 1-process run.

Needs Debian's slurmctld, slurmd, slurm-client and munge (``.ci/run`` installs them) and root
to start the one-node cluster of ``slurm/local-cluster.sh``; skips with the reason otherwise.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_redd.lit.cli import cli

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40


def _cluster_or_skip() -> None:
    missing = [c for c in ("sbatch", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("starting the local SLURM cluster needs root")
    proc = subprocess.run([str(ROOT / "slurm" / "local-cluster.sh"), "start"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"slurm/local-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")


def job_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def wait_for(predicate, timeout: float, what: str, log: Path):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; job log:\n{log.read_text() if log.exists() else '(none)'}")


def images_folder(tmp: Path) -> Path:
    """The 4 demo photographs and their mirror images: 8 images, 4 batches per rank."""
    folder = tmp / "images"
    folder.mkdir()
    for p in sorted((ROOT / "data" / "demo").glob("*.png")):
        shutil.copy(p, folder / p.name)
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{p.stem}_mirror.png")
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.slurm
def test_requeue_on_sigusr1_finishes_every_image_once(tmp_path, monkeypatch):
    _cluster_or_skip()
    images = images_folder(tmp_path)
    common = ["--config", "configs/demo.yaml", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--model.solver.init_args.num_steps", str(STEPS), "--data.batch_size", "1", "--data.root", str(images)]
    monkeypatch.chdir(ROOT)
    cli(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "reference")])

    out, log = tmp_path / "slurm_run", tmp_path / "job.out"
    submit = ["sbatch", "--parsable", "--ntasks-per-node=2", "--gres=none", "--cpus-per-task=1", "--time=00:20:00",
              f"--output={log}", str(ROOT / "slurm" / "predict.sbatch"), *common, "--trainer.default_root_dir", str(out)]
    job = subprocess.run(submit, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        records = out / "records"
        wait_for(lambda: records.is_dir() and list(records.glob("*.json")), 240, "the first finished image", log)
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        early = {p.name: p.stat().st_mtime_ns for p in records.glob("*.json")}
        wait_for(lambda: job_state(job) in ("PENDING", "REQUEUED", "REQUEUE_FED", "COMPLETED"), 120, "the requeue", log)
        assert job_state(job) != "COMPLETED", "the job finished before the signal could requeue it"
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
        wait_for(lambda: job_state(job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), 300, "the end", log)
    finally:
        if job_state(job) not in ("COMPLETED", "FAILED", "CANCELLED", "UNKNOWN"):
            subprocess.run(["scancel", job])
    text = log.read_text()
    assert job_state(job) == "COMPLETED", text[-4000:]
    assert "restart 0" in text and "restart 1" in text and "requeueing SLURM job" in text, text[-4000:]
    # every image finished once: the images finished before the signal were not redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json") if p.name in early} == early
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["name"] for r in rows) == sorted(p.stem for p in images.glob("*.png"))
    assert all(r["status"] == "ok" for r in rows)
    # the same result as one process (bound of the README: batch layout and process count
    # change float rounding only; measured max 2/255 per pixel on the demo)
    for p in sorted((tmp_path / "reference" / "restored").glob("*.png")):
        a = np.asarray(Image.open(p)).astype(int)
        b = np.asarray(Image.open(out / "restored" / p.name)).astype(int)
        assert np.abs(a - b).max() <= 3, p.name
    assert not [p for p in out.rglob("*.tmp")]
