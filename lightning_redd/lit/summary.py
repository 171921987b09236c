"""The end-of-run summary the CLI prints: counts, mean scores, where the files are, how long."""
from __future__ import annotations

from pathlib import Path


def format_summary(summary: dict, seconds: float) -> str:
    """A few lines from :attr:`RestorationWriter.summary` and the run's wall time."""
    diverged = summary["diverged"]
    skipped = summary["ok"] - summary["written"]
    lines = [
        f"lightning-redd: {summary['images']} image(s) in {summary['folder']}: {summary['written']} restored now, "
        f"{skipped} already finished, {len(diverged)} diverged ({seconds:.1f} s)"
    ]
    if summary["means"]:
        means = ", ".join(f"{k} {v:.4f}" for k, v in summary["means"].items())
        lines.append(f"  mean over {summary['ok']} restored image(s): {means}")
    if summary.get("dataset"):
        lines.append("  dataset: " + ", ".join(f"{k} {v:.4g}" for k, v in summary["dataset"].items()))
    if diverged:
        shown = ", ".join(diverged[:20]) + (f" and {len(diverged) - 20} more" if len(diverged) > 20 else "")
        lines.append(f"  {len(diverged)} of {summary['images']} images diverged (non-finite estimate; no image written, "
                     f"status=diverged in metrics.csv; a re-run tries them again): {shown}")
    root = Path(summary["folder"])
    lines.append(f"  images: {root / 'restored'}   table: {root / 'metrics.csv'}")
    return "\n".join(lines)
