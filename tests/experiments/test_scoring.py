"""Scoring a run's PNGs: the project's loader reads them, the project's Scorer gives LPIPS, and a
missing LPIPS weight file is a note naming the file, not an error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_redd.experiments import scoring


def test_read_png_of_any_size_and_mode(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((4, 2), 255, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((2, 2), 65535, np.uint16)).save(tmp_path / "deep.png")
    x = scoring.read_png(tmp_path / "rgb.png")
    assert x.shape == (3, 2, 3) and torch.allclose(x, torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1)
    assert scoring.read_png(tmp_path / "gray.png").shape == (3, 4, 2)
    assert scoring.read_png(tmp_path / "gray.png", channels=1).shape == (1, 4, 2)
    assert torch.equal(scoring.read_png(tmp_path / "deep.png", 1), torch.ones(1, 2, 2))


@pytest.mark.slow
def test_lpips_is_a_note_without_weights_and_the_scorers_value_with_them(tmp_path, monkeypatch, alexnet_weights):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    scorer, note = scoring.lpips_scorer(None)
    assert scorer is None and scoring.LPIPS_FILE in note
    scorer, note = scoring.lpips_scorer(str(alexnet_weights))
    assert note is None
    g = torch.Generator().manual_seed(0)
    truth = {n: torch.rand(3, 64, 64, generator=g) * 2 - 1 for n in ("a", "b")}
    (tmp_path / "restored").mkdir()
    for n, x in truth.items():
        Image.fromarray(((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / "restored" / f"{n}.png")
    assert scoring.mean_lpips(scorer, tmp_path, ["a", "b"], truth) == pytest.approx(0.0, abs=1e-6)
    other = {"a": truth["b"], "b": truth["a"]}
    assert scoring.mean_lpips(scorer, tmp_path, ["a", "b"], other) > 0
