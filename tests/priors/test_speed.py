"""The priors' speed switches (lightning_redd.priors.speed): each stays within a stated bound of
the reference path (fp32, explicit attention, no compile) on the CPU, and none changes a key."""
from __future__ import annotations

import os

import pytest
import torch

from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.embedded import EmbeddedPrior, default_checkpoint_path
from lightning_redd.priors.networks.adm import AttentionBlock
from lightning_redd.priors.networks.attention import attend, math_attention, set_attention
from lightning_redd.priors.networks.unet import UNet
from lightning_redd.priors import speed
from lightning_redd.priors.speed import is_compiled

SMALL_ADM = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
                 num_heads=4, num_head_channels=16, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)
TINY_UNET = dict(image_size=16, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8, 16), num_groups=4)
#: eps of the shipped checkpoint computed by the attention code before the switch existed
#: (input: randn(2, 3, 64, 64) from seed 0, t = [100, 700]; every 4096th entry, and the mean |eps|)
SHIPPED_GOLDEN = ([-0.7646090388, 1.5524312258, 0.1656021327, -1.0194942951, -0.4709131122, -1.4330019951], 0.8196489215)
needs_shipped = pytest.mark.skipif(not default_checkpoint_path().is_file(), reason="shipped checkpoint missing")


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def adm(**over) -> ADMPrior:
    return ADMPrior(**{**SMALL_ADM, **over}, allow_random_init=True)


def unet_prior(**switches) -> EmbeddedPrior:
    torch.manual_seed(0)
    return EmbeddedPrior.from_network(randomize(UNet(**TINY_UNET)), **switches)


def test_sdpa_kernel_matches_explicit_attention():
    q, k, v = (torch.randn(2, 3, 50, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    torch.testing.assert_close(attend(q, k, v, "sdpa"), math_attention(q, k, v), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="allowed: \\('auto', 'sdpa', 'math'\\)"):
        attend(q, k, v, "flash")


@pytest.mark.parametrize("new_order", [False, True])
def test_adm_sdpa_matches_math_attention(new_order):
    prior = randomize(adm(use_new_attention_order=new_order))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 700])
    blocks = [m for m in prior.net.modules() if isinstance(m, AttentionBlock)]
    assert set_attention(prior.net, "math") == len(blocks) == 7 and all(b.attention_impl == "math" for b in blocks)
    ref = prior.eps(x, t)
    set_attention(prior.net, "sdpa")
    torch.testing.assert_close(prior.eps(x, t), ref, atol=1e-5, rtol=0)


def test_unet_sdpa_matches_math_attention():
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    ref = unet_prior(attention="math").eps(x, t)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(unet_prior(attention="sdpa").eps(x, t), ref, atol=1e-5, rtol=0)


@needs_shipped
def test_shipped_checkpoint_same_eps_with_either_kernel():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 64, 64, generator=g), torch.tensor([100, 700])
    outs = {impl: EmbeddedPrior(attention=impl).eps(x, t) for impl in ("sdpa", "math")}
    torch.testing.assert_close(outs["sdpa"], outs["math"], atol=1e-5, rtol=0)
    picks, mean_abs = SHIPPED_GOLDEN
    for out in outs.values():
        torch.testing.assert_close(out.flatten()[::4096], torch.tensor(picks), atol=1e-5, rtol=0)
        assert abs(float(out.abs().mean()) - mean_abs) < 1e-5


