"""2-task ``predict`` jobs on a real one-node SLURM cluster, through ``slurm/predict.sbatch``.

Needs Debian's slurmctld, slurmd, slurm-client and munge (``.ci/run`` installs them) and root;
skips with the reason otherwise. The cluster is started once per session by
``slurm/local-cluster.sh`` in a folder of its own and stopped after the last test (only the
daemons it started). Every job restores tiny 16 px images with a test prior whose denoiser
sleeps, so that a signal or a kill lands inside a solve.
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import make_images, tiny_args

ROOT = Path(__file__).resolve().parents[2]


def slurm_job(test):
    """The marks of a test that runs jobs on the cluster."""
    return pytest.mark.xdist_group("slurm")(pytest.mark.slurm(pytest.mark.multiprocess(pytest.mark.slow(test))))


DAEMONS = ("munged", "slurmctld", "slurmd")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _pids(name: str) -> set[int]:
    """PIDs of running processes called ``name`` (not zombies: this container's init reaps none)."""
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    alive = set()
    for pid in out.split():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(int(pid))
        except (OSError, IndexError):
            pass
    return alive


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The one-node cluster; after the session, the daemons it started are gone and the others run."""
    missing = [c for c in ("sbatch", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("starting the local SLURM cluster needs root")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "LOCAL_SLURM_DIR": str(state)}
    before = {name: _pids(name) for name in DAEMONS}
    script = str(ROOT / "slurm" / "local-cluster.sh")
    proc = subprocess.run([script, "start"], capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode != 0:
        subprocess.run([script, "stop"], capture_output=True, env=env)
        pytest.skip(f"slurm/local-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    started = {name: _pids(name) - before[name] for name in DAEMONS}
    try:
        yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run([script, "stop"], capture_output=True, env=env, timeout=60)
        still = {name: _pids(name) & started[name] for name in DAEMONS}
        assert not any(still.values()), f"daemons the session started still run: {still}"
        lost = {name: before[name] - _pids(name) for name in DAEMONS}
        assert not any(lost.values()), f"daemons the session did not start were stopped: {lost}"


def job_env(cluster: dict) -> dict:
    """The jobs run this worktree's code and import the test doubles (helpers, slurm_doubles)."""
    paths = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "lit"), cluster.get("PYTHONPATH", "")]
    return {**cluster, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def args(out: Path, images: Path, *extra: str, delay: float = 0.25, steps: int = 8) -> list[str]:
    """The tiny predict run (without the subcommand, which the template adds), batch 1."""
    return [*tiny_args(out, images, "--model.prior", "slurm_doubles.SlowConvPrior",
                       "--model.prior.init_args.delay_s", str(delay), "--data.batch_size", "1", *extra, steps=steps)[1:]]


def submit(cluster: dict, log: Path, argv: list[str], script: Path | None = None) -> str:
    cmd = ["sbatch", "--parsable", "--ntasks-per-node=2", "--gres=none", "--cpus-per-task=1", "--time=00:10:00",
           f"--output={log}", str(script or ROOT / "slurm" / "predict.sbatch"), *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=job_env(cluster), check=True)
    return proc.stdout.strip().split(";")[0]


def state(cluster: dict, job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=cluster).stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "UNKNOWN")


def wait_for(predicate, timeout: float, what: str, log: Path):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; job log:\n{log.read_text()[-4000:] if log.exists() else '(none)'}")


def finish(cluster: dict, job: str, log: Path, timeout: float = 240) -> str:
    """Wait for the job's end, starting a requeued job at once (SLURM delays it otherwise)."""
    def ended():
        s = state(cluster, job)
        if s == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True, env=cluster)
        return s if s in ENDED else None

    try:
        return wait_for(ended, timeout, f"the end of job {job}", log)
    finally:
        if state(cluster, job) not in ENDED:
            subprocess.run(["scancel", job], env=cluster)


def task_pids(cluster: dict, job: str) -> dict[int, int]:
    """``{SLURM_PROCID: pid}`` of the job's lightning-redd processes (on this node)."""
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, env=cluster).stdout
    found = {}
    for line in out.splitlines()[1:]:
        pid = line.split()[0]
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = dict(e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        argv = cmd.split(b"\0")
        # the Python processes of the console script (not srun, not the batch shell)
        if len(argv) > 1 and b"python" in Path(argv[0].decode()).name.encode() and argv[1].endswith(b"lightning-redd") \
                and b"SLURM_PROCID" in environ:
            found[int(environ[b"SLURM_PROCID"])] = int(pid)
    return found


def rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def stamps(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "records").glob("*.json")}


