import pytest
import torch

from lightning_redd.priors.networks.unet import ResBlock, UNet, count_parameters, timestep_embedding

TINY = dict(image_size=16, in_channels=3, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(8,), num_groups=4)


def test_shapes_and_zero_init_output():
    net = UNet(**TINY)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 999])
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised output conv
    assert all(torch.all(p == 0) for p in net.conv_out.parameters())


def test_nonzero_after_perturbing_output_and_depends_on_t():
    net = UNet(**TINY)
    for p in net.parameters():  # zero-initialised convs make a fresh net ignore t
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(net(x, torch.tensor([10])), net(x, torch.tensor([900])))


def test_gray_and_single_level():
    net = UNet(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=2,
               attention_resolutions=(), num_groups=2)
    assert net(torch.randn(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)).shape == (3, 1, 8, 8)


def resblock_params(i: int, o: int, e: int) -> int:
    """GN(i) + conv3x3(i->o) + Linear(e->o) + GN(o) + conv3x3(o->o) + 1x1 skip if i != o."""
    return 2 * i + (9 * i * o + o) + (e * o + o) + 2 * o + (9 * o * o + o) + (0 if i == o else i * o + o)


@pytest.mark.parametrize("i,o", [(8, 8), (8, 16), (24, 16)])
def test_resblock_parameter_formula(i, o):
    assert count_parameters(ResBlock(i, o, 32, 0.0, 4)) == resblock_params(i, o, 32)


def test_unet_parameter_formula_single_level():
    # one level, one res block, no attention except the middle one:
    # time MLP, conv_in, down block, middle (2 blocks + attention), 2 up blocks, GN + conv_out.
    c, e = 8, 32
    net = UNet(image_size=8, in_channels=3, base_channels=c, channel_mult=(1,), num_res_blocks=1,
               attention_resolutions=(), num_groups=4)
    mlp = (c * e + e) + (e * e + e)
    conv_in = 9 * 3 * c + c
    attn = 2 * c + (c * 3 * c + 3 * c) + (c * c + c)
    expected = (mlp + conv_in + resblock_params(c, c, e) + 2 * resblock_params(c, c, e) + attn
                + 2 * resblock_params(2 * c, c, e) + 2 * c + 9 * c * 3 + 3)
    assert count_parameters(net) == expected


def test_shipped_config_size():
    net = UNet(image_size=64, base_channels=32, channel_mult=(1, 2, 3, 3), num_res_blocks=2,
               attention_resolutions=(16, 8))
    n = count_parameters(net)
    assert 3_000_000 <= n <= 6_000_000
    assert 4 * n <= 20 * 1024**2  # fp32 state dict <= 20 MB


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 5, 999]), 9)
    assert emb.shape == (3, 9) and torch.isfinite(emb).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=12, channel_mult=(1, 2, 2, 2)), "divisible"),
    (dict(base_channels=10, num_groups=4), "num_groups"),
    (dict(channel_mult=()), "channel_mult"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)
