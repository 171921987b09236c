"""LPIPS: same values as torchmetrics given the same backbone, local weights only, clear errors."""
import pytest
import torch
import torchvision

from lightning_redd.metrics.lpips import BACKBONES, LPIPS
from lightning_redd.metrics.weights import hub_checkpoints_dir


def _images(seed, n=3, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_file_names_are_torchvision_s():
    for ctor, file_name, _ in BACKBONES.values():
        enum = {"alexnet": "AlexNet_Weights", "vgg16": "VGG16_Weights", "squeezenet1_1": "SqueezeNet1_1_Weights"}[ctor]
        assert getattr(torchvision.models, enum).DEFAULT.url.endswith("/" + file_name)


@pytest.mark.slow
def test_matches_torchmetrics_with_the_same_backbone(alexnet_weights, monkeypatch):
    tml = pytest.importorskip("torchmetrics.functional.image.lpips")
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    backbone = torchvision.models.alexnet(weights=None)
    backbone.load_state_dict(torch.load(alexnet_weights, weights_only=True))
    # torchmetrics would download the backbone: hand it ours instead
    monkeypatch.setattr(tml, "_get_tv_model_features", lambda net, pretrained=False: backbone.features)
    reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none")
    x, y = _images(0), _images(1)
    ours = LPIPS("alex", weights=alexnet_weights)(x, y)
    assert ours.shape == (3,) and torch.isfinite(ours).all() and (ours > 0).all()
    assert torch.allclose(ours, reference(x, y), rtol=1e-5, atol=1e-6)


def test_identical_images_deterministic_and_symmetric(alexnet_weights):
    metric = LPIPS(weights=alexnet_weights)
    x, y = _images(2, n=2, size=40), _images(3, n=2, size=40)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
    a = metric(x, y)
    assert torch.equal(a, metric(x, y))
    assert torch.allclose(a, metric(y, x), rtol=1e-5)
    assert metric.network() is metric.network()  # built once
    # grey images repeat their channel
    assert torch.allclose(metric(x[:, :1], y[:, :1]), metric(x[:, :1].expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))


@pytest.mark.slow
def test_default_location_is_the_torch_hub_folder(alexnet_weights):
    folder = hub_checkpoints_dir()  # TORCH_HOME points into tmp_path (conftest)
    folder.mkdir(parents=True)
    (folder / "alexnet-owt-7be5be79.pth").symlink_to(alexnet_weights)
    x, y = _images(4, n=1), _images(5, n=1)
    assert torch.allclose(LPIPS()(x, y), LPIPS(weights=alexnet_weights)(x, y))


def test_missing_weights_name_the_file_and_never_download(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth") as err:
        LPIPS()(_images(0, n=1), _images(1, n=1))
    assert str(hub_checkpoints_dir()) in str(err.value) and "download.pytorch.org" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        LPIPS(weights="/nope.pth")(_images(0, n=1), _images(1, n=1))


def test_wrong_file_and_bad_inputs(tmp_path, alexnet_weights):
    bad = tmp_path / "vgg.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), bad)
    with pytest.raises(ValueError, match="does not match the network"):
        LPIPS(weights=bad)(_images(0, n=1), _images(1, n=1))
    with pytest.raises(ValueError, match="at least 31"):
        LPIPS(weights=alexnet_weights)(_images(0, n=1, size=16), _images(1, n=1, size=16))
    with pytest.raises(ValueError, match="allowed"):
        LPIPS("resnet")