@slurm_job
def test_sigusr1_on_the_last_batch_of_rank_0_completes_the_job(cluster, tmp_path):
    """3 images on 2 tasks (rank 0: img0 then img2; rank 1: img1 and a padding batch); SIGUSR1
    once img0 is finished: the job completes (at once, or requeued), every image once."""
    images, out, log = make_images(tmp_path / "in", n=3, size=16), tmp_path / "out", tmp_path / "job.out"
    job = submit(cluster, log, args(out, images))
    wait_for(lambda: (out / "records" / "img0.json").is_file(), 180, "rank 0's first image", log)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, env=cluster)
    early = stamps(out)
    assert "img2.json" not in early, "rank 0 finished its last image before the signal: make the solve slower"
    assert finish(cluster, job, log) == "COMPLETED", log.read_text()[-4000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert {k: v for k, v in stamps(out).items() if k in early} == early  # finished images were not redone
    assert sorted(r["name"] for r in rows(out)) == ["img0", "img1", "img2"]
    assert all(r["status"] == "ok" for r in rows(out))
    if "restart 1" in text:  # stopped at a batch start: requeued, and the requeued job finished
        assert "requeueing SLURM job" in text


@slurm_job
def test_on_a_stop_every_rank_finishes_its_batch_before_the_requeue(cluster, tmp_path):
    """6 images on 2 tasks (3 batches each); SIGUSR1 while both restore their second image: both
    write it, the job is requeued at the third batch start, and the requeued job restores only
    the last 2 images (a rank killed mid-batch would leave 3)."""
    images, out, log = make_images(tmp_path / "in", n=6, size=16), tmp_path / "out", tmp_path / "job.out"
    job = submit(cluster, log, args(out, images))
    wait_for(lambda: all((out / "records" / f"img{i}.json").is_file() for i in (0, 1)), 180, "both ranks' first image", log)
    time.sleep(0.5)  # both are past the second batch's start (an image takes 2 s)
    subprocess.run(["scancel", "--signal=USR1", job], check=True, env=cluster)
    early = stamps(out)
    assert not {"img2.json", "img3.json"} & set(early), "a rank finished its second image before the signal"
    assert finish(cluster, job, log) == "COMPLETED", log.read_text()[-4000:]
    text = log.read_text()
    assert "restart 1" in text and "requeueing SLURM job" in text and "Traceback" not in text, text[-4000:]
    assert f"6 image(s) in {out}: 2 restored now, 4 already finished" in text, text[-4000:]
    assert {k: v for k, v in stamps(out).items() if k in early} == early
    assert sorted(r["name"] for r in rows(out)) == [f"img{i}" for i in range(6)]


@slurm_job
def test_one_pending_image_on_two_tasks(cluster, tmp_path):
    """Rank 1 has nothing to restore (img0 and img1 were finished by a 1-process run, 1 image is
    left for 2 tasks): it takes part in every collective and writes nothing; rc 0, the finished
    images are not redone. (A fresh 1-image folder on 2 gloo processes is
    test_resume_batches.py::test_fewer_pending_images_than_processes_pads_predict.)"""
    images, out, log = make_images(tmp_path / "in", n=3, size=16), tmp_path / "out", tmp_path / "job.out"
    from lightning_redd.lit.cli import cli

    cli(["predict", *args(out, images, "--data.limit", "2", delay=0.0)])
    before = stamps(out)
    job = submit(cluster, log, args(out, images, delay=0.0))
    assert finish(cluster, job, log) == "COMPLETED", log.read_text()[-4000:]
    assert "Traceback" not in log.read_text()
    assert sorted(r["name"] for r in rows(out)) == ["img0", "img1", "img2"]
    assert not (out / "manifest" / "rank1.txt").exists()  # rank 1 wrote nothing
    assert {k: v for k, v in stamps(out).items() if k in before} == before


@slurm_job
def test_a_killed_rank_never_loses_another_ranks_finished_work(cluster, tmp_path):
    """SIGKILL to rank 1 mid-solve: the job fails, every record on disk stays as it was, and the
    same command finishes the rest without redoing them."""
    images, out, log = make_images(tmp_path / "in", n=4, size=16), tmp_path / "out", tmp_path / "job.out"
    job = submit(cluster, log, args(out, images))
    wait_for(lambda: (out / "records" / "img1.json").is_file(), 180, "rank 1's first image", log)
    pids = wait_for(lambda: task_pids(cluster, job), 30, "the tasks' PIDs", log)
    os.kill(pids[1], signal.SIGKILL)
    assert finish(cluster, job, log) in ("FAILED", "CANCELLED"), log.read_text()[-4000:]
    kept = stamps(out)
    assert {"img0.json", "img1.json"} <= set(kept)
    from lightning_redd.lit.cli import cli

    cli(["predict", *args(out, images)])  # the same command, 1 process
    assert {k: v for k, v in stamps(out).items() if k in kept} == kept
    assert sorted(r["name"] for r in rows(out)) == [f"img{i}" for i in range(4)]


@slurm_job
def test_an_output_folder_not_shared_by_the_tasks_is_refused(cluster, tmp_path):
    """Rank 1 runs in a mount namespace where the output folder is another, empty folder (as on a
    node-local disk): both tasks refuse before any compute (exit 2)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    images, out, other, log = make_images(tmp_path / "in", n=2, size=16), tmp_path / "out", tmp_path / "other", tmp_path / "job.out"
    out.mkdir()
    other.mkdir()
    wrapper = tmp_path / "local_folder.sh"  # rank 1 sees `other` at the path of `out`
    wrapper.write_text(f"""#!/bin/bash
if [ "$SLURM_PROCID" = 1 ]; then
    exec unshare -m --propagation private bash -c 'mount --bind {other} {out} && exec "$@"' _ "$@"
fi
exec "$@"
""")
    wrapper.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(f"#!/bin/bash\nsrun {wrapper} lightning-redd predict \"$@\" --trainer.devices 2\n")
    job = submit(cluster, log, args(out, images, delay=0.0), script=script)
    assert finish(cluster, job, log) == "FAILED", log.read_text()[-4000:]
    text = log.read_text()
    assert text.count(f"output folder {out} is not the same folder for every process: rank 1 on") == 2, text[-4000:]
    assert "Traceback" not in text
    assert not (out / "records").exists() and not list(other.iterdir())


@slurm_job
def test_sigusr1_during_start_up_and_to_the_batch_shell_do_not_kill_the_job(cluster, tmp_path):
    """``scancel --signal=USR1 --batch`` (the shell traps it and passes it on) and a SIGUSR1 to the
    tasks while they import: recorded, the job stops at its first batch, is requeued, finishes."""
    images, out, log = make_images(tmp_path / "in", n=2, size=16), tmp_path / "out", tmp_path / "job.out"
    job = submit(cluster, log, args(out, images, delay=0.0))
    pids = wait_for(lambda: len(task_pids(cluster, job)) == 2 and task_pids(cluster, job), 60, "the tasks", log)
    time.sleep(0.3)  # the tasks are importing torch (seconds): the start-up window
    assert not (out / "records").exists()
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, env=cluster)
    for pid in pids.values():
        os.kill(pid, signal.SIGUSR1)
    assert finish(cluster, job, log) == "COMPLETED", log.read_text()[-4000:]
    text = log.read_text()
    assert "SIGUSR1 for the batch shell; passing it to the tasks" in text and "restart 1" in text, text[-4000:]
    assert "requeueing SLURM job" in text and "Traceback" not in text, text[-4000:]
    assert sorted(r["name"] for r in rows(out)) == ["img0", "img1"]


def test_local_cluster_stop_ends_only_the_daemons_of_its_pid_files(tmp_path):
    """No SLURM needed: decoy processes named like the daemons; ``stop`` ends the one its PID file
    names, leaves one it never started, and a PID file naming another program's process."""
    decoys = {}
    for name in ("slurmd", "slurmctld", "munged"):
        exe = tmp_path / name
        shutil.copy(shutil.which("sleep"), exe)
        decoys[name] = subprocess.Popen([str(exe), "300"])
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / "slurmd.pid").write_text(f"{decoys['slurmd'].pid}\n")  # ours
        (state / "munged.pid").write_text(f"{stranger.pid}\n")  # a PID reused by another program
        proc = subprocess.run([str(ROOT / "slurm" / "local-cluster.sh"), "stop"], capture_output=True, text=True,
                              env={**os.environ, "LOCAL_SLURM_DIR": str(state)}, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert decoys["slurmd"].wait(timeout=10) is not None
        assert decoys["slurmctld"].poll() is None and decoys["munged"].poll() is None and stranger.poll() is None
        assert f"stopped slurmd (PID {decoys['slurmd'].pid})" in proc.stdout
        assert not list(state.glob("*.pid"))
    finally:
        for p in [*decoys.values(), stranger]:
            p.kill()
            p.wait()
