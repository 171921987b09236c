"""The run folder's write order, at unit level: the image writer (lit/writer.py) driven by hand
with fake restored batches, no Lightning loop, no solve. A crash is injected at every write and
every manifest append (during it or right after it); at each point the manifest lists every
file on disk, the finished images are exactly those whose record was written, the folder passes
the checks a new run makes, and running the same batches again gives the uninterrupted run's
files byte for byte, redoing only what was not finished.

The batches cover every kind of file a batch writes: restored, init and measured PNGs, the
evolution strip and GIF, per-image feature arrays (for dataset-level metrics), the batch grid,
the record, and a diverged image (a grid and a record only). The end-to-end crash runs through
the command line are in tests/lit/test_faults.py."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from crashes import Crash, crash_at

from lightning_redd import pictures
from lightning_redd.lit.restored import Restored
from lightning_redd.lit.writer import RestorationWriter
from lightning_redd.metrics.scorer import Scorer, quantise
from lightning_redd.runs import fsio, lock
from lightning_redd.runs.checks import foreign_files
from lightning_redd.runs.folder import RunFolder, record_file
from lightning_redd.runs.layout import LOCK_FILE, MANIFEST_DIR, SUMMARY
from lightning_redd.runs.manifest import Manifest

NAMES = ("a", "b", "c")  # one image per batch; "b" diverges
DIVERGED = {"b"}


def fake_batch(i: int, name: str) -> Restored:
    """A restored batch of one 3 x 12 x 12 image, deterministic from ``i``."""
    g = torch.Generator().manual_seed(i)
    x = torch.rand(1, 3, 12, 12, generator=g) * 2 - 1
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    x_init = x * (torch.rand(x.shape, generator=g) > 0.3)
    if name in DIVERGED:
        x_hat = torch.full_like(x, float("nan"))
    return Restored(names=(name,), index=torch.tensor([i]), x_hat=x_hat, x_init=x_init, y=x_init.clone(),
                    diverged=torch.tensor([name in DIVERGED]), nfe=3, seconds=0.5, x=x, frames=(x_init, x_hat),
                    psnr_curve=torch.tensor([[10.0 + i, 11.0 + i, 12.5 + i]], dtype=torch.float64), solver="toy")


BATCHES = [fake_batch(i, n) for i, n in enumerate(NAMES)]


class FeatureScorer(Scorer):
    """PSNR and SSIM, plus a per-image feature row (each channel's mean) and a dataset-level
    result from the stored rows: the arrays files take part in the write order."""

    def score(self, x_hat, ref, names, x_init=None):
        out = super().score(x_hat, ref, names, x_init)
        out.arrays = {"feat": quantise(x_hat).mean(dim=(2, 3))}
        return out

    def dataset(self, rows, arrays):
        return {"feat_mean": round(float(torch.stack([a["feat"] for a in arrays]).mean()), 6)}


class FakeStrategy:
    def barrier(self, name=None):
        pass

    def broadcast(self, obj, src=0):
        return obj


class FakeTrainer:
    """What the writer reads of a one-process Trainer."""

    global_rank, world_size, is_global_zero, global_step, logger, interrupted = 0, 1, True, 0, None, False

    def __init__(self, root: Path) -> None:
        self.default_root_dir, self.strategy = str(root), FakeStrategy()


def cheap(m: pytest.MonkeyPatch) -> None:
    """The plot's bytes from its curves (drawing it is tested elsewhere; its place in the order
    is tested here), and no fsync: an injected crash leaves the page cache as it is, and 50
    fsyncs a run would cost more than the rest of these tests (the end-to-end crash runs keep them)."""
    m.setattr(pictures, "psnr_plot", lambda curves, title: json.dumps([title, curves]).encode())
    m.setattr(os, "fsync", lambda fd: None)


@pytest.fixture(autouse=True)
def cheap_writes(monkeypatch):
    cheap(monkeypatch)


def run(root: Path) -> list[str]:
    """One run of the writer over :data:`BATCHES` as a resumed run sees them (finished images
    left out); returns the names it was given."""
    trainer, writer = FakeTrainer(root), RestorationWriter(scorer=FeatureScorer(), output_dir=str(root))
    writer.setup(trainer, None, "predict")
    writer.on_predict_start(trainer, None)
    done = RunFolder(root).finished(NAMES)
    given = [b for b in BATCHES if b.names[0] not in done]
    for i, batch in enumerate(given):
        writer.on_predict_batch_end(trainer, None, batch, None, i)
    writer.on_predict_end(trainer, None)
    writer.teardown(trainer, None, "predict")
    assert writer.summary["written"] == sum(b.names[0] not in DIVERGED for b in given)
    return [b.names[0] for b in given]


def die(root: Path) -> None:
    """What a kill does to the folder's lock: the kernel drops the flock, the holder's
    description stays in the file."""
    os.close(lock._HELD.pop(lock._key(root)).fd)


def files(root: Path) -> dict[str, bytes]:
    """Every file of the run but its bookkeeping; ``summary.json`` without this attempt's count."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != LOCK_FILE and not rel.startswith(MANIFEST_DIR + "/"):
            out[rel] = p.read_bytes()
    summary = json.loads(out.pop(SUMMARY))
    summary.pop("written"), summary.pop("folder")
    return {**out, SUMMARY: json.dumps(summary).encode()}


