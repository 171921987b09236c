import pytest
import torch

from lightning_redd.priors.embedded import (EmbeddedPrior, default_checkpoint_path, load_network, read_metadata,
                                            save_network)
from lightning_redd.priors.networks.unet import UNet

TINY = dict(image_size=16, in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(8,), num_groups=4)


def random_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(**TINY)
    for p in net.parameters():  # make every weight (also the zero-initialised ones) non-trivial
        torch.nn.init.normal_(p, std=0.05)
    return net


def test_round_trip_through_safetensors(tmp_path):
    net = random_unet()
    path = save_network(net, tmp_path / "sub" / "prior.safetensors", {"global_step": 7, "dataset": "noise"})
    meta = read_metadata(path)
    assert meta["network"]["channel_mult"] == [1, 2] and meta["training"]["global_step"] == 7
    prior = EmbeddedPrior(checkpoint=str(path))
    ref = EmbeddedPrior.from_network(random_unet())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    out = prior.eps(x, t)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, ref.eps(x, t))
    assert prior.image_size == 16 and prior.channels == 3
    assert not any(p.requires_grad for p in prior.parameters())


def test_channels_last_matches(tmp_path):
    prior = EmbeddedPrior.from_network(random_unet())
    prior_cl = EmbeddedPrior.from_network(random_unet(), channels_last=True)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    torch.testing.assert_close(prior_cl.eps(x, t), prior.eps(x, t), atol=1e-5, rtol=1e-4)


def test_stays_in_eval_mode():
    prior = EmbeddedPrior.from_network(UNet(**{**TINY, "dropout": 0.5}))
    prior.train()
    assert not prior.network.training


def test_wrong_size_rejected():
    prior = EmbeddedPrior.from_network(UNet(**TINY))
    with pytest.raises(ValueError, match="16x16"):
        prior.eps(torch.randn(1, 3, 32, 32), torch.tensor([0]))


def test_missing_file_error(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors") as info:
        EmbeddedPrior(checkpoint=str(missing))
    assert "lightning-redd-train fit --config configs/train_prior.yaml" in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_network(missing)


def test_default_path_inside_package():
    path = default_checkpoint_path()
    assert path.name == "embedded64.safetensors" and path.parent.name == "weights"
    assert path.parent.parent.name == "priors"
    if not path.exists():
        with pytest.raises(FileNotFoundError, match="embedded64.safetensors"):
            EmbeddedPrior()
