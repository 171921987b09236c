"""The problem that ``vs_reference.py`` and ``cpu_switches.py`` solve: centre-box inpainting
(half the side missing, noise-free: ``configs/task/inpainting_box.yaml``) of six held-out 64 px
photographs with the shipped embedded prior.

The six images: the four demo photographs (``data/demo/*.png``) and two held-out test crops
of ``lightning_redd.data.photos`` (``coffee_test00.png``, ``motorcycle_left_test00.png``: two
photographs, so that the set is not mostly the cat; written from scikit-image's bundled
photographs, so they need scikit-image, the ``[train]`` extra). None of them was trained on.

The operator, measurement and solver seeds are the ones the Lightning module uses for image
index ``i`` of the folder (``seed`` 0, ``list_images`` order), so an in-memory solve here and a
``lightning-redd predict`` over the same folder solve the identical ``y``.
"""
from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lightning_redd import seeding
from lightning_redd.data.images import list_images, load_image
from lightning_redd.operators.inpainting import Inpainting

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
#: held-out test crops added to the four demo images (``python -m lightning_redd.data.photos export-split``).
EXTRA_CROPS = ("coffee_test00.png", "motorcycle_left_test00.png")
IMAGE_SIZE = 64
#: where the six PNGs are written by default.
DEFAULT_IMAGES = str(Path(tempfile.gettempdir()) / "lightning_redd_bench_images")
#: ``configs/task/inpainting_box.yaml``: the operator and RED-diff's tuned knobs for it.
BOX = dict(mask="box", box_fraction=0.5, box_position="center", sigma_y=0.0)
SOLVER = dict(lr=0.25, lam=0.01)


def image_folder(folder: str | Path) -> Path:
    """``folder`` holding the six PNGs (written once; existing files are kept)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for png in sorted(DEMO.glob("*.png")):
        if not (folder / png.name).is_file():
            shutil.copyfile(png, folder / png.name)
    missing = [n for n in EXTRA_CROPS if not (folder / n).is_file()]
    if missing:
        from lightning_redd.data.photos import export_split

        tmp = folder / ".split"
        export_split(tmp, "test", size=IMAGE_SIZE)
        for name in missing:
            shutil.copyfile(tmp / name, folder / name)
        shutil.rmtree(tmp)
    return folder


def load_images(folder: str | Path) -> tuple[torch.Tensor, list[str]]:
    """``(6, 3, 64, 64)`` in ``[-1, 1]`` in the data module's order, and the file stems."""
    files = list_images(Path(folder))
    return torch.stack([load_image(f, IMAGE_SIZE) for f in files]), [f.stem for f in files]


def box_problem(x: torch.Tensor, names: list[str], seed: int = 0) -> dict:
    """The bound operator and ``y`` of image ``i`` exactly as ``RestorationModule.measure`` makes them."""
    idx = list(range(x.shape[0]))
    op = Inpainting(**BOX).bind([seeding.image_seed(seed, i, "operator") for i in idx], tuple(x.shape[1:]), names=names,
                                device=x.device)
    with torch.no_grad():
        y = op.measure(x, seeding.generators(seed, idx, "noise"))
    return {"x": x, "op": op, "y": y, "idx": idx, "names": names, "seed": seed}


def solver_generators(problem: dict) -> list[torch.Generator]:
    return seeding.generators(problem["seed"], problem["idx"], "solver")


class Timer:
    """Wall and CPU seconds of a block (``children``: the CPU time of waited-for child processes)."""

    def __init__(self, children: bool = False) -> None:
        self.children = children

    def _cpu(self) -> float:
        if self.children:
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime
        return time.process_time()

    def __enter__(self) -> "Timer":
        self.t0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.t0, self._cpu() - self.c0
