"""Components get what they need through their constructors: the writer, its scorer and the
SIGUSR1 handler work when constructed with explicit arguments in a bare ``Trainer`` (no CLI),
results reach the callbacks only through Lightning's ``outputs``, and nothing in the package
searches the trainer for another component."""
from __future__ import annotations

import ast
import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ConvPrior, make_images

from lightning_redd.data.folder import ImageFolderData
from lightning_redd.lit.module import RestorationModule
from lightning_redd.lit.requeue import RequeueOnSignal
from lightning_redd.lit.restored import Restored
from lightning_redd.lit.writer import RestorationWriter
from lightning_redd.metrics.scorer import Scorer
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.solvers.red_diff import RedDiff

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_redd"
SIZE, STEPS = 16, 3


def module() -> RestorationModule:
    return RestorationModule(prior=ConvPrior(), operator=Inpainting(mask="random", drop_fraction=0.4),
                             solver=RedDiff(num_steps=STEPS, order="random"))


def trainer(root: Path, callbacks: list) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=1, inference_mode=False, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(root), callbacks=callbacks)


def test_a_bare_trainer_with_explicit_callbacks_writes_the_run(tmp_path):
    images = make_images(tmp_path / "in", n=3, size=20)
    writer = RestorationWriter(scorer=Scorer(["psnr"], score_init=False), output_dir=str(tmp_path / "out"))
    data = ImageFolderData(root=str(images), image_size=SIZE, batch_size=2, output_dir=str(tmp_path / "out"))
    trainer(tmp_path / "elsewhere", [writer, RequeueOnSignal(requeue=False)]).predict(module(), data, return_predictions=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"] and list(rows[0]) == ["name", "status", "psnr"]
    assert writer.summary["written"] == 3 and writer.summary["means"]["psnr"] == pytest.approx(
        sum(float(r["psnr"]) for r in rows) / 3, abs=1e-4)
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").rglob("*.png"))


def test_fit_needs_its_iterate_count_from_the_constructor(tmp_path):
    images = make_images(tmp_path / "in", n=2, size=20)
    data = ImageFolderData(root=str(images), image_size=SIZE, output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"fit needs ImageFolderData\(repeats=<the solver's num_iterates>\)"):
        trainer(tmp_path / "out", [RestorationWriter()]).fit(module(), data)
    model = module()
    data = ImageFolderData(root=str(images), image_size=SIZE, output_dir=str(tmp_path / "fit"), repeats=model.num_iterates)
    writer = RestorationWriter(output_dir=str(tmp_path / "fit"))
    trainer(tmp_path / "fit", [writer]).fit(model, data)
    assert writer.summary["written"] == 2 and sorted(p.stem for p in (tmp_path / "fit" / "restored").iterdir()) == ["img0", "img1"]


def test_without_a_writer_the_results_come_back_from_predict(tmp_path):
    """No callback at all: nothing is written, and predict returns one typed result per batch."""
    images = make_images(tmp_path / "in", n=3, size=20)
    data = ImageFolderData(root=str(images), image_size=SIZE, batch_size=2, output_dir=str(tmp_path / "out"))
    out = trainer(tmp_path / "out", []).predict(module(), data)
    assert [type(r) for r in out] == [Restored, Restored] and [r.names for r in out] == [("img0", "img1"), ("img2",)]
    assert out[0].x_hat.shape == (2, 3, SIZE, SIZE) and out[0].psnr_curve.shape == (2, STEPS) and out[0].nfe == STEPS
    assert torch.isfinite(out[1].x_hat).all() and not (tmp_path / "out" / "restored").exists()


def _calls(tree: ast.AST) -> list[str]:
    """Dotted names read in ``tree`` (``a.b.c``) and the first argument of getattr calls."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts, cur = [node.attr], node.value
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                names.append(".".join([cur.id, *reversed(parts)]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and node.args:
            first = node.args[0]
            names.append(f"getattr({first.id if isinstance(first, ast.Name) else '...'})")
    return names


def test_no_component_searches_the_trainer_for_another():
    """Static check over the package: nobody iterates ``trainer.callbacks``, reads a side
    channel on the module (``emitted``), or probes the module with ``getattr``."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for name in _calls(ast.parse(path.read_text())):
            if name.endswith("trainer.callbacks") or name.endswith(".emitted") or name == "getattr(pl_module)":
                found.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert found == []
