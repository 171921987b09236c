"""Compare solvers on the same images, operator parameters and seeds: one table, one figure.

    python -m lightning_redd.lit.compare table --out outputs/cmp --config configs/demo.yaml \\
        --solver red_diff=configs/solver/red_diff.yaml --solver dps=configs/solver/dps.yaml \\
        --set red_diff:model.solver.init_args.num_steps=100 --set data.limit=2
    python -m lightning_redd.lit.compare table ... --grid red_diff:model.solver.init_args.lr=0.25,0.5 --emit-best DIR
    python -m lightning_redd.lit.compare table ... --solvers 'configs/ablations/solver/weighting_*.yaml'
    python -m lightning_redd.lit.compare iterates ... --steps 25 50 100 200

Every solver runs through the real ``lightning-redd predict`` (:func:`lightning_redd.lit.cli.cli`)
with the same base configs, so its measurements, masks and noise are exactly what ``predict``
draws from ``(data.seed, image index)``; each run gets its own folder ``OUT/<label>/`` (the
usual layout: ``restored/``, ``measured/``, ``init/``, ``records/``). By default each run is a
fresh subprocess, so that the peak memory is the solver's own.

Columns (``table.md`` / ``table.csv``): mean PSNR and SSIM (from the records the CLI writes),
LPIPS (AlexNet, on the 8-bit restored PNGs; only when its weight file is found),
the PSNR of the solver's starting estimate, seconds per image (median over batches of the
predict batch's wall time divided by its images: measuring ``y`` plus the whole solve; model
loading, data setup and writing are outside it and reported as ``load s``), denoiser
evaluations per image (``nfe`` of the records), and peak memory while solving: on CPU the
process's resident-set high-water mark (``VmHWM``, reset when predict starts, so model loading
does not count) and its rise above the resident size at that start per image; on CUDA
``torch.cuda.max_memory_allocated`` (reset likewise).

``--grid LABEL:KEY=V1,V2`` runs the product of the listed values as separate rows; with
``--emit-best DIR`` the best row (highest mean PSNR) of each solver is written as a config
fragment ``DIR/<label>.yaml``. ``--solvers GLOB`` adds every matching fragment, labelled by its file
stem less the pattern's prefix before ``*``. ``--resume`` reuses a run whose folder holds the same
arguments, the same config contents (less the keys the arguments set) and a record for every image
it solved; anything else runs again. ``iterates`` runs each solver at several ``num_steps`` and
writes ``iterates.csv`` and a PSNR-versus-iterates plot ``iterates.png``.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
import yaml
from PIL import Image, ImageDraw, ImageFont

from lightning_redd.runs.memory import reset_peak_rss

MODULE = "lightning_redd.lit.compare"  # not __name__: that is "__main__" under python -m
CLOCK_FILE = "compare_clock.json"
RUN_FILE = "compare_run.json"
LPIPS_FILE = "alexnet-owt-7be5be79.pth"
STEPS_KEY = "model.solver.init_args.num_steps"
TILE_PAD, HEADER, CAPTION = 4, 14, 12
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207), (140, 86, 75)]


# ---------------------------------------------------------------------------- measuring one run
def _status_kib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class SolveClock(L.Callback):
    """Times every predict batch and the peak memory of the solve; writes
    ``<default_root_dir>/compare_clock.json`` at the end of predict."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, int]] = []
        self.info: dict = {}

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_predict_start(self, trainer, pl_module) -> None:
        self.batches, dev = [], pl_module.device
        self.info = {"device": dev.type, "predict_start": time.time(), "threads": torch.get_num_threads()}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            self.info.update(memory="cuda max_memory_allocated", start_mib=torch.cuda.memory_allocated(dev) / 2**20)
            return
        rss = _status_kib("VmRSS")
        self.info["load_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reset = reset_peak_rss() and rss is not None
        self.info.update(memory="cpu VmHWM (reset at predict start)" if reset else "cpu ru_maxrss (process peak)",
                         start_mib=(rss or 0.0) / 1024)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        self.batches.append((time.perf_counter() - self._t0, len(batch["name"])))

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.info["device"] == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        elif self.info["memory"].startswith("cpu VmHWM"):
            peak = (_status_kib("VmHWM") or 0.0) / 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.info.update(peak_mib=peak, batches=self.batches, batch_size=max((n for _, n in self.batches), default=0))
        if trainer.is_global_zero:
            Path(trainer.default_root_dir, CLOCK_FILE).write_text(json.dumps(self.info, indent=1) + "\n")


# ---------------------------------------------------------------------------- what to run
@dataclass(frozen=True)
class Spec:
    """One row of the table: a label, a solver fragment and ``key=value`` overrides."""

    label: str
    fragment: str
    sets: tuple[tuple[str, str], ...] = ()
    grid_keys: tuple[str, ...] = ()  # keys of sets that came from --grid

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label).strip("_")

    @property
    def base(self) -> str:
        return self.label.split("[")[0].split("@")[0]


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"compare: {what} {text!r} needs the form KEY=VALUE (e.g. model.solver.init_args.lr=0.5)")
    return key.lstrip("-"), value


