"""The output folder of a run: its layout, its write order, and what is finished.

Layout under the output folder (``trainer.default_root_dir``)::

    restored/<name>.png    the restored image (clipped to [-1, 1], 8-bit)
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

Write order of one image: its PNGs, then its record. The record is the "finished" marker: an
image is finished only when its record says ``status: ok`` and its restored PNG exists, so a
kill at any point of the sequence leaves the image unfinished and a re-run redoes it (and
only it). ``metrics.csv`` is derived from the records, so it is the same whatever the number
of processes that wrote them, and a kill before it is rewritten loses nothing.

Every file is written by :func:`lightning_redd.runs.fsio.atomic_write` (temporary name, fsync,
rename): no truncated files; stale temporaries of a killed run are removed at the next start.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

from lightning_redd.runs import fsio

IMAGE_DIRS = ("restored", "measured", "init")
PICTURE_DIRS = ("grids", "evolution", "plots")
RECORDS = "records"
METRICS = "metrics.csv"
RUN_CONFIG = "run_config.yaml"
SUMMARY = "summary.json"
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


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


class RunFolder:
    """One owner of an output folder: checks it, writes into it, and says what is finished."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    def image_path(self, kind: str, name: str) -> Path:
        if kind not in IMAGE_DIRS:
            raise ValueError(f"unknown image kind {kind!r}; allowed: {IMAGE_DIRS}")
        return self.root / kind / f"{name}.png"

    def record_path(self, name: str) -> Path:
        return self.root / RECORDS / f"{name}.json"

    @property
    def folders(self) -> list[Path]:
        return [self.root, self.root / RECORDS] + [self.root / k for k in IMAGE_DIRS + PICTURE_DIRS]

    # ------------------------------------------------------------------ checks (before any compute)
    def problems(self, inputs: Iterable[Path] = ()) -> list[str]:
        """Everything that would make writing here fail or destroy a file; ``[]`` if none.

        ``inputs``: folders the run reads (images, masks); the output folder may neither be
        one of them, lie inside one, nor contain one, so outputs can never overwrite inputs.
        """
        out = []
        root = self.root.expanduser().resolve()
        for folder in inputs:
            folder = Path(folder).expanduser().resolve()
            if _inside(root, folder) or _inside(folder, root):
                out.append(
                    f"output folder {self.root} and input folder {folder} overlap (one lies inside the other), so "
                    "restored images could overwrite inputs; set trainer.default_root_dir to a folder outside the inputs"
                )
        out += self._writable_problem()
        out += self._foreign_problems()
        return out

    def _writable_problem(self) -> list[str]:
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return [f"output folder {self.root}: {existing} is not a folder; choose another trainer.default_root_dir"]
        try:  # a real probe: permissions, ACLs, read-only mounts and immutable folders all show here
            fd, probe = tempfile.mkstemp(prefix=".lightning_redd_probe.", suffix=fsio.TMP_SUFFIX, dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            return [f"output folder {self.root} is not writable ({existing}: {err.strerror}); choose a writable "
                    "trainer.default_root_dir or fix its permissions"]
        return []

    def _foreign_problems(self) -> list[str]:
        metrics = self.root / METRICS
        if not metrics.is_file():
            return []
        if not (self.root / RECORDS).is_dir():
            return [f"{metrics} was not written by lightning-redd (no {RECORDS}/ folder beside it) and would be "
                    "overwritten; move it away or choose another trainer.default_root_dir"]
        with open(metrics, newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header[: len(BASE_FIELDS)]) != BASE_FIELDS:
            return [f"{metrics} has columns {header}, not a lightning-redd metrics table (which starts with "
                    f"{list(BASE_FIELDS)}); move it away or choose another trainer.default_root_dir"]
        return []

    # ------------------------------------------------------------------ state
    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files an interrupted write left behind."""
        return fsio.remove_stale_temporaries(self.folders)

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
    def write_image(self, kind: str, name: str, x: torch.Tensor) -> Path:
        """Save ``(C, H, W)`` in ``[-1, 1]`` as ``<kind>/<name>.png``."""
        data = png_bytes(x)
        return fsio.atomic_write(self.image_path(kind, name), lambda fh: fh.write(data))

    def arrays_path(self, name: str) -> Path:
        return self.root / RECORDS / f"{name}.arrays.safetensors"

    def write_arrays(self, name: str, arrays: dict[str, torch.Tensor]) -> Path:
        """Per-image feature vectors (e.g. Inception features for KID/FID), before the record."""
        from safetensors.torch import save

        data = save({k: v.detach().float().cpu().contiguous() for k, v in arrays.items()})
        return fsio.atomic_write(self.arrays_path(name), lambda fh: fh.write(data))

    def read_arrays(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self.arrays_path(name)
        return load_file(str(path)) if path.is_file() else {}

    def write_picture(self, relative: str, x: torch.Tensor | bytes) -> Path:
        """A picture for people (``grids/``, ``evolution/``, ``plots/``): ``(C, H, W)`` in
        ``[-1, 1]`` saved as PNG, or ready-made file bytes."""
        if Path(relative).parts[0] not in PICTURE_DIRS:
            raise ValueError(f"pictures go under {PICTURE_DIRS}, got {relative!r}")
        data = x if isinstance(x, bytes) else png_bytes(x)
        return fsio.atomic_write(self.root / relative, lambda fh: fh.write(data))

    def write_record(self, name: str, record: dict) -> Path:
        """Write ``records/<name>.json`` (the last write of an image)."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
        text = json.dumps({"name": name, **record}, indent=1)
        return fsio.atomic_write_text(self.record_path(name), text + "\n")

    def write_metrics(self, names: Sequence[str] | None = None) -> Path:
        """(Re)write ``metrics.csv`` from the records: one row per image, sorted by name.

        ``names``: restrict to these images (e.g. the run's images); default every record.
        """
        records = self.records()
        rows = [records[n] for n in sorted(records) if names is None or n in names]
        fields = list(BASE_FIELDS)
        for r in rows:
            fields += [k for k in r.get("scores", {}) if k not in fields]

        def write(fh) -> None:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for r in rows:
                scores = {k: _fmt(v) for k, v in r.get("scores", {}).items()}
                writer.writerow({"name": r["name"], "status": r["status"], **scores})
            fh.write(text.getvalue().encode("utf-8"))

        return fsio.atomic_write(self.root / METRICS, write)

    def remove_run(self) -> int:
        """Delete what a run wrote here (images, records, metrics.csv, run_config.yaml; only
        those files, never other files or folders); returns how many files were removed."""
        removed = 0
        for folder in [self.root / RECORDS] + [self.root / k for k in IMAGE_DIRS + PICTURE_DIRS]:
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_file() and (p.suffix in (".png", ".gif", ".json", ".safetensors") or fsio.is_temporary(p)):
                        p.unlink()
                        removed += 1
        for name in (METRICS, RUN_CONFIG, SUMMARY):
            if (self.root / name).is_file():
                (self.root / name).unlink()
                removed += 1
        return removed
