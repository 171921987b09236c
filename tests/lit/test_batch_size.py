"""``lightning-redd batch-size``: Lightning's batch-size search on a run's config, with the
device's memory limit injected by a prior double that fails like a full allocator."""
from __future__ import annotations

import logging

import pytest

from lightning_redd.lit.cli import main

pytestmark = pytest.mark.slow  # command-line runs of a few seconds each

#: a tiny run: the ConvPrior double, random-pixel inpainting, 16 px images
RUN = ["--seed_everything", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
       "--trainer.enable_progress_bar", "false", "--model.operator", "lightning_redd.operators.inpainting.Inpainting",
       "--model.operator.init_args.mask", "random", "--model.solver", "lightning_redd.solvers.red_diff.RedDiff",
       "--data.image_size", "16"]


def search(capsys, *extra: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["batch-size", *RUN, *extra])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.mark.parametrize("limit, cpu", [(1, False), (5, True), (12, False)])
def test_finds_the_largest_batch_that_fits(capsys, tmp_path, monkeypatch, limit, cpu):
    """Batches above ``limit`` fail with the CUDA (or CPU) allocator's out-of-memory error: the
    search names ``limit`` as the largest that ran, and suggests 5 % less (at least 1); nothing
    is written in the working folder."""
    monkeypatch.chdir(tmp_path)
    level = logging.getLogger("lightning.pytorch").level
    status, out, _ = search(capsys, "--model.prior", "helpers.OutOfMemoryAbove", "--model.prior.init_args.limit", str(limit),
                            "--model.prior.init_args.cpu", str(cpu).lower(), "--max", "16")
    assert status == 0
    assert f"a batch of {limit} ran, larger ones ran out of memory" in out
    use = max(1, int(limit * 0.95))
    assert f"use: --data.batch_size {use}" + ("\n" if use == limit else f"  (5% under {limit}, for headroom)\n") in out
    assert list(tmp_path.iterdir()) == []
    assert logging.getLogger("lightning.pytorch").level == level  # the command leaves the process's logging as it was


def test_the_cap_is_the_answer_when_nothing_runs_out(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, _ = search(capsys, "--model.prior", "helpers.ConvPrior", "--max", "6", "--margin", "0.5")
    assert status == 0
    assert "the search cap --max 6, no trial ran out of memory" in out and "use: --data.batch_size 6\n" in out


def test_trials_run_the_configured_iterate(capsys, monkeypatch):
    """Lightning's search from 1 up to --max 4 with batches above 3 failing: 1, 2, 4 (out of
    memory at its first iterate), 3; a batch that runs does --steps iterates of the run's prior."""
    from helpers import OutOfMemoryAbove

    calls: list[int] = []
    original = OutOfMemoryAbove.predict_eps

    def spy(self, x_t, t):
        calls.append(x_t.shape[0])
        return original(self, x_t, t)

    monkeypatch.setattr(OutOfMemoryAbove, "predict_eps", spy)
    status, out, _ = search(capsys, "--model.prior", "helpers.OutOfMemoryAbove", "--model.prior.init_args.limit", "3",
                            "--max", "4", "--steps", "3")
    assert status == 0
    assert "batches tried: 1 ran, 2 ran, 4 out of memory, 3 ran)" in out
    assert calls.count(4) == 1 and calls.count(3) == 3  # the trial of 3 over 5 images: a batch of 3, then 2


def test_out_of_memory_at_batch_1_and_bad_options_are_errors(capsys):
    status, _, err = search(capsys, "--model.prior", "helpers.OutOfMemoryAbove", "--model.prior.init_args.limit", "0", "--max", "4")
    assert status == 2 and "even a batch of 1 ran out of memory" in err
    status, _, err = search(capsys, "--max", "0", "--steps", "0", "--data.batch_size", "8", "--model.prior", "helpers.ConvPrior")
    assert status == 2
    assert "--max must be >= 1, got 0" in err and "--steps must be >= 1, got 0" in err
    assert "--data.batch_size is set by this command" in err