def _scoped(text: str, labels: list[str], what: str) -> tuple[str | None, str]:
    """``LABEL:rest`` -> (LABEL, rest) when LABEL names a solver, else (None, text) (all solvers)."""
    head, sep, rest = text.partition(":")
    if sep and head in labels:
        return head, rest
    if sep and "=" not in head and head not in labels:
        raise SystemExit(f"compare: {what} {text!r} names solver {head!r}; known: {labels}")
    return None, text


def _globbed(pattern: str) -> list[tuple[str, str]]:
    """``(label, path)`` of every file matching ``pattern``; the label is the file's stem less
    the pattern's literal prefix (``solver/weighting_*.yaml`` -> ``linear``, ``sqrt``, ...)."""
    paths = sorted(Path().glob(pattern)) if not Path(pattern).is_absolute() else sorted(Path("/").glob(pattern.lstrip("/")))
    if not paths:
        raise SystemExit(f"compare: --solvers {pattern!r} matches no file")
    prefix = Path(pattern).name.split("*")[0] if "*" in Path(pattern).name else ""
    return [(p.stem[len(prefix):] if p.stem.startswith(prefix) and p.stem != prefix else p.stem, str(p)) for p in paths]


def build_specs(args: argparse.Namespace) -> list[Spec]:
    """The rows: every ``--solver`` / ``--solvers`` entry with its ``--set`` values, expanded
    over its ``--grid`` values (one row per combination)."""
    pairs = [_key_value(s, "--solver") for s in args.solver]
    for pattern in args.solvers:
        pairs += _globbed(pattern)
    if not pairs:
        raise SystemExit("compare: give at least one --solver LABEL=FRAGMENT.yaml (or --solvers 'GLOB')")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"compare: solver labels must be unique, got {labels}")
    for _, path in pairs:
        if not Path(path).is_file():
            raise SystemExit(f"compare: solver fragment {path} does not exist")
    sets: dict[str | None, list[tuple[str, str]]] = {}
    for text in args.set:
        label, rest = _scoped(text, labels, "--set")
        sets.setdefault(label, []).append(_key_value(rest, "--set"))
    grids: dict[str, list[tuple[str, list[str]]]] = {}
    for text in args.grid:
        label, rest = _scoped(text, labels, "--grid")
        key, values = _key_value(rest, "--grid")
        for target in [label] if label else labels:
            grids.setdefault(target, []).append((key, values.split(",")))
    specs = []
    for label, path in pairs:
        own = tuple(sets.get(None, []) + sets.get(label, []))
        axes = grids.get(label, [])
        for combo in itertools.product(*[values for _, values in axes]):
            chosen = tuple((key, v) for (key, _), v in zip(axes, combo))
            name = label + ("[" + ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in chosen) + "]" if chosen else "")
            specs.append(Spec(name, path, own + chosen, tuple(k for k, _ in chosen)))
    return specs


def cli_args(spec: Spec, configs: list[str], root: Path) -> list[str]:
    """The ``lightning-redd predict`` arguments of one run."""
    out = ["predict"]
    for c in [*configs, spec.fragment]:
        out += ["--config", c]
    out += [f"--{k}={v}" for k, v in spec.sets]
    return out + ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", "--overwrite", "true",
                  f"--trainer.callbacks+={MODULE}.SolveClock"]


# ---------------------------------------------------------------------------- running
def _pruned(contents: dict | None, spec: Spec) -> dict | None:
    """Config contents less the keys the run's arguments override (those cannot change it)."""
    if contents is None:
        return None
    keys = {k for k, _ in spec.sets} | {"trainer.default_root_dir", "trainer.enable_progress_bar"}
    out = json.loads(json.dumps(contents))
    for doc in out.values():
        for key in keys:
            *parents, last = key.split(".")
            node = doc
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    return out


