"""The ``lightning-redd`` subcommands that are not Lightning runs: ``evaluate`` and ``list``.

    lightning-redd evaluate --restored DIR --reference DIR [--metrics psnr,ssim,lpips] [--out table.csv]
    lightning-redd list [tasks|solvers|priors|configs]
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from lightning_redd.runs import fsio


def evaluate_main(argv: list[str]) -> int:
    """Score any two folders matched by file stem, as ``predict`` scores its own outputs."""
    from lightning_redd.metrics.evaluate import evaluate_folders

    ap = argparse.ArgumentParser(prog="lightning-redd evaluate", description=(
        "Score restored images against references matched by file stem (restored/x.png with reference/x.jpg). "
        "The table has the columns of predict's metrics.csv; images are loaded as predict loads them."))
    ap.add_argument("--restored", required=True, type=Path, help="folder of restored images")
    ap.add_argument("--reference", required=True, type=Path, help="folder of ground-truth images")
    ap.add_argument("--metrics", default="psnr,ssim", help="comma-separated: psnr, ssim, lpips, kid, fid, top1, top5 (default psnr,ssim)")
    ap.add_argument("--image-size", type=int, default=None, help="side both are loaded at (default: the restored images' size)")
    ap.add_argument("--resize", default="center_crop_resize", choices=("center_crop_resize", "resize", "center_crop"),
                    help="how references (and, with --image-size, restored images) are fitted to that size (as data.resize did for the run)")
    ap.add_argument("--out", type=Path, default=None, help="write the table here as CSV (default: print it)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lpips-weights", default=None, help="LPIPS backbone file (default: $TORCH_HOME/hub/checkpoints)")
    ap.add_argument("--inception-weights", default=None, help="FID Inception file (default: $TORCH_HOME/hub/checkpoints)")
    ap.add_argument("--classifier", default="resnet50.tv_in1k", help="timm model for top1/top5")
    ap.add_argument("--classifier-weights", default=None)
    ap.add_argument("--labels", default=None, help="label file for top1/top5 (JSON {name: index} or CSV name,label)")
    args = ap.parse_args(argv)
    options = {k: v for k, v in {"lpips_weights": args.lpips_weights, "inception_weights": args.inception_weights,
                                 "classifier": args.classifier, "classifier_weights": args.classifier_weights,
                                 "labels": args.labels}.items() if v is not None}
    try:
        result = evaluate_folders(args.restored, args.reference, args.metrics, image_size=args.image_size,
                                  resize=args.resize, device=args.device, **options)
    except (FileNotFoundError, ValueError) as err:
        print(f"lightning-redd evaluate: error: {err}", file=sys.stderr)
        return 2
    table = format_table(result.rows)
    if args.out is not None:
        fsio.atomic_write_text(args.out, table)
    else:
        sys.stdout.write(table)
    for note in result.notes:
        print(f"lightning-redd evaluate: note: {note}", file=sys.stderr)
    for side, names in (("restored", result.unmatched_restored), ("reference", result.unmatched_reference)):
        if names:
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            print(f"lightning-redd evaluate: {len(names)} {side} image(s) without a match, not scored: {shown}", file=sys.stderr)
    means = ", ".join(f"{k} {v:.4f}" for k, v in result.summary().items() if k != "n_matched" and not math.isnan(v))
    print(f"lightning-redd evaluate: {len(result.rows)} matched pair(s); {means}"
          + (f"; table: {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def format_table(rows: list[dict]) -> str:
    """Rows as predict's metrics.csv writes them: ``name``, then each metric to 4 decimals."""
    fields = list(rows[0]) if rows else ["name"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (v if k == "name" else f"{float(v):.4f}") for k, v in r.items()})
    return buf.getvalue()


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _section(title: str, rows: list[tuple[str, str, str]], how: str) -> list[str]:
    width = max((len(r[0]) for r in rows), default=0)
    cls = max((len(r[1]) for r in rows), default=0)
    return [f"{title} ({how})"] + [f"  {n:<{width}}  {c:<{cls}}  {d}" for n, c, d in rows] + [""]


def _fragments(folder: str) -> list[tuple[str, str, str]]:
    import yaml

    from lightning_redd import resources

    root = resources.bundled_dir("configs") / folder
    rows = []
    for p in sorted(root.glob("*.yaml")):
        doc = yaml.safe_load(p.read_text()) or {}
        model = doc.get("model", {})
        part = next((model[k] for k in ("operator", "solver", "prior") if k in model), {})
        rows.append((p.stem, str(part.get("class_path", "")).rsplit(".", 1)[-1], _first_comment(p)[:110]))
    return rows


def list_main(argv: list[str]) -> int:
    """What can be combined: tasks, solvers, priors (each with its config fragment) and every bundled config."""
    from lightning_redd import resources

    ap = argparse.ArgumentParser(prog="lightning-redd list", description=list_main.__doc__)
    ap.add_argument("what", nargs="?", default="all", choices=("all", "tasks", "solvers", "priors", "configs"))
    what = ap.parse_args(argv).what
    lines: list[str] = []
    if what in ("all", "tasks"):
        lines += _section("Tasks", _fragments("task"), "add --config task/<name>, e.g. on top of --config demo")
    if what in ("all", "solvers"):
        lines += _section("Solvers", _fragments("solver"), "add --config solver/<name>")
    if what in ("all", "priors"):
        lines += _section("Priors", _fragments("prior"), "add --config prior/<name>")
    if what in ("all", "configs"):
        names = resources.config_names()
        lines += [f"Bundled configs ({len(names)}; --config <name> works from any folder, e.g. --config demo)"]
        lines += [f"  {n}" for n in names] + [""]
    if what == "all":
        lines.append("Options of one class: lightning-redd predict --model.solver.help RedDiff (or --model.operator.help "
                     "GaussianBlur, --model.prior.help ADMPrior)")
    print("\n".join(lines).rstrip())
    return 0
