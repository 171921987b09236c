"""The evaluate command scores any two folders as predict scores its own outputs; a run folder
holds the pictures a user looks at."""
from __future__ import annotations

import csv
import json

import pytest
from helpers import make_images, tiny_args
from PIL import Image

from lightning_redd.lit.cli import cli, main


def read_csv(path) -> dict[str, dict]:
    with open(path, newline="") as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_evaluate_gives_the_values_of_predicts_metrics_csv(tmp_path, capsys):
    images = make_images(tmp_path / "in", n=3, size=16)
    out = tmp_path / "run"
    cli(tiny_args(out, images))
    Image.new("RGB", (16, 16)).save(out / "restored" / "stray.png")  # a restored image without reference
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--restored", str(out / "restored"), "--reference", str(images), "--out", str(tmp_path / "eval.csv")])
    assert info.value.code == 0
    err = capsys.readouterr().err
    assert "1 restored image(s) without a match, not scored: stray" in err and "3 matched pair(s)" in err
    predicted, evaluated = read_csv(out / "metrics.csv"), read_csv(tmp_path / "eval.csv")
    assert sorted(evaluated) == ["img0", "img1", "img2"]
    for name, row in evaluated.items():
        for key in ("psnr", "ssim"):
            assert row[key] == predicted[name][key], (name, key)


def test_evaluate_names_a_missing_weight_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    images = make_images(tmp_path / "in", n=1, size=32)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--restored", str(images), "--reference", str(images), "--metrics", "psnr,lpips", "--image-size", "32"])
    assert info.value.code == 2
    assert "alexnet-owt-7be5be79.pth" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_folder_holds_grids_evolution_plot_and_summary(tmp_path):
    pytest.importorskip("matplotlib")
    images = make_images(tmp_path / "in", n=3, size=16)
    out = tmp_path / "run"
    argv = tiny_args(out, images, "--data.batch_size", "2", "--model.evolution_every", "2", "--model.log_every", "1")
    at = argv.index("--trainer.logger")
    del argv[at : at + 2]  # the default CSV logger
    cli(argv)
    grids = sorted(p.name for p in (out / "grids").glob("*.png"))
    assert grids == ["img0.png", "img2.png"]  # one per batch, named by its first image
    with Image.open(out / "grids" / "img0.png") as im:  # 2 rows x 4 columns (measured, init, restored, truth) of 16 px + 2 px gaps
        assert im.size == (4 * 18, 2 * 18)
    with Image.open(out / "evolution" / "img1.png") as im:  # x_init and every 2nd of 6 iterates: 4 frames
        assert im.size == (4 * 18 - 2, 16)
    with Image.open(out / "evolution" / "img1.gif") as im:
        assert im.n_frames == 4
    assert (out / "plots" / "psnr.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    table = read_csv(out / "metrics.csv")
    assert summary["images"] == summary["ok"] == 3
    for key, mean in summary["means"].items():
        assert mean == pytest.approx(sum(float(r[key]) for r in table.values()) / 3, abs=1e-4), key