def run_spec(spec: Spec, configs: list[str], out: Path, *, isolate: str, threads: int | None, resume: bool) -> dict:
    """Run one row (or reuse it with ``resume`` when its arguments and the contents of its
    config files, less the keys the arguments override, are unchanged); returns
    ``{"spec", "root", "args", "clock", "wall", "records"}``."""
    from lightning_redd.runs.folder import RunFolder

    root = out / spec.folder
    args = cli_args(spec, configs, root)
    contents = json.loads(json.dumps({c: yaml.safe_load(Path(c).read_text()) for c in [*configs, spec.fragment]}))
    saved = root / RUN_FILE
    if resume and saved.is_file():
        done = json.loads(saved.read_text())
        if done.get("args") == args and _pruned(done.get("contents"), spec) == _pruned(contents, spec):
            records = RunFolder(root).records()
            if len(records) >= _images_run(done["clock"]):
                print(f"compare: {spec.label}: reusing {root}", file=sys.stderr)
                return {**done, "spec": spec, "root": root, "records": records}
            print(f"compare: {spec.label}: {root} holds {len(records)} of {_images_run(done['clock'])} records; "
                  "running it again", file=sys.stderr)
    saved.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / CLOCK_FILE).unlink(missing_ok=True)
    print(f"compare: {spec.label}: lightning-redd {shlex.join(args)}", file=sys.stderr)
    started = time.perf_counter()
    if isolate == "process":
        cmd = [sys.executable, "-m", MODULE, "child"] + (["--threads", str(threads)] if threads else []) + ["--", *args]
        with open(root / "compare_child.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = (root / "compare_child.log").read_text()[-3000:]
            raise RuntimeError(f"compare: {spec.label} failed (exit {rc}); end of {root / 'compare_child.log'}:\n{tail}")
    else:
        from lightning_redd.lit.cli import cli

        if threads:
            torch.set_num_threads(threads)
        argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when both sys.argv[1:] and args are given
        try:
            cli(args)
        finally:
            sys.argv = argv
    wall = time.perf_counter() - started
    if not (root / CLOCK_FILE).is_file():
        raise RuntimeError(f"compare: {spec.label}: the run ended without {root / CLOCK_FILE} (did predict run?)")
    clock = json.loads((root / CLOCK_FILE).read_text())
    records = RunFolder(root).records()
    if len(records) < _images_run(clock):
        raise RuntimeError(f"compare: {spec.label}: {_images_run(clock)} images solved but {len(records)} records "
                           f"written under {root / 'records'}; not saved as finished")
    saved.write_text(json.dumps({"args": args, "contents": contents, "clock": clock, "wall": wall, "isolate": isolate},
                                indent=1) + "\n")
    return {"spec": spec, "root": root, "args": args, "clock": clock, "wall": wall, "isolate": isolate,
            "records": records}


def _images_run(clock: dict) -> int:
    """How many images the clocked predict batches held."""
    return sum(n for _, n in clock.get("batches", []))


def _child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="compare child")
    p.add_argument("--threads", type=int)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from lightning_redd.lit.cli import cli

    cli([x for x in a.rest if x != "--"] if a.rest[:1] == ["--"] else a.rest)
    return 0


# ---------------------------------------------------------------------------- scoring
def run_data(root: Path) -> dict:
    """``data.root``, ``image_size``, ``channels``, ``resize`` of a run (from its run_config.yaml)."""
    sig = yaml.safe_load((root / "run_config.yaml").read_text())["signature"]
    return {k: sig[f"data.{k}"] for k in ("root", "image_size", "channels", "resize")}


def ground_truth(root: Path) -> dict[str, torch.Tensor]:
    """The run's input images as the CLI loads them, by name, ``(C, S, S)`` in ``[-1, 1]``."""
    from lightning_redd.data.images import list_images, load_image

    d = run_data(root)
    return {p.stem: load_image(p, d["image_size"], d["channels"], d["resize"]) for p in list_images(Path(d["root"]), True)}


def read_png(path: Path) -> torch.Tensor:
    """An 8-bit PNG as ``(C, H, W)`` in ``[-1, 1]``."""
    img = Image.open(path)
    img = img.convert("L" if img.mode in ("L", "I;16", "I") else "RGB")
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, -1)
    return x.permute(2, 0, 1).float().div(127.5).sub(1.0)


