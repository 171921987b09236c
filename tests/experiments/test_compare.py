"""The compare command (lightning_redd.experiments) end to end (2 demo images, a few iterates,
in-process runs through the real CLI), its grid expansion and tuned-fragment output, and its
line plot (lightning_redd.pictures)."""
from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lightning_redd import pictures
from lightning_redd.experiments import cli, scoring, spec

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--config", str(ROOT / "configs/demo.yaml"), "--set", f"data.root={ROOT / 'data/demo'}", "--set", "data.limit=2",
        "--set", "data.batch_size=2", "--isolate", "none", "--threads", "1"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_table_figure_and_tuned_fragments(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no LPIPS weights there
    out, tuned = tmp_path / "cmp", tmp_path / "tuned" / "solver"
    rc = cli.main(["table", "--out", str(out), *BASE,
                       "--solver", f"red_diff={ROOT / 'configs/solver/red_diff.yaml'}",
                       "--set", "red_diff:model.solver.init_args.num_steps=2",
                       "--solver", f"classical={ROOT / 'configs/solver/classical.yaml'}",
                       "--set", "classical:model.solver.init_args.num_steps=5",
                       "--grid", "classical:model.solver.init_args.regulariser=tv,laplace",
                       "--emit-best", str(tuned)])
    assert rc == 0
    rows = read_csv(out / "table.csv")
    assert [r["solver"] for r in rows] == ["red_diff", "classical[regulariser=tv]", "classical[regulariser=laplace]"]
    for r in rows:
        assert r["images"] == "2" and math.isfinite(float(r["psnr"])) and math.isfinite(float(r["s_per_image"]))
        assert float(r["peak_mib"]) > 0
    assert float(rows[0]["nfe"]) == 2 and float(rows[1]["nfe"]) == 0
    # no LPIPS weights: the column is left out, and the table says why
    assert "lpips" not in rows[0]
    md = (out / "table.md").read_text()
    assert "LPIPS" in md and "left out" in md and "alexnet-owt-7be5be79.pth" in md and "| LPIPS |" not in md
    # the figure: 2 images x (measurement, 3 solvers, ground truth), 64 px tiles zoomed 2x
    with Image.open(out / "figure.png") as fig:
        assert fig.size == pictures.labelled_grid_size(2, 5, 128)
    # the best classical row became a fragment carrying its grid value and step budget
    best = max(rows[1:], key=lambda r: float(r["psnr"]))["solver"].split("=")[1].rstrip("]")
    doc = yaml.safe_load((tuned / "classical.yaml").read_text())
    assert doc["model"]["solver"]["init_args"]["regulariser"] == best
    assert doc["model"]["solver"]["init_args"]["num_steps"] == 5
    assert (tuned / "red_diff.yaml").is_file()


@pytest.mark.slow
def test_iterates_csv_and_plot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "it"
    rc = cli.main(["iterates", "--out", str(out), *BASE, "--solver", f"classical={ROOT / 'configs/solver/classical.yaml'}",
                       "--steps", "3", "30"])
    assert rc == 0
    rows = read_csv(out / "iterates.csv")
    assert [(r["solver"], r["steps"]) for r in rows] == [("classical@3", "3"), ("classical@30", "30")]
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    with Image.open(out / "iterates.png") as img:
        assert img.size == (640, 420)


def ns(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"solver": [], "solvers": [], "set": [], "grid": [], **kw})


