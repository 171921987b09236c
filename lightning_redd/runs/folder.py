"""The output folder of a run: its layout, its write order, and what is finished.

Layout under the output folder (``trainer.default_root_dir``)::

    restored/<name>.png    the restored image (clipped to [-1, 1], 8-bit); with several samples
                           per image, their pixelwise mean
    samples/<name>_s<k>.png  sample k of the image (several samples per image only)
    std/<name>.png         the samples' pixelwise standard deviation, a gray map (several samples only)
    measured/<name>.png    the measurement, when it is an image of the input's size
    init/<name>.png        the solver's starting estimate
    records/<name>.json    the image's record: status, scores; written LAST
    records/<name>.arrays.safetensors   per-image features for dataset-level metrics (KID/FID), if any
    summary.json           counts, mean scores and dataset-level metrics of the folder's images
    grids/<first name>.png one comparison grid per batch: measurement | initial | restored | truth
    evolution/<name>.png   (opt-in) the estimate every few iterates, as a strip and a .gif
    plots/psnr.png         PSNR against the iterate, from the CSV logger (needs matplotlib)
    metrics.csv            one row per image, merged from the records at the end of a run
    run_config.yaml        the run's resolved config (written by the CLI)
    manifest/rank<R>.txt   every file the run wrote, listed before it is written (:mod:`.manifest`)
    .lightning-redd.lock   held by the running run (:mod:`.lock`)

Write order of one image: its PNGs, then its record. The record is the "finished" marker: an
image is finished only when its record says ``status: ok`` and its restored PNG exists, so a
kill at any point of the sequence leaves the image unfinished and a re-run redoes it (and
only it). ``metrics.csv`` is derived from the records, so it is the same whatever the number
of processes that wrote them, and a kill before it is rewritten loses nothing.

Every file is written by :func:`lightning_redd.runs.fsio.atomic_write` (temporary name, fsync,
rename) after its path was added to the manifest: no truncated files, and the run owns exactly
what it wrote. At the next start (under the lock) the stale temporaries of a killed run, of
listed paths only, are removed and the manifest compacted (:meth:`RunFolder.start`).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from lightning_redd.runs import checks, fsio
from lightning_redd.runs.errors import FolderProblem
from lightning_redd.runs.layout import (  # noqa: F401 (the layout's names, re-exported)
    IMAGE_DIRS, LOGS, METRICS, PICTURE_DIRS, RECORDS, RUN_CONFIG, SUMMARY,
)
from lightning_redd.runs.manifest import Manifest

STATUSES = ("ok", "diverged")
#: columns every metrics.csv starts with; score columns follow in the order first seen
BASE_FIELDS = ("name", "status")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` in ``[-1, 1]`` -> ``(H, W, C)`` uint8 (clipped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu()


def png_bytes(x: torch.Tensor) -> bytes:
    """``(C, H, W)`` in ``[-1, 1]`` encoded as an 8-bit PNG."""
    arr = to_uint8(x).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def _fmt(v) -> str:
    """A score as metrics.csv shows it: 4 decimals (empty when missing)."""
    return "" if v is None else f"{float(v):.4f}"


def arrays_bytes(arrays: dict[str, torch.Tensor]) -> bytes:
    """Per-image feature vectors as a safetensors file."""
    from safetensors.torch import save

    return save({k: v.detach().float().cpu().contiguous() for k, v in arrays.items()})


def record_bytes(name: str, record: dict) -> bytes:
    """An image's record as its JSON file (``status`` is one of :data:`STATUSES`)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
    return (json.dumps({"name": name, **record}, indent=1) + "\n").encode("utf-8")


def image_file(kind: str, name: str) -> str:
    """``<kind>/<name>.png``, relative to the output folder."""
    if kind not in IMAGE_DIRS:
        raise ValueError(f"unknown image kind {kind!r}; allowed: {IMAGE_DIRS}")
    return f"{kind}/{name}.png"


def record_file(name: str) -> str:
    return f"{RECORDS}/{name}.json"


def arrays_file(name: str) -> str:
    return f"{RECORDS}/{name}.arrays.safetensors"


