"""Smoke test of benchmarks/bench.py on a tiny random ADM network: every mode runs and the
JSON names the device. No timing assertions (timings are for docs/PERFORMANCE.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench as module

    return module


@pytest.mark.slow
def test_every_mode_runs_and_json_names_the_device(bench, tmp_path):
    out = tmp_path / "tiny.json"
    bench.main(["--arch", "tiny", "--batch", "2", "--warmup", "0", "--repeats", "2", "--memory", "off",
                "--modes", "forward", "iterate", "fit", "predict", "dps", "graph", "--noise", "device", "--adam", "fused",
                "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["device"].startswith("CPU") and res["batch"] == 2 and res["arch"] == "tiny"
    assert res["solver"] == {"noise": "device", "adam": "fused"}
    for mode in ("forward", "iterate", "fit", "predict", "graph"):
        assert res["modes"][mode]["time_s"] > 0, mode
    assert "skipped" in res["modes"]["dps"] or res["modes"]["dps"]["time_s"] > 0
    assert {"time iterate/forward", "time fit/iterate", "time predict/iterate"} <= set(res["ratios"])
    assert res["images_per_hour"]["iterate"] > 0


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cpu_peak_memory_in_a_child_and_ab(bench, tmp_path):
    out = tmp_path / "mem.json"
    bench.main(["--arch", "tiny", "--warmup", "0", "--repeats", "1", "--mem-repeats", "1", "--modes", "forward",
                "--json", str(out)])
    peak = json.loads(out.read_text())["modes"]["forward"]["peak_mib"]
    assert peak >= 0 if sys.platform == "linux" else peak is None or peak >= 0
    bench.main(["--arch", "tiny", "--warmup", "0", "--repeats", "1", "--memory", "off", "--ab", "attention",
                "--json", str(out)])
    ab = json.loads(out.read_text())["ab"]
    assert ab["switch"] == "attention" and ab["max_abs_diff"] < 1e-5
    bench.main(["--arch", "tiny", "--warmup", "0", "--repeats", "1", "--memory", "off", "--ab", "precision",
                "--json", str(out)])
    ab = json.loads(out.read_text())["ab"]
    assert (ab["ref"], ab["cand"]) == ("fp32", "bf16") and 0 < ab["max_abs_diff"] < 0.5
    bench.main(["--arch", "tiny", "--warmup", "0", "--repeats", "1", "--pieces", "--json", str(out)])
    assert all(v > 0 for v in json.loads(out.read_text())["pieces_s"].values())


@pytest.mark.slow
@pytest.mark.multiprocess
def test_gpu_check_dry_run_writes_json_and_markdown(monkeypatch, tmp_path):
    """``gpu_check.py --dry-run``: every section on the CPU with the tiny network; the JSON and the
    Markdown table it writes hold every section and the images/hour formula they state."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    out = tmp_path / "gc"
    kept = out / "predict_work" / "mine.txt"  # a user's folder of the name the check once used and removed
    kept.parent.mkdir(parents=True)
    kept.write_text("keep")
    # generous guards: a loaded CI machine must not turn a slow section into a failure
    gpu_check.main(["--dry-run", "--out", str(out), "--guard", "tests=600", "bench=600", "dps=300", "predict=600",
                    "--budget", "2400"])
    res = json.loads((out / "gpu_check.json").read_text())
    assert list(res["sections"]) == list(gpu_check.SECTIONS)
    for name, sec in res["sections"].items():
        assert sec["status"] == "ok", (name, sec.get("why"))
        assert sec["seconds"] >= 0
    assert res["sections"]["env"]["dry_run"] is True
    counts = res["sections"]["tests"]["counts"]
    assert counts["tests"] >= 1 and counts["failures"] == counts["errors"] == 0
    rows = [r for r in res["sections"]["bench"]["rows"] if "img_per_h" in r]
    assert {(r["arch"], r["compile"]) for r in rows} == {("tiny", False), ("tiny", True)}
    for r in rows:
        assert r["img_per_h"] == pytest.approx(r["batch"] * 3600 / (1000 * r["iterate"]["s"]))
        assert r["forward"]["s"] > 0 and r["iterate/forward"] > 0
    dps = res["sections"]["dps"]
    assert dps["dps"]["s"] > 0 and dps["iterate"]["s"] > 0 and dps["dps/iterate time"] > 0
    predict = res["sections"]["predict"]
    assert predict["exit_code"] == 0 and predict["restored"] == predict["images"] == 2 and predict["img_per_h"] > 0
    assert kept.read_text() == "keep" and not list(out.glob("predict_work_*"))  # its own work folder is gone
    md = (out / "gpu_check.md").read_text()
    assert "img/h = batch * 3600 / (1000 * t_iterate)" in md and "DRY RUN" in md
    assert "| tiny | fp32 | off | 1 |" in md and "| tiny | fp32 | on | 1 |" in md
    for name in gpu_check.SECTIONS:
        assert f"| {name} | ok |" in md


def test_vs_reference_names_what_a_checkout_lacks(monkeypatch, tmp_path):
    """The reference is never a dependency: a folder that is no RED-diff checkout is refused,
    naming the files the comparison imports."""
    monkeypatch.syspath_prepend(str(BENCH))
    from reference_shim import NEEDED, Reference

    (tmp_path / "algos").mkdir()
    (tmp_path / "algos" / "reddiff.py").write_text("")
    with pytest.raises(SystemExit, match="missing") as err:
        Reference(tmp_path)
    assert "algos/ddim.py" in str(err.value) and "algos/reddiff.py" not in str(err.value)
    assert set(NEEDED) >= {"algos/reddiff.py", "models/diffusion.py"}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_gpu_train_prior_script_trains_on_the_corpus_and_exports(tmp_path):
    """benchmarks/gpu_train_prior.sh, run as on the GPU machine but on the CPU with one tiny step: it trains on
    CORPUS with the first prior's photos replayed and exports the EMA weights into OUT; without a corpus it stops
    before any work with a message naming the folder and how to build it."""
    pytest.importorskip("skimage")
    import os
    import subprocess

    from PIL import Image

    from lightning_redd.priors.embedded import read_metadata

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        Image.new("RGB", (80, 70), color=colour).save(corpus / f"p{i}.png")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "CORPUS": str(corpus), "WHEELS": str(tmp_path / "none")}
    tiny = ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.max_steps", "1",
            "--trainer.benchmark", "false", "--trainer.enable_progress_bar", "false", "--data.batch_size", "2",
            "--data.num_workers", "0", "--data.samples_per_epoch", "2", "--data.val_samples", "2",
            "--data.val_names", "[p2]", "--model.num_samples", "0"]
    run = subprocess.run(["bash", str(BENCH / "gpu_train_prior.sh"), *tiny], cwd=BENCH.parent, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    meta = read_metadata(tmp_path / "out" / "embedded64.safetensors")
    assert f"folder {corpus}" in json.dumps(meta) and "0.5 of patches from scikit-image" in json.dumps(meta)
    env["CORPUS"] = str(tmp_path / "missing")
    run = subprocess.run(["bash", str(BENCH / "gpu_train_prior.sh")], cwd=BENCH.parent, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and f"CORPUS={tmp_path / 'missing'}: no such folder" in run.stderr
    assert "lightning_redd.data.corpus build" in run.stderr
