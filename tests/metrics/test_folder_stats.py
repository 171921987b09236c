"""Folder features are cached by file names, sizes, mtimes, loading settings and extractor."""
import os

import pytest
import torch
from PIL import Image

from lightning_redd.metrics.distances import kernel_inception_distance, polynomial_kernel
from lightning_redd.metrics.folder_stats import default_cache_dir, folder_features, image_files

from metric_helpers import Projection


def _write_images(folder, n, seed=0, size=24):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_second_call_hits_the_cache_and_changes_invalidate(tmp_path):
    folder = tmp_path / "ref"
    _write_images(folder, 5)
    (folder / "notes.txt").write_text("not an image")
    ex = Projection()
    first = folder_features(folder, ex, image_size=16, batch_size=2)
    assert first.shape == (5, 8) and ex.calls == 3
    assert list(default_cache_dir(folder).glob("projection-*.safetensors"))
    again = folder_features(folder, ex, image_size=16, batch_size=2)
    assert ex.calls == 3 and torch.equal(again, first)

    # other loading settings or another extractor's weights: a different entry
    folder_features(folder, ex, image_size=12)
    assert ex.calls == 4
    other = Projection("b")
    folder_features(folder, other, image_size=16)
    assert other.calls == 1

    # rewriting a file changes its size/mtime: recomputed, and the new pixels show
    Image.new("RGB", (24, 24), (255, 0, 0)).save(folder / "002.png")
    changed = folder_features(folder, ex, image_size=16)
    assert ex.calls == 5 and not torch.equal(changed[2], first[2]) and torch.equal(changed[0], first[0])
    # touching a file (same bytes, new mtime) also invalidates: keys are stat-based
    st = os.stat(folder / "000.png")
    os.utime(folder / "000.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    folder_features(folder, ex, image_size=16)
    assert ex.calls == 6
    # an added image
    _write_images(tmp_path / "more", 1, seed=5)
    (tmp_path / "more" / "000.png").rename(folder / "100.png")
    assert folder_features(folder, ex, image_size=16).shape == (6, 8)


def test_cache_dir_and_kid_of_a_folder_against_itself(tmp_path):
    folder = tmp_path / "imgs"
    _write_images(folder, 12, seed=1)
    ex = Projection()
    feats = folder_features(folder, ex, image_size=16, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*.safetensors")) and not default_cache_dir(folder).exists()
    other = folder_features(tmp_path / "imgs", ex, image_size=16, cache_dir=tmp_path / "cache")
    assert ex.calls == 1 and torch.equal(feats, other)
    # KID of a set against itself is ~0 up to the estimator's known offset for a set paired with
    # itself: with subsets covering all N images it is exactly (2 / N)(mean_{i!=j} k_ij - mean_i k_ii)
    self_kid, std = kernel_inception_distance(feats, feats, subsets=5)
    k = polynomial_kernel(feats.double(), feats.double())
    n = feats.shape[0]
    off = (k.sum() - k.diagonal().sum()) / (n * (n - 1))
    assert torch.allclose(self_kid, 2 / n * (off - k.diagonal().mean())) and float(std) < 1e-9


def test_listing_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        image_files(tmp_path / "empty")
    _write_images(tmp_path / "dup", 1)
    Image.new("RGB", (4, 4)).save(tmp_path / "dup" / "000.jpg")
    with pytest.raises(ValueError, match="share the name stem"):
        image_files(tmp_path / "dup")
    with pytest.raises(TypeError, match="fingerprint"):
        folder_features(tmp_path / "dup", lambda x: x, image_size=4)
