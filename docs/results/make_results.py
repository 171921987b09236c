"""Builds docs/RESULTS.md's tables from the compare outputs (outputs/results/ by default) and
copies the figures into docs/results/figures/.

    python docs/results/make_results.py [OUT]

The prose lives in docs/results/results_text.md ({{TABLES:<task>}}, {{ABLATIONS}}, {{ITERATES}}
and {{PRESETS}} are replaced by what this script builds from the CSVs)."""
from __future__ import annotations

import csv
import math
import re
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "outputs/results"
DOCS = ROOT / "docs/results"
TASKS = {"inpainting_strokes": "Free-form inpainting (brush strokes, 20-30 %)", "inpainting_box": "Box inpainting (centre 32x32)",
         "sr_block4": "Block super-resolution x4 (16x16 measurement, sigma_y 0.01)",
         "deblur_gaussian": "Gaussian deblur (15x15, sigma 1.5 px, sigma_y 0.01)", "hdr": "HDR (nonlinear: clip(2x), sigma_y 0.01)"}
ORDER = ["red_diff", "dps", "pigdm", "ddrm", "classical"]


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def f(x: str, fmt: str) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return fmt.format(v) if math.isfinite(v) else "-"


def base(label: str) -> str:
    return label.split("[")[0]


def table(rs: list[dict], grid_col: bool = False) -> str:
    has_lpips = any(r.get("lpips") not in (None, "") for r in rs)
    head = ["solver"] + (["chosen values"] if grid_col else []) + ["images", "PSNR", "SSIM"] + (["LPIPS"] if has_lpips else []) + \
        ["PSNR init", "s/image", "NFE/image", "peak MiB", "+MiB/image"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        label = r["solver"]
        cells = [f"**{base(label)}**" if base(label) == "red_diff" else base(label)]
        if grid_col:
            cells.append(label[len(base(label)):].strip("[]") or "-")
        else:
            cells[0] = label if base(label) != "red_diff" else f"**{label}**"
        cells += [r["images"], f(r["psnr"], "{:.2f}"), f(r["ssim"], "{:.3f}")] + ([f(r.get("lpips"), "{:.3f}")] if has_lpips else [])
        cells += [f(r["psnr_init"], "{:.2f}"), f(r["s_per_image"], "{:.3g}"), f(r["nfe"], "{:.0f}"), f(r["peak_mib"], "{:.0f}"),
                  f(r["mib_per_image"], "{:.0f}")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def best_per_solver(rs: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for r in rs:
        try:
            p = float(r["psnr"])
        except ValueError:
            continue
        if math.isfinite(p) and (base(r["solver"]) not in best or p > float(best[base(r["solver"])]["psnr"])):
            best[base(r["solver"])] = r
    return [best[s] for s in ORDER if s in best]


def command(md: Path) -> str:
    m = re.search(r"^Command: `(.*)`$", md.read_text(), re.M) if md.is_file() else None
    return m.group(1) if m else "(not run)"


def copy_png(src: Path, dest: Path) -> str | None:
    if not src.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:  # RGB: a 256-colour palette bands the smooth regions, with dithering it is no smaller
        im.convert("RGB").save(dest, optimize=True)
    return str(dest.relative_to(ROOT / "docs"))


def task_section(task: str) -> str:
    tune, test = OUT / "tune" / task, OUT / "test" / task
    tr, te = rows(tune / "table.csv"), rows(test / "table.csv")
    s = []
    if te:
        s += [f"Test split ({te[0]['images']} images), every solver with its tuned values "
              f"(configs/ablations/tuned/{task}/solver/):", "", table(te),
              f"Command: `{command(test / 'table.md')}`", ""]
    if tr:
        s += ["Tuning split (4 crops): the best row of each solver's grid (the values its tuned fragment holds):", "",
              table(best_per_solver(tr), grid_col=True), f"Command (the whole grid; every row in "
              f"[results/tune/{task}/table.md](results/tune/{task}/table.md)): `{command(tune / 'table.md')}`", ""]
    fig = copy_png(test / "figure.png", DOCS / "figures" / f"{task}.png")
    if fig:
        s += [f"![{task}: measured, each solver, ground truth]({fig})", "",
              "Columns: the measurement, each tuned solver with its PSNR, the ground truth; rows: the 4 demo images and 1 crop.", ""]
    for src in (tune, test):  # the full tables next to the figures
        for ext in ("md", "csv"):
            p = src / f"table.{ext}"
            if p.is_file():
                d = DOCS / src.parent.name / task / p.name
                d.parent.mkdir(parents=True, exist_ok=True)
                d.write_text(p.read_text())
    return "\n".join(s)


def ablation_section() -> str:
    s = []
    for name, what in (("weighting", "time weighting g"), ("order", "time order")):
        d = OUT / "ablations" / name
        rs = rows(d / "table.csv")
        extra = OUT / "ablations" / f"{name}_lam"
        if rs and (extra / "table.csv").is_file():  # the same weightings at other lambdas
            lam = re.search(r"lam: ([\d.]+)", (ROOT / "configs/ablations/tuned/inpainting_strokes/solver/red_diff.yaml").read_text())
            rs = [{**r, "solver": f"{r['solver']}[lam={lam.group(1) if lam else 'tuned'}]"} for r in rs] + rows(extra / "table.csv")
        if not rs:
            s.append(f"({what}: not run)\n")
            continue
        gridded = any("[" in r["solver"] for r in rs)
        if gridded:  # the best lambda of each weighting (the full grid: results/ablations/<name>/table.md)
            best: dict[str, dict] = {}
            for r in rs:
                if math.isfinite(float(r["psnr"])) and (base(r["solver"]) not in best
                                                        or float(r["psnr"]) > float(best[base(r["solver"])]["psnr"])):
                    best[base(r["solver"])] = r
            rs = list(best.values())
        rs = sorted(rs, key=lambda r: -float(r["psnr"]))
        s += [f"RED-diff {what} ({rs[0]['images']} demo images, strokes, lr of the tuned inpainting_strokes fragment, 100 "
              "iterates" + (", each at its best lambda of 0.01 (the tuned value), 0.1 and 1.0; all rows in "
                            f"[results/ablations/{name}/table.md](results/ablations/{name}/table.md) and "
                            f"[results/ablations/{name}_lam/table.md](results/ablations/{name}_lam/table.md)" if gridded else
                            ", lambda of the tuned fragment") + "), best first:", "", table(rs, grid_col=gridded),
              f"Command: `{command(d / 'table.md')}`" + (f" and `{command(extra / 'table.md')}`" if gridded else ""), ""]
        for ext in ("md", "csv"):
            if gridded and (extra / f"table.{ext}").is_file():
                (DOCS / "ablations" / f"{name}_lam").mkdir(parents=True, exist_ok=True)
                (DOCS / "ablations" / f"{name}_lam" / f"table.{ext}").write_text((extra / f"table.{ext}").read_text())
        for ext in ("md", "csv"):
            if (d / f"table.{ext}").is_file():
                (DOCS / "ablations" / name).mkdir(parents=True, exist_ok=True)
                (DOCS / "ablations" / name / f"table.{ext}").write_text((d / f"table.{ext}").read_text())
    return "\n".join(s)


def iterates_section() -> str:
    d = OUT / "iterates"
    rs = rows(d / "iterates.csv")
    if not rs:
        return "(not run)\n"
    head = "| iterates | PSNR | SSIM | s/image | NFE/image |\n|---|---|---|---|---|\n"
    body = "".join(f"| {r['steps']} | {f(r['psnr'], '{:.2f}')} | {f(r['ssim'], '{:.3f}')} | {f(r['s_per_image'], '{:.3g}')} | "
                   f"{f(r['nfe'], '{:.0f}')} |\n" for r in rs)
    fig = copy_png(d / "iterates.png", DOCS / "figures" / "iterates.png")
    (DOCS / "iterates").mkdir(parents=True, exist_ok=True)
    for p in d.glob("iterates*.csv"):
        (DOCS / "iterates" / p.name).write_text(p.read_text())
    return head + body + f"\nCommand: `{command(d / 'iterates.md')}`\n\n" + (f"![PSNR versus iterates]({fig})\n" if fig else "")


def presets_section() -> str:
    out = ["| preset (configs/task/) | iterates | lr | lambda | tuning-split PSNR | starting estimate |", "|---|---|---|---|---|---|"]
    for p in sorted((ROOT / "configs/task").glob("*.yaml")):
        text = p.read_text()
        m = re.search(r"measured (\d+\.\d\d) dB mean PSNR vs (\d+\.\d\d) dB", text)
        k = re.search(r"num_steps: (\d+)\n\s+lr: ([\d.]+)\n\s+lam: ([\d.]+)", text)
        if m and k:
            out.append(f"| {p.stem} | {k.group(1)} | {k.group(2)} | {k.group(3)} | {m.group(1)} | {m.group(2)} |")
        else:
            out.append(f"| {p.stem} | - | - | - | (not a 64 px preset) | - |")
    return "\n".join(out) + "\n"


def summary_table() -> str:
    """Per task, each solver's best tuning-split PSNR and (when run) its test-split PSNR with the tuned values."""
    head = "| task | " + " | ".join(ORDER) + " | starting estimate (pinv) |\n|---|" + "---|" * (len(ORDER) + 1) + "\n"
    body = ""
    for task, name in TASKS.items():
        tr = {base(r["solver"]): r for r in best_per_solver(rows(OUT / "tune" / task / "table.csv"))}
        te = {base(r["solver"]): r for r in rows(OUT / "test" / task / "table.csv")}
        top = max((float(r["psnr"]) for r in tr.values()), default=math.nan)
        cells = []
        for s in ORDER:
            if s not in tr:
                cells.append("n/a")
                continue
            c = f(tr[s]["psnr"], "{:.2f}")
            c = f"**{c}**" if float(tr[s]["psnr"]) == top else c
            cells.append(c + (f" / {f(te[s]['psnr'], '{:.2f}')}" if s in te else " / -"))
        init = next(iter(tr.values()))["psnr_init"] if tr else ""
        tinit = next(iter(te.values()))["psnr_init"] if te else ""
        body += f"| {name} | " + " | ".join(cells) + f" | {f(init, '{:.2f}')} / {f(tinit, '{:.2f}')} |\n"
    return head + body


def main() -> None:
    text = (DOCS / "results_text.md").read_text()
    for task in TASKS:
        text = text.replace("{{TABLES:%s}}" % task, task_section(task))
    text = text.replace("{{ABLATIONS}}", ablation_section()).replace("{{ITERATES}}", iterates_section())
    text = text.replace("{{PRESETS}}", presets_section()).replace("{{SUMMARY_TABLE}}", summary_table())
    (ROOT / "docs/RESULTS.md").write_text(text)
    print(ROOT / "docs/RESULTS.md")


if __name__ == "__main__":
    main()
