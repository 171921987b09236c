"""Fast, one-process checks of the pieces the SLURM tests exercise end to end: a SIGUSR1 noted
during start-up stops a run at its first batch, the ranks' agreement, the shared-folder check's
verdict and message, and the lock file's token."""
from __future__ import annotations

import os
import signal

import lightning as L
import pytest
from helpers import ConvPrior, make_images

from lightning_redd.data.folder import ImageFolderData
from lightning_redd.lit import signals
from lightning_redd.lit.module import RestorationModule
from lightning_redd.lit.requeue import Requeued, RequeueOnSignal
from lightning_redd.lit.writer import RestorationWriter
from lightning_redd.metrics.scorer import Scorer
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.runs import lock, shared
from lightning_redd.solvers.red_diff import RedDiff

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")


@pytest.fixture
def recorder():
    """signals.install() as the command runs it, undone after the test."""
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signals.take()
    signals.install()
    yield
    signals.take()
    signal.signal(signal.SIGUSR1, previous)


def run(tmp_path, callbacks):
    images = make_images(tmp_path / "in", n=3, size=16)
    out = tmp_path / "out"
    model = RestorationModule(prior=ConvPrior(), operator=Inpainting(mask="random", drop_fraction=0.4),
                              solver=RedDiff(num_steps=2, order="random"))
    data = ImageFolderData(root=str(images), image_size=16, batch_size=1, output_dir=str(out))
    writer = RestorationWriter(scorer=Scorer(["psnr"], score_init=False), output_dir=str(out))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, inference_mode=False, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(out), callbacks=[writer, *callbacks])
    trainer.predict(model, data, return_predictions=False)
    return out


def test_a_sigusr1_during_start_up_is_noted_and_stops_the_run_at_its_first_batch(tmp_path, recorder):
    os.kill(os.getpid(), signal.SIGUSR1)  # the default action would end this process
    assert signals.pending()
    with pytest.raises(Requeued, match="stopped before batch 0 on signal"):
        run(tmp_path, [RequeueOnSignal(requeue=False)])
    assert not signals.pending() and not (tmp_path / "out" / "records").exists()
    assert signal.getsignal(signal.SIGUSR1) is signals._record  # the run gave the recorder back


@pytest.mark.slow
def test_without_a_signal_the_run_finishes(tmp_path, recorder):
    out = run(tmp_path, [RequeueOnSignal(requeue=False)])
    assert sorted(p.stem for p in (out / "records").iterdir()) == ["img0", "img1", "img2"]


def test_the_requeue_s_sigterm_reaches_no_handler_once_the_ranks_agreed_to_stop(tmp_path, recorder, monkeypatch):
    """Under SLURM, rank 0 runs ``scontrol requeue`` and SLURM answers with SIGTERM to every task
    while they leave: a handler that would start a collective (Lightning's) must not run."""
    import subprocess

    from lightning_redd.lit import requeue as requeue_module

    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    calls = []

    def scontrol(argv, **kwargs):  # SLURM's answer to the requeue, delivered during the call
        calls.append(argv)
        os.kill(os.getpid(), signal.SIGTERM)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def collective(signum, frame):
        raise RuntimeError("a collective with a rank that already left")

    monkeypatch.setattr(requeue_module.subprocess, "run", scontrol)
    previous = signal.signal(signal.SIGTERM, collective)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(Requeued):
            run(tmp_path, [RequeueOnSignal()])
        assert calls == [["scontrol", "requeue", "42"]]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_install_keeps_a_handler_someone_else_set(recorder):
    def mine(signum, frame):
        pass

    signal.signal(signal.SIGUSR1, mine)
    signals.install()
    assert signal.getsignal(signal.SIGUSR1) is mine


def test_the_shared_folder_check_names_the_ranks_that_do_not_see_rank_0s_lock_file(tmp_path):
    lock.acquire(tmp_path)
    try:
        token = lock.token(tmp_path)
        assert token and lock.read_token(tmp_path) == token and len(token) == 16
        assert shared.my_view(tmp_path, token)[1] and not shared.my_view(tmp_path / "other", token)[1]
        assert not shared.my_view(tmp_path, None)[1]
    finally:
        lock.release(tmp_path)
    shared.check(tmp_path, [("n0", True), ("n1", True)])
    with pytest.raises(shared.FolderNotShared) as err:
        shared.check(tmp_path, [("n0", True), ("n1", True), ("n2", False)])
    assert str(err.value).startswith(f"output folder {tmp_path} is not the same folder for every process: rank 2 on n2 "
                                     "does not see the lock file rank 0 (on n0) wrote there")
    assert str(err.value).endswith("Fix: put --trainer.default_root_dir on a file system every node mounts "
                                   "(shared storage, not a node's /tmp or local disk)")
    assert "\n" not in str(err.value)
