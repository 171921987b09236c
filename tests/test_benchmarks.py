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