@pytest.mark.slow
def test_switches_keep_state_dict_keys_and_defaults():
    """Every switch off by default, except the embedded prior's channels-last memory format
    (the CPU default chosen by measurement: docs/PERFORMANCE.md)."""
    ref = adm()
    fast = adm(attention="math", channels_last=True, compile=True, sync_checks=True)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert (ref.attention, ref.channels_last, ref.compile, ref.sync_checks) == ("auto", False, False, False)
    assert not is_compiled(ref.net) and is_compiled(fast.net)  # plumbed; compiling happens at the first call
    assert EmbeddedPrior().channels_last is True
    emb, emb_fast = unet_prior(channels_last=False), unet_prior(compile=True, channels_last=True)
    assert list(emb.state_dict()) == list(emb_fast.state_dict()) and "_orig_mod" not in str(list(emb_fast.state_dict()))
    assert not is_compiled(emb.network) and is_compiled(emb_fast.network)
    with pytest.raises(ValueError, match="allowed"):
        adm(attention="flash")


def test_channels_last_within_bound():
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    torch.testing.assert_close(unet_prior(channels_last=True).eps(x, t), unet_prior(channels_last=False).eps(x, t), atol=1e-5, rtol=1e-5)
    prior, prior_cl = randomize(adm()), randomize(adm(channels_last=True))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 500])
    torch.testing.assert_close(prior_cl.eps(x, t), prior.eps(x, t), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_within_bound():
    """bf16 (set by the Lightning module from precision=bf16-mixed): within 5% of the largest |eps|."""
    prior = unet_prior()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    ref = prior.eps(x, t)
    prior.autocast_dtype = torch.bfloat16
    out = prior.eps(x, t)
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_t_checked_on_cpu_without_sync_and_on_host_when_asked():
    prior = adm()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"t must hold integers in \[0, 999\], got \[5, 1000\]"):
        prior.eps(x, torch.tensor([5, 1000]))
    with pytest.raises(ValueError, match="one integer per image: got 3 for a batch of 2"):
        prior.eps(x, torch.tensor([1, 2, 3]))
    assert prior.check_times(7, 2, torch.device("cpu")).tolist() == [7, 7]
    # a tensor whose values cannot be read on the host stands for an accelerator's: the default
    # path never reads it (no sync), sync_checks=True does
    meta_t = torch.tensor([5, 1000], device="meta")
    assert prior.check_times(meta_t, 2, torch.device("meta")).shape == (2,)
    with pytest.raises((RuntimeError, NotImplementedError)):
        adm(sync_checks=True).check_times(meta_t, 2, torch.device("meta"))


@pytest.mark.skipif(not os.environ.get("LIGHTNING_REDD_TEST_COMPILE"), reason="set LIGHTNING_REDD_TEST_COMPILE=1 (slow)")
def test_compiled_prior_within_bound():
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 500])
    ref = unet_prior().eps(x, t)
    torch.testing.assert_close(unet_prior(compile=True).eps(x, t), ref, atol=1e-4, rtol=1e-4)


def test_auto_attention_is_the_path_each_network_always_took_on_the_cpu():
    """``auto`` (the default) resolves on the CPU to the explicit product for ADM and to SDPA for
    the embedded UNet, so default CPU results are bit-identical to those before the switch."""
    prior = randomize(adm())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5, 700])
    auto = prior.eps(x, t)
    set_attention(prior.net, "math")
    assert torch.equal(auto, prior.eps(x, t))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    assert torch.equal(unet_prior().eps(x, t), unet_prior(attention="sdpa").eps(x, t))


@pytest.mark.slow
def test_compile_plumbing_within_bound(monkeypatch):
    """``compile=True`` traced by dynamo (the ``aot_eager`` backend keeps this test to seconds; the
    inductor default is covered by the opt-in test below): within 1e-5 of the eager network."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    micro = dict(image_size=8, in_channels=3, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                 attention_resolutions=(8,), num_groups=4)  # one level with attention: dynamo traces it in ~2 s
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 500])
    ref = EmbeddedPrior.from_network(randomize(UNet(**micro))).eps(x, t)
    compiled = EmbeddedPrior.from_network(randomize(UNet(**micro)), compile=True)
    assert is_compiled(compiled.network) and ref.abs().max() > 0.01
    torch.testing.assert_close(compiled.eps(x, t), ref, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