def lpips_metric(weights: str | None):
    """``(LPIPS instance, None)`` when its backbone weights are found, else ``(None, reason)``."""
    from lightning_redd.metrics.lpips import LPIPS

    try:
        metric = LPIPS("alex", weights=weights)
        metric.network()  # builds it now: a missing weight file is found before any row is scored
    except (FileNotFoundError, ModuleNotFoundError) as err:
        return None, str(err)
    return metric, None


def summarise(run: dict, metric, truth: dict[str, torch.Tensor]) -> dict:
    """One table row from a run's records and clock."""
    recs = run["records"]
    ok = [r for r in recs.values() if r["status"] == "ok"]
    clock = run["clock"]
    per_image = [s / n for s, n in clock["batches"] if n]
    mean = lambda key: statistics.fmean(r["scores"][key] for r in ok) if ok else math.nan  # noqa: E731
    row = {"solver": run["spec"].label, "images": len(ok), "diverged": len(recs) - len(ok),
           "psnr": mean("psnr"), "ssim": mean("ssim"), "psnr_init": mean("psnr_init"),
           "s_per_image": statistics.median(per_image) if per_image else math.nan,
           "load_s": run["wall"] - sum(s for s, _ in clock["batches"]),
           "nfe": statistics.fmean(r.get("nfe") or 0 for r in ok) if ok else math.nan,
           "peak_mib": clock["peak_mib"],
           "mib_per_image": (clock["peak_mib"] - clock["start_mib"]) / max(1, clock["batch_size"])}
    if metric is not None:
        vals = [float(metric(read_png(run["root"] / "restored" / f"{n}.png")[None], truth[n][None])[0])
                for n in sorted(r["name"] for r in ok)]
        row["lpips"] = statistics.fmean(vals) if vals else math.nan
    return row


