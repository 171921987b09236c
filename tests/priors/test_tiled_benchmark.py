"""Smoke test of benchmarks/tiled_memory.py on a tiny random UNet: both commands run and write
their JSON (no timing or memory assertions: the figures are for the report)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_memory_and_quality_commands_run_at_a_tiny_size(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import tiled_memory

    out = tmp_path / "mem.json"
    tiled_memory.main(["memory", "--prior", "tiny", "--sizes", "24", "--iterates", "1", "--json", str(out)])
    row = json.loads(out.read_text())["sizes"][0]
    assert "error" not in row, row
    assert row["size"] == 24 and row["tiles_per_iterate"] == 4  # 16 px tiles, overlap 4
    assert row["peak_above_start_mib"] >= 0 or not row["resettable"]
    out = tmp_path / "quality.json"
    tiled_memory.main(["quality", "--prior", "tiny", "--size", "20", "36", "--times", "100", "--restore-size", "20", "36",
                       "--restore-steps", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert {"smooth / tiles overlap 4", "photo / whole"} <= set(res["denoise"])
    assert res["restore"]["tiles overlap 4"]["psnr"] > 0
