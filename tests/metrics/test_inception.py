"""KID/FID with the FID Inception network (random weights) and with a cheap stand-in extractor."""
import pytest
import torch

from lightning_redd.metrics.distances import frechet_distance
from lightning_redd.metrics.inception import INCEPTION_FILES, InceptionFeatures, InceptionMetrics, to_uint8
from lightning_redd.metrics.weights import hub_checkpoints_dir

from metric_helpers import Projection


def _images(seed, n, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.mark.slow
def test_inception_features_from_a_local_file(inception_weights, monkeypatch):
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    # same code path at 96x96 instead of 299x299: 10x cheaper on a CPU
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 96)
    extractor = InceptionFeatures(inception_weights)
    x = _images(0, 2)
    f = extractor(x)
    assert f.shape == (2, 2048) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert torch.allclose(extractor(x[1:]), f[1:], rtol=1e-5, atol=1e-6)  # deterministic, batch-independent
    assert extractor.fingerprint.startswith("fid-inception-pool3:sha256=")
    metric = InceptionMetrics(extractor=extractor, reference_features=f, kid_subsets=5)
    metric.update(x)
    out = metric.compute()
    assert out["fid"] < 1e-6 * float(f.pow(2).sum()) and abs(out["kid"]) < 1e-3
    assert out["inception_n_images"] == 2


def test_missing_inception_weights_name_the_file():
    pytest.importorskip("torch_fidelity")
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILES[0]) as err:
        InceptionFeatures()(_images(0, 1))
    assert str(hub_checkpoints_dir()) in str(err.value) and "github.com/toshas/torch-fidelity" in str(err.value)


def test_to_uint8_rounds_like_a_png():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 64, 128, 255, 255]


def test_reference_from_update_pairs_and_fixed_reference_agree():
    extractor = Projection()
    x, ref = _images(1, 6), _images(2, 6)
    paired = InceptionMetrics(extractor=extractor, kid_subsets=10)
    for i in (0, 3):
        paired.update(x[i:i + 3], ref[i:i + 3])
    fixed = InceptionMetrics(extractor=extractor, reference_features=extractor(ref), kid_subsets=10)
    fixed.update(x)
    a, b = paired.compute(), fixed.compute()
    assert a == pytest.approx(b, rel=1e-6)
    assert a["fid"] == pytest.approx(float(frechet_distance(extractor(x), extractor(ref))), rel=1e-6)
    with pytest.raises(ValueError, match="needs ref images"):
        InceptionMetrics(extractor=extractor).update(x)


def test_states_sync_through_a_gather_function():
    """Two 'processes' holding half the images each give the one-process result."""
    extractor = Projection()
    x, ref = _images(3, 8), _images(4, 8)
    ranks = [InceptionMetrics(extractor=extractor, metrics=["fid"]) for _ in range(2)]
    ranks[0].update(x[:5], ref[:5])
    ranks[1].update(x[5:], ref[5:])  # uneven counts per rank
    other = iter(ranks[1].states().values())
    synced = ranks[0].compute(gather=lambda t: [t, next(other)])
    whole = InceptionMetrics(extractor=extractor, metrics=["fid"])
    whole.update(x, ref)
    assert synced == pytest.approx(whole.compute(), rel=1e-9)
    assert "kid" not in synced
    ranks[0].reset()
    assert ranks[0].states()["features"].shape == (0, 8)
