"""The ADM network: checkpoint-compatible layout, numerics, and the ADMPrior wrapper."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.networks.adm import ADMUNet, GroupNorm32, adm_kwargs, qkv_attention, timestep_embedding

_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [
    Path(os.environ.get("LIGHTNING_REDD_ADM_MANIFEST", "/nonexistent")),
    _ROOT / "tests" / "data" / "adm_state_dict_manifest.json",
    _ROOT.parent / "shared" / "data" / "adm_state_dict_manifest.json",
]
MANIFEST = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[-1])
SMALL = dict(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
    num_heads=4, num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True,
)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with small Gaussian noise (zero-initialised convs would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def small_prior(**over) -> ADMPrior:
    return ADMPrior(**{**SMALL, **over}, allow_random_init=True)


def manifest_entries():
    if not MANIFEST.is_file():
        pytest.skip(f"manifest not found at {MANIFEST}")
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("name", ["imagenet256_uncond", "ffhq256_uncond"])
def test_manifest_layout_matches_exactly(name):
    entry = manifest_entries()[name]
    with torch.device("meta"):
        net = ADMUNet(**adm_kwargs(**{k: v for k, v in entry["config"].items() if k != "use_fp16"}))
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert ours == [(k, list(s)) for k, s in entry["keys"]]
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"]


def test_timestep_embedding_formula():
    t = torch.tensor([0, 1, 17, 999])
    dim = 10
    emb = timestep_embedding(t, dim)
    half = dim // 2
    expected = torch.zeros(4, dim, dtype=torch.float64)
    for i, ti in enumerate(t.tolist()):
        for k in range(half):
            f = math.exp(-math.log(10000.0) * k / half)
            expected[i, k], expected[i, half + k] = math.cos(ti * f), math.sin(ti * f)
    assert emb.dtype == torch.float32 and emb.shape == (4, dim)
    torch.testing.assert_close(emb.double(), expected, atol=1e-4, rtol=0)
    odd = timestep_embedding(t, 11)
    assert odd.shape == (4, 11) and torch.all(odd[:, -1] == 0)


def test_attention_rate_conversion_and_defaults():
    kw = adm_kwargs(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8")
    assert kw["attention_ds"] == (8, 16, 32) and kw["channel_mult"] == (1, 1, 2, 2, 4, 4)
    assert kw["out_channels"] == 3 and kw["num_classes"] is None
    with pytest.raises(ValueError, match="channel_mult"):
        adm_kwargs(image_size=48, num_channels=32, num_res_blocks=1)


def test_legacy_and_new_attention_orders_are_permutations():
    b, heads, ch, length = 2, 3, 4, 5
    qkv_new = torch.randn(b, 3 * heads * ch, length)  # [q|k|v][head][ch]
    qkv_legacy = qkv_new.reshape(b, 3, heads, ch, length).transpose(1, 2).reshape(b, -1, length)
    out_new = qkv_attention(qkv_new, heads, legacy=False)
    torch.testing.assert_close(qkv_attention(qkv_legacy, heads, legacy=True), out_new)
    q, k, v = (z.reshape(b * heads, ch, length) for z in qkv_new.chunk(3, dim=1))
    ref = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(ch), dim=-1) @ v.transpose(1, 2)
    torch.testing.assert_close(out_new, ref.transpose(1, 2).reshape(b, heads * ch, length))


def test_zero_initialised_outputs():
    prior = small_prior()
    assert torch.count_nonzero(prior.net.out[2].weight) == 0
    assert torch.count_nonzero(prior.net.middle_block[1].proj_out.weight) == 0
    assert torch.count_nonzero(prior.net.input_blocks[1][0].out_layers[3].weight) == 0
    assert torch.count_nonzero(prior.eps(torch.randn(1, 3, 32, 32), torch.tensor([5]))) == 0


def test_learned_sigma_slicing_and_class_cond():
    prior = randomize(small_prior())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
    full = prior.net(x, t)
    assert full.shape == (2, 6, 32, 32)
    torch.testing.assert_close(prior.eps(x, t), full[:, :3])
    cond = randomize(small_prior(learn_sigma=False, class_cond=True))
    with pytest.raises(ValueError, match="class_label"):
        cond.eps(x, t)
    cond.class_label = 7
    torch.testing.assert_close(cond.eps(x, t), cond.net(x, t, torch.tensor([7, 7])))


def test_checkpoint_required_unless_random_init_allowed():
    with pytest.raises(ValueError, match="--model.prior.init_args.checkpoint"):
        ADMPrior(**SMALL)


def test_groupnorm_float32_under_autocast_and_bf16_prior():
    norm = GroupNorm32(32, 64)
    x = torch.randn(2, 64, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), norm(x.float()).bfloat16().float())
    prior = randomize(small_prior())
    xt, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    ref = prior.eps(xt, t)
    prior.autocast_dtype = torch.bfloat16
    out = prior.eps(xt, t)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_channels_last_and_train_mode():
    prior = randomize(small_prior(channels_last=True, dropout=0.5))
    prior.train()
    assert not prior.net.training and not any(p.requires_grad for p in prior.parameters())
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    plain = ADMUNet(**adm_kwargs(**{**SMALL, "dropout": 0.5})).eval()
    plain.load_state_dict(prior.net.state_dict())
    torch.testing.assert_close(prior.eps(x, t), plain(x, t)[:, :3], atol=1e-5, rtol=1e-5)
