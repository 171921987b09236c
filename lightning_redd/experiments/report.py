"""The outputs of a comparison: the table (``table.md`` / ``table.csv``), the figure, the
PSNR-versus-iterates CSV and plot, and the best settings of each solver as config fragments.

Rows are :func:`~lightning_redd.experiments.scoring.summarise`'s dicts; runs are
:func:`~lightning_redd.experiments.runner.run_spec`'s. The pictures are drawn by
:mod:`lightning_redd.pictures`; this module gathers what goes in them and writes the files.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch
import yaml

from lightning_redd import pictures
from lightning_redd.experiments.scoring import read_png, run_data

#: the table's columns: (row key, header, format)
COLUMNS = [("solver", "solver", "{}"), ("images", "images", "{}"), ("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
           ("lpips", "LPIPS", "{:.3f}"), ("psnr_init", "PSNR init", "{:.2f}"), ("s_per_image", "s/img", "{:.3g}"),
           ("nfe", "NFE/img", "{:.0f}"), ("peak_mib", "peak MiB", "{:.0f}"), ("mib_per_image", "+MiB/img", "{:.0f}"),
           ("load_s", "load s", "{:.1f}")]
#: the columns of ``iterates.csv`` (``lpips`` added when it was computed)
ITERATE_FIELDS = ["solver", "steps", "psnr", "ssim", "psnr_init", "s_per_image", "nfe", "images"]


def write_table(rows: list[dict], out: Path, stem: str = "table") -> str:
    """``OUT/<stem>.csv`` (all fields) and the Markdown table (returned)."""
    keys = [k for k, _, _ in COLUMNS if any(k in r for r in rows)] + ["diverged"]
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    shown = [(k, h, f) for k, h, f in COLUMNS if k in keys]
    lines = ["| " + " | ".join(h for _, h, _ in shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for r in rows:
        note = f" ({r['diverged']} diverged)" if r["diverged"] else ""
        cells = [f.format(r[k]) + (note if k == "images" else "") for k, _, f in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def header(args: argparse.Namespace, runs: list[dict], command: str, lpips_note: str | None) -> str:
    """The Markdown above a table: title, command, data, device, and how each column is measured."""
    clock = runs[0]["clock"]
    data = run_data(runs[0]["root"])
    lines = [f"## {args.title}", "", f"Command: `{command}`", "",
             f"Base configs: {', '.join(args.config) or '(none)'}; images: {data['root']} ({data['image_size']} px); "
             f"batch {clock['batch_size']}; device {clock['device']}, {clock['threads']} threads; runs "
             + ("each in a fresh process" if args.isolate == "process" else "in one process") + ".",
             f"Memory: {clock['memory']}; `peak MiB` is the whole process during the solve of a batch, `+MiB/img` its "
             "rise above the resident size at predict start, per image.",
             "Time: `s/img` = median over batches of (batch wall time / images), measurement + solve; `load s` = the "
             "rest of the run (config, prior loading, data checks, writing)."]
    lines.append("LPIPS (AlexNet, 8-bit PNGs): " + ("computed." if lpips_note is None else f"column left out: {lpips_note}"))
    return "\n".join(lines) + "\n\n"


def _restored_tile(run: dict, name: str, like: torch.Tensor) -> tuple[torch.Tensor, str]:
    record = run["records"].get(name, {})
    if record.get("status") != "ok":  # diverged (no PNG) or missing: a black tile
        return -torch.ones_like(like), record.get("status", "missing")
    return read_png(run["root"] / "restored" / f"{name}.png", like.shape[0]), f"{record['scores']['psnr']:.2f} dB"


def write_figure(runs: list[dict], truth: dict[str, torch.Tensor], path: Path, names: list[str], scale: int = 2) -> Path:
    """Grid PNG: per image (row) the measurement (or ``pinv(y)`` when ``y`` is not an image of
    the input's size), each solver's restored image with its PSNR, and the ground truth; tiles
    of the input's size times ``scale``."""
    first = runs[0]["root"]
    tile = next(iter(truth.values())).shape[-1] * scale
    measured = (first / "measured" / f"{names[0]}.png").is_file() if names else True
    heads = ["measured y" if measured else "pinv(y)"] + [r["spec"].label for r in runs] + ["ground truth"]
    rows = []
    for name in names:
        src = first / ("measured" if measured else "init") / f"{name}.png"
        rows.append([(read_png(src), "")] + [_restored_tile(run, name, truth[name]) for run in runs] + [(truth[name], name)])
    path.write_bytes(pictures.labelled_grid(heads, rows, tile=tile))
    return path


def write_iterates(rows: list[dict], runs: list[dict], out: Path, steps_key: str, lpips: bool) -> None:
    """``OUT/iterates.csv`` (a ``steps`` column from each run's ``steps_key`` override) and the
    mean-PSNR-versus-iterates plot ``OUT/iterates.png``, one line per solver."""
    for row, run in zip(rows, runs):
        row["steps"] = int(dict(run["spec"].sets)[steps_key])
    with open(out / "iterates.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ITERATE_FIELDS + (["lpips"] if lpips else []), extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    series: dict[str, list[tuple[float, float]]] = {}
    for row, run in zip(rows, runs):
        series.setdefault(run["spec"].label.rsplit("@", 1)[0], []).append((row["steps"], row["psnr"]))
    png = pictures.line_plot(series, xlabel="iterates (log scale)", ylabel="mean PSNR (dB)")
    (out / "iterates.png").write_bytes(png)


def _with_overrides(spec, doc: dict) -> dict:
    """The fragment ``doc`` with every ``model.*`` override of ``spec`` set in it."""
    for key, value in spec.sets:
        if key.startswith("model."):
            node = doc
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = yaml.safe_load(value)
    return doc


def emit_best(rows: list[dict], runs: list[dict], folder: Path, command: str) -> list[Path]:
    """Per solver, its highest-PSNR row as a fragment ``folder/<solver>.yaml`` (its own fragment
    with every ``model.*`` override of that row set in it); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for base in dict.fromkeys(run["spec"].base for run in runs):
        cands = [(row, run) for row, run in zip(rows, runs) if run["spec"].base == base and math.isfinite(row["psnr"])]
        if not cands:
            continue
        row, run = max(cands, key=lambda c: c[0]["psnr"])
        spec = run["spec"]
        doc = _with_overrides(spec, yaml.safe_load(Path(spec.fragment).read_text()) or {})
        grid = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in spec.sets if k in spec.grid_keys)
        head = (f"# Tuned {base}: {grid or 'no grid'} had the best mean PSNR ({row['psnr']:.2f} dB over {row['images']} "
                f"images) of its grid.\n# Written by: {command}\n")
        path = folder / f"{base}.yaml"
        path.write_text(head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        written.append(path)
    return written