def test_specs_expand_grids_and_scope_overrides():
    frag = str(ROOT / "configs/solver/red_diff.yaml")
    specs = spec.build_specs(ns(solver=[f"a={frag}", f"b={frag}"], set=["data.limit=2", "a:x.lr=1"],
                                   grid=["a:x.lam=0.1,0.2", "x.eta=0,1"]))
    assert [s.label for s in specs] == ["a[lam=0.1,eta=0]", "a[lam=0.1,eta=1]", "a[lam=0.2,eta=0]", "a[lam=0.2,eta=1]",
                                        "b[eta=0]", "b[eta=1]"]
    assert specs[0].sets == (("data.limit", "2"), ("x.lr", "1"), ("x.lam", "0.1"), ("x.eta", "0"))
    assert specs[-1].sets == (("data.limit", "2"), ("x.eta", "1")) and specs[-1].base == "b"
    args = spec.cli_args(specs[0], ["base.yaml"], Path("/o/a"))
    assert args[:5] == ["predict", "--config", "base.yaml", "--config", frag] and "--x.lam=0.1" in args
    with pytest.raises(SystemExit, match="names solver 'c'"):
        spec.build_specs(ns(solver=[f"a={frag}"], set=["c:x=1"]))
    with pytest.raises(SystemExit, match="does not exist"):
        spec.build_specs(ns(solver=["a=nowhere.yaml"]))


def test_solvers_glob_labels(monkeypatch):
    monkeypatch.chdir(ROOT)
    pairs = spec._globbed("configs/ablations/solver/weighting_*.yaml")
    assert sorted(label for label, _ in pairs) == sorted(
        ["linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const"])
    assert sorted(label for label, _ in spec._globbed("configs/ablations/solver/order_*.yaml")) == [
        "ascending", "descending", "random"]


def test_line_plot_draws_every_series():
    pytest.importorskip("matplotlib")
    png = pictures.line_plot({"a": [(25, 20.0), (100, 22.5), (1000, 23.0)], "b": [(25, 18.0), (1000, float("nan"))]},
                             xlabel="iterates", ylabel="PSNR")
    with Image.open(io.BytesIO(png)) as img:
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 16)}
    assert pictures.COLOURS[0] in colours and pictures.COLOURS[1] in colours


@pytest.mark.slow
def test_lpips_column_when_the_metric_is_available(tmp_path, monkeypatch):
    import torch

    from lightning_redd.metrics.scorer import Scorer

    seen = []

    def fake_lpips(x, ref):  # stands in for LPIPS(alex) with its weights present
        seen.append(x.shape)
        return (x - ref).abs().mean(dim=(1, 2, 3))

    scorer = Scorer(["lpips"], score_init=False)  # the project's scorer, its LPIPS network replaced
    scorer.suite.per_image["lpips"] = fake_lpips
    monkeypatch.setattr(scoring, "lpips_scorer", lambda weights: (scorer, None))
    out = tmp_path / "l"
    cli.main(["table", "--out", str(out), *BASE, "--solver", f"classical={ROOT / 'configs/solver/classical.yaml'}",
                  "--set", "model.solver.init_args.num_steps=3"])
    rows = read_csv(out / "table.csv")
    assert len(seen) == 2 and seen[0] == torch.Size([1, 3, 64, 64])
    assert 0 < float(rows[0]["lpips"]) < 1 and "| LPIPS |" in (out / "table.md").read_text()


@pytest.mark.slow
def test_resume_reuses_finished_runs_and_reruns_incomplete_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "r"
    argv = ["table", "--out", str(out), *BASE, "--resume", "--solver", f"classical={ROOT / 'configs/solver/classical.yaml'}",
            "--set", "model.solver.init_args.num_steps=3"]
    cli.main(argv)
    first = read_csv(out / "table.csv")
    capsys.readouterr()
    cli.main(argv)
    assert "classical: reusing" in capsys.readouterr().err
    assert read_csv(out / "table.csv")[0]["psnr"] == first[0]["psnr"]
    # a run folder that lost its records (e.g. a writer that failed) is run again, not reused
    for p in (out / "classical" / "records").glob("*.json"):
        p.unlink()
    cli.main(argv)
    err = capsys.readouterr().err
    assert "holds 0 of 2 records; running it again" in err and "reusing" not in err
    assert read_csv(out / "table.csv")[0]["images"] == "2"
    # another value of an option is another run
    cli.main(argv[:-1] + ["model.solver.init_args.num_steps=4"])
    assert "reusing" not in capsys.readouterr().err
