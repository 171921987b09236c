"""The run folder's write order with several posterior samples per image, at unit level: the
image writer driven by hand with fake batches of units ``(image, sample)``, two samples per
image, an image's samples split across batches, one image with a diverged sample. A crash is
injected at every write and manifest append (during it or right after it); at each point the
manifest lists every file on disk, the finished images are exactly those whose record was
written, and running the same batches again (as a resumed run forms them: every batch holding
an unfinished image, its finished members not written) gives the uninterrupted run's files byte
for byte. The one-sample order is tests/runs/test_write_order.py's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from crashes import Crash, crash_at

from lightning_redd import pictures
from lightning_redd.lit.restored import Restored
from lightning_redd.lit.writer import RestorationWriter
from lightning_redd.metrics.scorer import Scorer
from lightning_redd.runs import fsio, lock
from lightning_redd.runs.checks import foreign_files
from lightning_redd.runs.folder import RunFolder, record_file
from lightning_redd.runs.layout import LOCK_FILE, MANIFEST_DIR, SUMMARY
from lightning_redd.runs.manifest import Manifest

NAMES = ("a", "b", "c")
#: the batches of units (image index, sample): a's in one batch, b's and c's split across two
UNITS = [[(0, 0), (0, 1)], [(1, 0)], [(1, 1), (2, 0)], [(2, 1)]]
DIVERGED = {(1, 1)}  # b's second sample


def fake_batch(units: list[tuple[int, int]], done: set[str]) -> Restored:
    """The restored units, deterministic from (image, sample); ``done``: images finished earlier."""
    xs, x_hats, inits = [], [], []
    for i, k in units:
        g = torch.Generator().manual_seed(100 * i + k)
        x = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(i)) * 2 - 1
        x_hat = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        xs.append(x), inits.append(x * 0.5), x_hats.append(torch.full_like(x, float("nan")) if (i, k) in DIVERGED else x_hat)
    names = tuple(NAMES[i] for i, _ in units)
    x_hat, x_init = torch.stack(x_hats), torch.stack(inits)
    return Restored(names=names, index=torch.tensor([i for i, _ in units]), x_hat=x_hat, x_init=x_init, y=x_init.clone(),
                    diverged=torch.tensor([u in DIVERGED for u in units]), nfe=2, seconds=0.1, x=torch.stack(xs),
                    frames=(x_init, x_hat), psnr_curve=torch.tensor([[10.0 + i, 11.0 + k] for i, k in units], dtype=torch.float64),
                    solver="toy", keep=torch.tensor([n not in done for n in names]), sample=torch.tensor([k for _, k in units]),
                    samples=2)


class FakeStrategy:
    def barrier(self, name=None):
        pass

    def broadcast(self, obj, src=0):
        return obj


class FakeTrainer:
    global_rank, world_size, is_global_zero, global_step, logger, interrupted = 0, 1, True, 0, None, False

    def __init__(self, root: Path) -> None:
        self.default_root_dir, self.strategy = str(root), FakeStrategy()


@pytest.fixture(autouse=True)
def cheap_writes(monkeypatch):
    """The plot's bytes from its curves, and no fsync (see tests/runs/test_write_order.py)."""
    monkeypatch.setattr(pictures, "psnr_plot", lambda curves, title: json.dumps([title, curves]).encode())
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def run(root: Path) -> list[list[tuple[int, int]]]:
    """One run of the writer over the batches a (resumed) run forms; returns them."""
    trainer, writer = FakeTrainer(root), RestorationWriter(scorer=Scorer(), output_dir=str(root))
    writer.setup(trainer, None, "predict")
    writer.on_predict_start(trainer, None)
    done = RunFolder(root).finished(NAMES)
    given = [u for u in UNITS if any(NAMES[i] not in done for i, _ in u)]
    for j, units in enumerate(given):
        writer.on_predict_batch_end(trainer, None, fake_batch(units, done), None, j)
    writer.on_predict_end(trainer, None)
    writer.teardown(trainer, None, "predict")
    return given


def files(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != LOCK_FILE and not rel.startswith(MANIFEST_DIR + "/"):
            out[rel] = p.read_bytes()
    summary = json.loads(out.pop(SUMMARY))
    summary.pop("written"), summary.pop("folder")
    return {**out, SUMMARY: json.dumps(summary).encode()}


def sample_writes(name: str, k: int) -> list[str]:
    return [f"samples/{name}_s{k}.png", f"evolution/{name}_s{k}.png", f"evolution/{name}_s{k}.gif"]


def image_writes(name: str) -> list[str]:
    return [f"restored/{name}.png", f"std/{name}.png", f"init/{name}.png", f"measured/{name}.png", f"grids/{name}.png"]


def batch(*writes: str) -> list[str]:
    return ["+" + " ".join(sorted(writes)), *writes]


#: per batch: one manifest append, the samples' files, each completed image's files, its record
ORDER = (batch(*sample_writes("a", 0), *sample_writes("a", 1), *image_writes("a"), "records/a.json")
         + batch(*sample_writes("b", 0))
         + batch(*sample_writes("c", 0), "records/b.json")  # b diverged: its record, no mean
         + batch(*sample_writes("c", 1), *image_writes("c"), "records/c.json")
         + ["+metrics.csv summary.json", "metrics.csv", "summary.json", "+plots/psnr.png", "plots/psnr.png"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples") / "reference"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pictures, "psnr_plot", lambda curves, title: json.dumps([title, curves]).encode())
        m.setattr(os, "fsync", lambda fd: None)
        log = crash_at(m, 0, "after")
        assert run(root) == UNITS
    return root, log


def test_the_writes_come_in_the_documented_order(reference):
    root, log = reference
    assert log == ORDER
    records = RunFolder(root).records()
    assert records["b"]["status"] == "diverged" and records["b"]["diverged_samples"] == [1]
    assert records["a"]["samples"] == 2 and records["a"]["nfe"] == 4
    assert {"psnr", "std_mean", "psnr_samples_mean", "psnr_samples_std"} <= set(records["c"]["scores"])
    assert records["c"]["psnr_per_iterate"] == [12.0, 11.5]  # the samples' mean curve


@pytest.mark.parametrize("phase", ["during", "after"])
@pytest.mark.parametrize("k", range(1, len(ORDER) + 1))
def test_a_crash_at_any_write_then_the_same_run_gives_the_uninterrupted_result(reference, tmp_path, monkeypatch, k, phase):
    ref, _ = reference
    root = tmp_path / "run"
    with monkeypatch.context() as m:
        log = crash_at(m, k, phase)
        with pytest.raises(Crash):
            run(root)
    os.close(lock._HELD.pop(lock._key(root)).fd)  # what a kill does to the lock
    completed = log[: k - 1] if phase == "during" else log
    finished = {n for n in NAMES if record_file(n) in completed and n != "b"}
    assert RunFolder(root).finished() == finished
    assert foreign_files(root) == [] and RunFolder(root).problems([]) == []
    assert Manifest(root).listed() >= {w for w in completed if not w.startswith("+")}
    redone = run(root)
    assert redone == [u for u in UNITS if any(NAMES[i] not in finished for i, _ in u)]
    assert files(root) == files(ref)
    assert not [p for p in root.rglob("*") if fsio.is_temporary(p)]
    assert Manifest(root).listed() == Manifest(ref).listed()
