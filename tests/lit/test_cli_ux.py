"""The command line as a person uses it: the end-of-run summary, per-run folders, the bundled
demo from any folder, discoverability and errors that come first with a suggestion."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from helpers import make_images, tiny_args

from lightning_redd.lit.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--model.solver.init_args.num_steps", "3", "--trainer.enable_progress_bar", "false"]


def run_main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def folder_of(err: str) -> Path:
    return Path(re.search(r"image\(s\) in (\S+):", err).group(1))


@pytest.mark.slow
def test_the_summary_numbers_are_metrics_csv_numbers(tmp_path, capsys):
    images = make_images(tmp_path / "in", n=3)
    status, _, err = run_main(tiny_args(tmp_path / "out", images), capsys)
    assert status == 0
    with open(tmp_path / "out" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert re.search(r"3 image\(s\) in \S+: 3 restored now, 0 already finished, 0 diverged", err)
    means = dict(re.findall(r"(\w+) (-?\d+\.\d{4})", err.split("mean over 3 restored image(s):")[1].splitlines()[0]))
    assert set(means) == {"psnr", "ssim", "psnr_init", "ssim_init"}
    for key, value in means.items():
        assert float(value) == pytest.approx(sum(float(r[key]) for r in rows) / 3, abs=1.5e-4), key
    status, _, err = run_main(tiny_args(tmp_path / "out", images), capsys)  # the same command: nothing left
    assert "0 restored now, 3 already finished" in err


@pytest.mark.slow
def test_the_bundled_demo_runs_from_any_folder_and_writes_the_repo_demo_images(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, _, err = run_main(["predict", "--config", "configs/demo.yaml", *FAST, "--trainer.default_root_dir", str(tmp_path / "repo")], capsys)
    assert status == 0
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    status, _, err = run_main(["predict", "--config", "demo", *FAST], capsys)
    assert status == 0
    out = elsewhere / folder_of(err)
    assert out.parent == elsewhere / "outputs" and out.name.startswith("demo-")
    repo, here = (sorted((d / "restored").glob("*.png")) for d in (tmp_path / "repo", out))
    assert [p.name for p in repo] == [p.name for p in here] == ["chelsea.png", "chelsea_face.png", "coffee.png", "motorcycle.png"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(repo, here))


@pytest.mark.slow
def test_two_task_fragments_get_their_own_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, err = run_main(["predict", "--config", "demo", *FAST], capsys)
    first = folder_of(err)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.rglob("*") if p.is_file()}
    _, _, err = run_main(["predict", "--config", "demo", "--config", "task/sr_block", *FAST], capsys)
    second = folder_of(err)
    assert second != first and second.name.startswith("demo+sr_block-")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.rglob("*") if p.is_file()} == before
    # the same command again maps to the same folder: it resumes
    _, _, err = run_main(["predict", "--config", "demo", "--config", "task/sr_block", *FAST], capsys)
    assert folder_of(err) == second and "4 already finished" in err


@pytest.mark.parametrize("argv, message, suggestion", [
    (["predict", "--config", "demo", "--trainer.devcies", "2"], "unrecognized arguments: --trainer.devcies", "did you mean --trainer.devices?"),
    (["predict", "--config", "demo", "--model.solver.init_args.lrr", "3"], "RedDiff has no option 'lrr'", "did you mean lr?"),
    (["predict", "--config", "task/sr_blok"], "File does not exist", "did you mean --config task/sr_block?"),
    (["predict", "--config", "demo", "--model.solver.init_args.weighting", "cubic"], "weighting: got cubic, expected one of 'linear'", ""),
])
def test_errors_come_first_with_a_suggestion_and_no_usage_page(tmp_path, capsys, monkeypatch, argv, message, suggestion):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(argv, capsys)
    assert status == 2
    lines = [ln for ln in err.strip().splitlines() if not re.match(r"^\S+\.py:\d+: ", ln)]  # Python warnings
    assert lines[0].startswith("lightning-redd: error:") and message in lines[0]
    assert suggestion in err
    assert "usage:" not in err and len(lines) <= 4


def test_list_names_every_task_solver_and_prior_with_its_fragment(capsys):
    status, out, _ = run_main(["list"], capsys)
    assert status == 0
    for fragment in ("task", "solver", "prior"):
        names = sorted(p.stem for p in (ROOT / "configs" / fragment).glob("*.yaml"))
        for name in names:
            assert re.search(rf"^  {name}\s+\w+", out, re.M), name
    assert "--model.solver.help RedDiff" in out


def test_class_help_by_short_name(capsys):
    status, out, _ = run_main(["predict", "--model.solver.help", "RedDiff"], capsys)
    assert status == 0 and "--model.solver.lam" in out


def test_only_the_console_script_freezes_what_it_imported(tmp_path, capsys, monkeypatch):
    """``main()`` as the console script calls it (no args: sys.argv) moves the objects alive after the
    imports out of the collector's reach (gc.freeze); in-process callers (tests, other programs) are
    left as they were, as their garbage awaiting collection would otherwise be kept for good."""
    import gc

    monkeypatch.chdir(tmp_path)
    bad = ["predict", "--config", "demo", "--model.solver.init_args.lrr", "3"]  # fails after the freeze point
    gc.unfreeze()
    try:
        assert run_main(bad, capsys)[0] == 2 and gc.get_freeze_count() == 0
        monkeypatch.setattr("sys.argv", ["lightning-redd", *bad])
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 2 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
