"""The metric registry and the two-folder evaluator."""
import pytest
import torch
from PIL import Image

from lightning_redd.metrics import psnr
from lightning_redd.metrics.evaluate import evaluate_folders
from lightning_redd.metrics.registry import METRICS, MetricSuite

from metric_helpers import Projection


def _save(path, seed, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
def test_suite_names_and_interface(alexnet_weights):
    with pytest.raises(ValueError, match="allowed"):
        MetricSuite(["psnr", "bogus"])
    suite = MetricSuite("psnr, lpips,kid", lpips_weights=alexnet_weights, inception_extractor=Projection())
    assert suite.names == ("psnr", "lpips", "kid") and set(METRICS) >= set(suite.names)
    g = torch.Generator().manual_seed(0)
    x, ref = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    scores = suite.per_image_scores(x, ref)
    assert {k: v.shape for k, v in scores.items()} == {"psnr": (3,), "lpips": (3,)}
    suite.update(x, ref)
    out = suite.compute()
    assert set(out) == {"kid", "kid_std", "inception_n_images", "inception_n_reference"}
    suite.reset()
    assert suite.dataset[0].states()["features"].shape[0] == 0


@pytest.mark.slow
def test_evaluate_two_folders(tmp_path, alexnet_weights, resnet_weights):
    rest, ref = tmp_path / "restored", tmp_path / "reference"
    for i in range(4):
        _save(rest / f"{i:03d}.png", i)
        _save(ref / f"{i:03d}.png", i if i == 0 else 100 + i)  # 000 restored perfectly
    _save(rest / "extra.png", 9)
    _save(ref / "only_ref.jpg", 10, size=(40, 36))  # other size: center-crop-resized
    ex = Projection()
    result = evaluate_folders(
        rest, ref, ["psnr", "ssim", "lpips", "fid", "kid", "top1"], batch_size=3,
        lpips_weights=alexnet_weights, inception_extractor=ex, kid_subsets=5,
        classifier="resnet18.tv_in1k", classifier_weights=resnet_weights, labels={f"{i:03d}": i for i in range(4)},
    )
    assert [r["name"] for r in result.rows] == ["000", "001", "002", "003"]
    assert result.unmatched_restored == ["extra"] and result.unmatched_reference == ["only_ref"]
    assert result.rows[0]["psnr"] == float("inf") and result.rows[0]["lpips"] == pytest.approx(0, abs=1e-6)
    from lightning_redd.data.images import load_image

    x1, r1 = load_image(rest / "001.png", 32), load_image(ref / "001.png", 32)
    assert result.rows[1]["psnr"] == pytest.approx(float(psnr(x1[None], r1[None])[0]))
    ds = result.dataset
    assert ds["inception_n_images"] == 4 and ds["inception_n_reference"] == 5  # whole reference folder
    assert ds["fid"] > 0 and 0 <= ds["top1"] <= 1 and ds["classifier_n_images"] == 4
    summary = result.summary()
    assert summary["n_matched"] == 4 and summary["psnr"] == pytest.approx(sum(r["psnr"] for r in result.rows[1:]) / 3)
    # the reference folder's features were cached: a second evaluation does not recompute them
    calls = ex.calls
    evaluate_folders(rest, ref, ["kid"], inception_extractor=ex, kid_subsets=2)
    assert calls == 4 and ex.calls == calls + 1  # 2 batches of references + 2 of restored, then 1 restored


def test_no_matching_names_is_a_clear_error(tmp_path):
    _save(tmp_path / "a" / "x.png", 0)
    _save(tmp_path / "b" / "y.png", 1)
    with pytest.raises(ValueError, match=r"no restored image .* \(restored: \['x'\], reference: \['y'\]\)"):
        evaluate_folders(tmp_path / "a", tmp_path / "b", ["psnr"])
