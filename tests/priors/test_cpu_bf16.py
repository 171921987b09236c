"""EmbeddedPrior's ``cpu_bf16`` switch: off by default (float32, bit-identical), "on" runs the
network's convolutions in bfloat16 within a bound, "auto" follows the CPU's bf16 probes (AMX, AVX512-BF16), and an
autocast already active (the Trainer's precision) is never overridden."""
from __future__ import annotations

import pytest
import torch

from lightning_redd.priors import speed
from lightning_redd.priors.embedded import EmbeddedPrior
from lightning_redd.priors.networks.unet import UNet

TINY_UNET = dict(image_size=16, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,), num_groups=4)


def prior(**switches) -> EmbeddedPrior:
    torch.manual_seed(0)
    network = UNet(**TINY_UNET)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return EmbeddedPrior.from_network(network, **switches)


def conv_dtypes(p: EmbeddedPrior, x, t) -> set[torch.dtype]:
    """The dtypes the network's convolutions produced during one ``eps``."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in p.network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        p.eps(x, t)
    finally:
        for h in hooks:
            h.remove()
    return seen


X, T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 600])


def test_off_by_default_is_float32_and_bit_identical():
    p = prior()
    assert p.cpu_bf16 == "off" and p.cpu_bf16_active is False
    assert conv_dtypes(p, X, T) == {torch.float32}
    with torch.no_grad():
        direct = p.network(X.contiguous(memory_format=torch.channels_last), T).float()
    assert torch.equal(p.eps(X, T), direct)


def test_on_runs_bf16_within_bound():
    ref, p = prior(), prior(cpu_bf16="on")
    assert conv_dtypes(p, X, T) == {torch.bfloat16}
    a, b = ref.eps(X, T), p.eps(X, T)
    assert b.dtype == torch.float32
    err = (a - b).abs().max()
    assert 0 < err < 0.05 * a.abs().max(), err  # bf16 rounding: different, but close


PROBES = speed.CPU_BF16_PROBES  # (AMX tiles, AVX512-BF16)


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (True, True), (False, False)])
def test_auto_follows_the_bf16_probes(monkeypatch, amx, avx512_bf16):
    """``auto`` is bf16 where the CPU has AMX tiles or AVX512-BF16 (both measured faster), else float32."""
    monkeypatch.setattr(torch.cpu, PROBES[0], lambda: amx)
    monkeypatch.setattr(torch.cpu, PROBES[1], lambda: avx512_bf16)
    fast = amx or avx512_bf16
    assert speed.cpu_bf16_is_fast() is fast
    p = prior(cpu_bf16="auto")
    assert p.cpu_bf16_active is fast
    assert conv_dtypes(p, X, T) == ({torch.bfloat16} if fast else {torch.float32})


def test_probe_missing_or_failing_means_float32(monkeypatch):
    for name in PROBES:
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert speed.cpu_bf16_is_fast() is False
    monkeypatch.setattr(torch.cpu, PROBES[0], lambda: 1 / 0, raising=False)
    monkeypatch.setattr(torch.cpu, PROBES[1], lambda: 1 / 0, raising=False)
    assert speed.cpu_bf16_is_fast() is False
    monkeypatch.setattr(torch.cpu, PROBES[1], lambda: True, raising=False)  # one failing probe does not hide the other
    assert speed.cpu_bf16_is_fast() is True


def test_an_active_autocast_is_kept():
    """The Trainer's precision (the module's autocast_dtype) wins over the prior's own switch."""
    p = prior(cpu_bf16="on")
    p.autocast_dtype = torch.float16
    assert conv_dtypes(p, X, T) == {torch.float16}


def test_unknown_choice_names_the_choices():
    with pytest.raises(ValueError, match=r"cpu_bf16 must be one of \('auto', 'on', 'off'\), got 'yes'"):
        prior(cpu_bf16="yes")