class RunFolder:
    """One owner of an output folder: checks it, writes into it, and says what is finished.

    ``rank``: the process rank writing through this object (its manifest journal)."""

    def __init__(self, root: str | os.PathLike, rank: int = 0) -> None:
        self.root = Path(root)
        self.manifest = Manifest(self.root, rank)

    # ------------------------------------------------------------------ paths
    def image_path(self, kind: str, name: str) -> Path:
        return self.root / image_file(kind, name)

    def record_path(self, name: str) -> Path:
        return self.root / record_file(name)

    def arrays_path(self, name: str) -> Path:
        return self.root / arrays_file(name)

    @property
    def folders(self) -> list[Path]:
        return [self.root, self.root / RECORDS] + [self.root / k for k in IMAGE_DIRS + PICTURE_DIRS]

    # ------------------------------------------------------------------ checks (before any compute)
    def problems(self, inputs: Iterable[Path] = ()) -> list[FolderProblem]:
        """Everything that would make writing here fail or touch a file the run did not write;
        ``[]`` if none (:mod:`lightning_redd.runs.checks`: overlap with the ``inputs``, symbolic
        links, writability, files the manifest does not list)."""
        return checks.problems(self.root, inputs)

    # ------------------------------------------------------------------ state
    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files an interrupted write of this run left (of listed paths only)."""
        listed = self.manifest.listed()
        return fsio.remove_stale_temporaries(self.folders, lambda dest: dest.relative_to(self.root).as_posix() in listed)

    def start(self) -> list[Path]:
        """At the start of a run, under the lock: remove what an interrupted run left half-written
        (its stale temporaries) and compact the manifest; returns the temporaries removed."""
        removed = self.remove_stale_temporaries()
        self.manifest.compact()
        return removed

    def records(self) -> dict[str, dict]:
        """Every readable record, by name (a record is only ever complete: atomic writes)."""
        folder = self.root / RECORDS
        if not folder.is_dir():
            return {}
        out = {}
        for p in sorted(folder.glob("*.json")):
            if fsio.is_temporary(p):
                continue
            with open(p) as fh:
                out[p.stem] = json.load(fh)
        return out

    def finished(self, names: Sequence[str] | None = None) -> set[str]:
        """Names whose record says ``ok`` and whose restored image exists."""
        done = {n for n, r in self.records().items() if r.get("status") == "ok" and self.image_path("restored", n).is_file()}
        return done if names is None else done & set(names)

    # ------------------------------------------------------------------ writes
    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write ``data`` to ``<root>/<relative>``, listed in the manifest first."""
        self.manifest.claim([relative])
        return fsio.atomic_write(self.root / relative, lambda fh: fh.write(data))

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_all(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write several files in order (a batch's), all listed in the manifest by one append first."""
        self.manifest.claim([rel for rel, _ in files])
        for rel, data in files:
            self.write_bytes(rel, data)

    def write_image(self, kind: str, name: str, x: torch.Tensor) -> Path:
        """Save ``(C, H, W)`` in ``[-1, 1]`` as ``<kind>/<name>.png``."""
        return self.write_bytes(image_file(kind, name), png_bytes(x))

    def write_arrays(self, name: str, arrays: dict[str, torch.Tensor]) -> Path:
        """Per-image feature vectors (e.g. Inception features for KID/FID), before the record."""
        return self.write_bytes(arrays_file(name), arrays_bytes(arrays))

    def read_arrays(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.arrays_path(name)
        return load_file(str(path)) if path.is_file() else {}

    def write_picture(self, relative: str, x: torch.Tensor | bytes) -> Path:
        """A picture for people (``grids/``, ``evolution/``, ``plots/``): ``(C, H, W)`` in
        ``[-1, 1]`` saved as PNG, or ready-made file bytes."""
        if Path(relative).parts[0] not in PICTURE_DIRS:
            raise ValueError(f"pictures go under {PICTURE_DIRS}, got {relative!r}")
        return self.write_bytes(relative, x if isinstance(x, bytes) else png_bytes(x))

    def write_record(self, name: str, record: dict) -> Path:
        """Write ``records/<name>.json`` (the last write of an image)."""
        return self.write_bytes(record_file(name), record_bytes(name, record))

    def write_metrics(self, names: Sequence[str] | None = None) -> Path:
        """(Re)write ``metrics.csv`` from the records: one row per image, sorted by name.

        ``names``: restrict to these images (e.g. the run's images); default every record.
        """
        records = self.records()
        rows = [records[n] for n in sorted(records) if names is None or n in names]
        fields = list(BASE_FIELDS)
        for r in rows:
            fields += [k for k in r.get("scores", {}) if k not in fields]

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            scores = {k: _fmt(v) for k, v in r.get("scores", {}).items()}
            writer.writerow({"name": r["name"], "status": r["status"], **scores})
        return self.write_text(METRICS, text.getvalue())

    def remove_run(self) -> int:
        """Delete the files the manifest lists (``--overwrite``): never a file the run did not
        write, nor a folder; then empty the manifest. Returns how many files were removed."""
        real = self.root.resolve()
        removed = 0
        for rel in sorted(self.manifest.listed()):
            path = self.root / rel
            if checks.inside(path.parent.resolve(), real) and (path.is_file() or path.is_symlink()):
                path.unlink()
                removed += 1
        self.remove_stale_temporaries()
        self.manifest.clear()
        return removed
