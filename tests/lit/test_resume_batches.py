"""Resume keeps every batch's composition (issue 23 item 12): a crash after some image records
of a batch are durable, then the same command, gives byte for byte the uninterrupted run's files
and file list. The rerun solves the partly finished batch whole (same batch mates, so the same
floats) and writes only its unfinished members; the grid keeps its name (the batch's first
image). Also for a mixed-size folder (``data.resize: none``), and on two processes against one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_images, output_files, run_cli, tiny_args
from PIL import Image

from lightning_redd.lit.cli import cli
from lightning_redd.runs import fsio
from lightning_redd.runs.manifest import Manifest

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


class Crash(BaseException):
    """Stands in for SIGKILL: nothing in the run catches it, so the disk is left as a kill leaves it."""


def crash_after_record(monkeypatch, k: int) -> None:
    """Crash right after the ``k``-th image record (``records/*.json``) is durable."""
    original, count = fsio.atomic_write, [0]

    def write(path, write, **kwargs):
        out = original(path, write, **kwargs)
        if Path(path).parent.name == "records":
            count[0] += 1
            if count[0] == k:
                raise Crash(f"after record {k} ({Path(path).name})")
        return out

    monkeypatch.setattr(fsio, "atomic_write", write)


def mixed_folder(folder: Path) -> Path:
    """Four images of two sizes, interleaved (batches of 2 by size: [m0, m2], [m1, m3])."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate([(20, 24), (24, 40), (20, 24), (24, 40)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"m{i}.png")
    return folder


CASES = {  # name: (folder maker, batch size, extra arguments, record counts to crash after)
    "batch4": (lambda d: make_images(d, n=4), 4, (), (1, 2, 3)),
    "batch2": (lambda d: make_images(d, n=4), 2, (), (1, 3)),
    "mixed2": (mixed_folder, 2, ("--data.resize", "none", "--model.prior", "helpers.SizedConvPrior"), (1, 3)),
}


@pytest.mark.parametrize("subcommand", ["predict", "fit"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_crash_after_each_record_of_a_batch_then_rerun_is_byte_identical(tmp_path, monkeypatch, case, subcommand):
    make, batch, extra, crashes = CASES[case]
    images = make(tmp_path / "in")

    def argv(out: Path) -> list[str]:
        return tiny_args(out, images, "--data.batch_size", str(batch), *extra, subcommand=subcommand, steps=3)

    cli(argv(tmp_path / "reference"))
    reference = output_files(tmp_path / "reference")
    assert len([p for p in reference if p.startswith("grids/")]) == -(-4 // batch)
    for k in crashes:
        out = tmp_path / f"crash{k}"
        with monkeypatch.context() as m:
            crash_after_record(m, k)
            with pytest.raises(Crash):
                cli(argv(out))
        assert len(list((out / "records").glob("*.json"))) == k
        cli(argv(out))
        assert output_files(out) == reference, k  # same file list, same bytes
        assert Manifest(out).listed() == Manifest(tmp_path / "reference").listed()


@pytest.mark.multiprocess
@pytest.mark.parametrize("subcommand", ["predict", "fit"])
def test_a_mixed_size_folder_on_two_processes_equals_one(tmp_path, subcommand):
    """``--trainer.devices 2`` (gloo) on the mixed folder, batch 2: the two ranks take whole
    size-group shares; every file but the grids (batches differ: each rank batches its own share)
    equals the one-process run's byte for byte (measured; the tiny network's per-image results do
    not depend on batch mates), one metrics row per image."""
    images = mixed_folder(tmp_path / "in")
    outs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n in (1, 2):
        run_cli(tiny_args(outs[n], images, "--data.batch_size", "2", "--data.resize", "none", "--model.prior",
                          "helpers.SizedConvPrior", steps=3, subcommand=subcommand), TESTS, n)
    one, two = output_files(outs[1]), output_files(outs[2])
    assert {k: v for k, v in one.items() if not k.startswith("grids/")} == {k: v for k, v in two.items() if not k.startswith("grids/")}
    assert (outs[2] / "metrics.csv").read_text().count("\n") == 1 + 4


@pytest.mark.multiprocess
def test_fewer_pending_images_than_processes_pads_predict(tmp_path):
    """One image on two processes (``predict``): rank 1's share is empty, so it takes one padding
    step (no compute, no output) instead of holding an empty loader; the image equals the
    one-process run's byte for byte."""
    images = make_images(tmp_path / "in", n=1)
    outs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n in (1, 2):
        run_cli(tiny_args(outs[n], images, steps=3), TESTS, n)
    assert output_files(outs[2]) == output_files(outs[1])