# ---------------------------------------------------------------------------- outputs
COLUMNS = [("solver", "solver", "{}"), ("images", "images", "{}"), ("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
           ("lpips", "LPIPS", "{:.3f}"), ("psnr_init", "PSNR init", "{:.2f}"), ("s_per_image", "s/img", "{:.3g}"),
           ("nfe", "NFE/img", "{:.0f}"), ("peak_mib", "peak MiB", "{:.0f}"), ("mib_per_image", "+MiB/img", "{:.0f}"),
           ("load_s", "load s", "{:.1f}")]


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
        cells = [f.format(r[k]) + (f" ({r['diverged']} diverged)" if k == "images" and r["diverged"] else "") for k, _, f in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def figure_size(rows: int, cols: int, tile: int) -> tuple[int, int]:
    """(width, height) of :func:`write_figure`'s grid."""
    return TILE_PAD + cols * (tile + TILE_PAD), HEADER + TILE_PAD + rows * (tile + CAPTION + TILE_PAD)


def _fit(draw, text: str, width: int, font) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def _restored_tile(run: dict, name: str, like: torch.Tensor) -> tuple[torch.Tensor, str]:
    record = run["records"].get(name, {})
    if record.get("status") != "ok":  # diverged (no PNG) or missing: a black tile
        return -torch.ones_like(like), record.get("status", "missing")
    return read_png(run["root"] / "restored" / f"{name}.png"), f"{record['scores']['psnr']:.2f} dB"


def write_figure(runs: list[dict], truth: dict[str, torch.Tensor], path: Path, names: list[str], scale: int = 2) -> Path:
    """Grid PNG: per image (row) the measurement (or ``pinv(y)`` when ``y`` is not an image of
    the input's size), each solver's restored image with its PSNR, and the ground truth."""
    from lightning_redd.runs.folder import to_uint8

    first = runs[0]["root"]
    size = next(iter(truth.values())).shape[-1]
    tile = size * scale
    measured = (first / "measured" / f"{names[0]}.png").is_file() if names else True
    heads = ["measured y" if measured else "pinv(y)"] + [r["spec"].label for r in runs] + ["ground truth"]
    canvas = Image.new("RGB", figure_size(len(names), len(heads), tile), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for c, head in enumerate(heads):
        draw.text((TILE_PAD + c * (tile + TILE_PAD), 1), _fit(draw, head, tile, font), fill="black", font=font)
    for r, name in enumerate(names):
        top = HEADER + TILE_PAD + r * (tile + CAPTION + TILE_PAD)
        src = first / ("measured" if measured else "init") / f"{name}.png"
        tiles = [(read_png(src), "")] + [_restored_tile(run, name, truth[name]) for run in runs] + [(truth[name], name)]
        for c, (x, caption) in enumerate(tiles):
            arr = to_uint8(x.expand(3, -1, -1) if x.shape[0] == 1 else x).numpy()
            left = TILE_PAD + c * (tile + TILE_PAD)
            canvas.paste(Image.fromarray(arr).resize((tile, tile), Image.Resampling.NEAREST), (left, top))
            draw.text((left, top + tile), _fit(draw, caption, tile, font), fill="black", font=font)
    canvas.save(path)
    return path


def line_plot(series: dict[str, list[tuple[float, float]]], path: Path, *, xlabel: str, ylabel: str,
              size: tuple[int, int] = (640, 420)) -> Path:
    """A log-x line plot drawn with PIL: one coloured line with markers per series, a legend."""
    W, H = size
    left, right, top, bottom = 60, 150, 20, 45
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts if math.isfinite(y)]
    ylo, yhi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(0.5, 0.08 * (yhi - ylo))
    ylo, yhi = math.floor(ylo - pad), math.ceil(yhi + pad)
    lx0, lx1 = math.log(xs[0]), math.log(xs[-1]) if xs[-1] > xs[0] else math.log(xs[0]) + 1
    px = lambda x: left + (math.log(x) - lx0) / (lx1 - lx0) * (W - left - right)  # noqa: E731
    py = lambda y: top + (yhi - y) / (yhi - ylo) * (H - top - bottom)  # noqa: E731
    img = Image.new("RGB", size, "white")
    d, font = ImageDraw.Draw(img), _font()
    d.rectangle([left, top, W - right, H - bottom], outline="black")
    step = max(1, math.ceil((yhi - ylo) / 8))
    for yv in range(int(ylo), int(yhi) + 1, step):
        d.line([left, py(yv), W - right, py(yv)], fill=(225, 225, 225))
        d.text((left - 28, py(yv) - 6), f"{yv:d}", fill="black", font=font)
    for xv in xs:
        d.line([px(xv), top, px(xv), H - bottom], fill=(235, 235, 235))
        d.text((px(xv) - 10, H - bottom + 4), f"{xv:g}", fill="black", font=font)
    d.text(((left + W - right) // 2 - 40, H - 18), xlabel, fill="black", font=font)
    d.text((4, top - 14), ylabel, fill="black", font=font)
    for i, (name, pts) in enumerate(series.items()):
        colour, pts = COLOURS[i % len(COLOURS)], sorted((x, y) for x, y in pts if math.isfinite(y))
        if len(pts) > 1:
            d.line([(px(x), py(y)) for x, y in pts], fill=colour, width=2)
        for x, y in pts:
            d.ellipse([px(x) - 3, py(y) - 3, px(x) + 3, py(y) + 3], fill=colour)
        d.line([W - right + 10, top + 8 + 16 * i, W - right + 30, top + 8 + 16 * i], fill=colour, width=3)
        d.text((W - right + 34, top + 2 + 16 * i), _fit(d, name, right - 36, font), fill="black", font=font)
    img.save(path)
    return path


def emit_best(rows: list[dict], runs: list[dict], folder: Path, command: str) -> list[Path]:
    """Per solver, its highest-PSNR row as a fragment ``folder/<solver>.yaml`` (its own fragment
    with every ``model.*`` override of that row set in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for base in dict.fromkeys(run["spec"].base for run in runs):
        cands = [(row, run) for row, run in zip(rows, runs) if run["spec"].base == base and math.isfinite(row["psnr"])]
        if not cands:
            continue
        row, run = max(cands, key=lambda c: c[0]["psnr"])
        doc = yaml.safe_load(Path(run["spec"].fragment).read_text()) or {}
        for key, value in run["spec"].sets:
            if key.startswith("model."):
                node = doc
                *parents, last = key.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[last] = yaml.safe_load(value)
        grid = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in run["spec"].sets if k in run["spec"].grid_keys)
        head = (f"# Tuned {base}: {grid or 'no grid'} had the best mean PSNR ({row['psnr']:.2f} dB over {row['images']} "
                f"images) of its grid.\n# Written by: {command}\n")
        path = folder / f"{base}.yaml"
        path.write_text(head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        written.append(path)
    return written


# ---------------------------------------------------------------------------- commands
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (one sub-folder per solver run)")
    p.add_argument("--config", action="append", default=[], help="base config(s), merged left to right, before each solver")
    p.add_argument("--solver", action="append", default=[], help="LABEL=FRAGMENT.yaml (repeatable)")
    p.add_argument("--solvers", action="append", default=[], metavar="GLOB",
                   help="every matching fragment, labelled by its stem less the pattern's prefix before '*'")
    p.add_argument("--set", action="append", default=[], help="[LABEL:]KEY=VALUE override (all solvers without LABEL)")
    p.add_argument("--grid", action="append", default=[], help="[LABEL:]KEY=V1,V2,... one row per combination")
    p.add_argument("--lpips-weights", help=f"AlexNet weights ({LPIPS_FILE}); default $TORCH_HOME/hub/checkpoints/")
    p.add_argument("--isolate", choices=("process", "none"), default="process",
                   help="process: a fresh subprocess per run (own peak memory); none: in this process")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in each run")
    p.add_argument("--resume", action="store_true", help="reuse runs whose folder holds the same arguments, config contents and a record per image")
    p.add_argument("--title", default="Solver comparison")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lightning-redd compare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="one row per solver (and grid value): table, CSV and figure")
    _common(t)
    t.add_argument("--emit-best", help="write each solver's best grid row as DIR/<solver>.yaml")
    t.add_argument("--figure-images", type=int, default=4, help="rows of the figure (first N images by name)")
    t.add_argument("--figure-names", nargs="+", help="these images in the figure instead")
    t.add_argument("--figure-scale", type=int, default=2, help="pixel zoom of the figure's tiles")
    it = sub.add_parser("iterates", help="PSNR versus number of iterates: CSV, table and plot")
    _common(it)
    it.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200, 500, 1000])
    return p.parse_args(argv)


def _header(args: argparse.Namespace, runs: list[dict], command: str, lpips_note: str | None) -> str:
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


def run_all(args: argparse.Namespace, specs: list[Spec]) -> tuple[list[dict], list[dict], str | None, dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metric, note = lpips_metric(args.lpips_weights)  # before any run: a wrong --lpips-weights fails at once
    if note and args.lpips_weights:
        raise SystemExit(f"compare: --lpips-weights {args.lpips_weights}: {note}")
    if note:
        print(f"compare: LPIPS left out: {note}", file=sys.stderr)
    runs = [run_spec(s, args.config, out, isolate=args.isolate, threads=args.threads, resume=args.resume) for s in specs]
    truth = ground_truth(runs[0]["root"])
    return runs, [summarise(r, metric, truth) for r in runs], note, truth


def cmd_table(args: argparse.Namespace, command: str) -> int:
    out = Path(args.out)
    runs, rows, note, truth = run_all(args, build_specs(args))
    md = _header(args, runs, command, note) + write_table(rows, out)
    names = args.figure_names or sorted(runs[0]["records"])[: args.figure_images]
    write_figure(runs, truth, out / "figure.png", names, scale=args.figure_scale)
    md += "\n![measured, solvers, ground truth](figure.png)\n"
    if args.emit_best:
        paths = emit_best(rows, runs, Path(args.emit_best), command)
        md += "\nTuned fragments: " + ", ".join(str(p) for p in paths) + "\n"
    (out / "table.md").write_text(md)
    print(md)
    return 0


def cmd_iterates(args: argparse.Namespace, command: str) -> int:
    out = Path(args.out)
    specs = [replace(s, label=f"{s.label}@{n}", sets=s.sets + ((STEPS_KEY, str(n)),)) for s in build_specs(args) for n in args.steps]
    runs, rows, note, _ = run_all(args, specs)
    for row, run in zip(rows, runs):
        row["steps"] = int(dict(run["spec"].sets)[STEPS_KEY])
    with open(out / "iterates.csv", "w", newline="") as fh:
        keys = ["solver", "steps", "psnr", "ssim", "psnr_init", "s_per_image", "nfe", "images"] + (["lpips"] if note is None else [])
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    series: dict[str, list[tuple[float, float]]] = {}
    for row, run in zip(rows, runs):
        series.setdefault(run["spec"].label.rsplit("@", 1)[0], []).append((row["steps"], row["psnr"]))
    line_plot(series, out / "iterates.png", xlabel="iterates (log scale)", ylabel="mean PSNR (dB)")
    md = _header(args, runs, command, note) + write_table(rows, out, stem="iterates_table")
    md += "\n![PSNR versus iterates](iterates.png)\n"
    (out / "iterates.md").write_text(md)
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-redd compare``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return _child(argv[1:])
    args = parse(argv)
    command = "python -m lightning_redd.lit.compare " + shlex.join(argv)
    return cmd_table(args, command) if args.command == "table" else cmd_iterates(args, command)


if __name__ == "__main__":
    sys.exit(main())