def image_writes(name: str) -> list[str]:
    if name in DIVERGED:
        return [f"+grids/{name}.png records/{name}.json", f"grids/{name}.png", f"records/{name}.json"]
    own = [f"restored/{name}.png", f"init/{name}.png", f"measured/{name}.png", f"evolution/{name}.png",
           f"evolution/{name}.gif", f"records/{name}.arrays.safetensors", f"grids/{name}.png", f"records/{name}.json"]
    return ["+" + " ".join(sorted(own))] + own


#: the documented order: per batch one manifest append listing its files, each image's files,
#: the grid, the record last; at the end metrics.csv and summary.json, then the plot
ORDER = [w for n in NAMES for w in image_writes(n)] + [
    "+metrics.csv summary.json", "metrics.csv", "summary.json", "+plots/psnr.png", "plots/psnr.png"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its folder and its log of writes."""
    root = tmp_path_factory.mktemp("order") / "reference"
    with pytest.MonkeyPatch.context() as m:
        cheap(m)
        log = crash_at(m, 0, "after")
        assert run(root) == list(NAMES)
    return root, log


def test_the_writes_come_in_the_documented_order(reference):
    root, log = reference
    assert log == ORDER
    assert Manifest(root).listed() == {w for w in ORDER if not w.startswith("+")}
    with open(root / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["status"]) for r in rows] == [("a", "ok"), ("b", "diverged"), ("c", "ok")]
    assert json.loads((root / SUMMARY).read_text())["dataset"]["feat_mean"] == pytest.approx(
        float(torch.cat([quantise(BATCHES[i].x_hat).mean(dim=(2, 3)) for i in (0, 2)]).mean()), abs=1e-6)


@pytest.mark.parametrize("phase", ["during", "after"])
@pytest.mark.parametrize("k", range(1, len(ORDER) + 1))
def test_a_crash_at_any_write_then_the_same_run_gives_the_uninterrupted_result(reference, tmp_path, monkeypatch, k, phase):
    ref, _ = reference
    root = tmp_path / "run"
    with monkeypatch.context() as m:
        log = crash_at(m, k, phase)
        with pytest.raises(Crash):
            run(root)
    die(root)
    assert len(log) == k
    completed = log[: k - 1] if phase == "during" else log
    # the record is the last write of an image: finished exactly when its record was written
    finished = {n for n in NAMES if record_file(n) in completed and n not in DIVERGED}
    assert RunFolder(root).finished() == finished
    # the manifest lists every file on disk (a partial line is ignored), so a new run may start here
    assert foreign_files(root) == [] and RunFolder(root).problems([]) == []
    assert Manifest(root).listed() >= {w for w in completed if not w.startswith("+")}
    assert run(root) == [n for n in NAMES if n not in finished]  # only the unfinished images are redone
    assert files(root) == files(ref)
    assert not [p for p in root.rglob("*") if fsio.is_temporary(p)]
    assert Manifest(root).listed() == Manifest(ref).listed()
    assert all((root / p).is_file() for p in Manifest(root).listed())
