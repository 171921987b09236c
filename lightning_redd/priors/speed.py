"""Speed switches of the network-backed priors, applied in one place.

Every switch is a constructor flag of :class:`~lightning_redd.priors.adm.ADMPrior` and
:class:`~lightning_redd.priors.embedded.EmbeddedPrior` (so a config sets it) and none of them
changes a state-dict key, so checkpoints load the same whichever are on:

* ``attention``: ``"sdpa"`` (:func:`torch.nn.functional.scaled_dot_product_attention`, fused
  kernels that never store the ``(L, L)`` weights), ``"math"`` (the explicit product, the
  reference path) or ``"auto"`` (default: on the CPU the path each network always took there,
  explicit for ADM and SDPA for the embedded UNet, so CPU results stay bit-identical; SDPA on
  accelerators);
* ``channels_last``: run the network in channels-last memory format (off by default);
* ``compile``: wrap the network's call in :func:`torch.compile` in place (``nn.Module.compile``,
  so parameter names stay; off by default; the first call compiles, which takes minutes for
  the ADM networks);
* ``sync_checks`` (on :class:`~lightning_redd.priors.base.DiffusionPrior`): check the values of
  ``t`` on the host on every device (off by default; see ``DiffusionPrior.eps``);
* ``cpu_bf16`` (:class:`~lightning_redd.priors.embedded.EmbeddedPrior`): bfloat16 autocast around
  the network when it runs on the CPU and no other autocast is active: ``"off"`` (default),
  ``"on"``, or ``"auto"`` (on only where the CPU has bf16 matrix instructions, :func:`cpu_bf16_is_fast`).

Mixed precision of the whole run is not a prior flag: the Lightning module sets
``autocast_dtype`` from the Trainer's ``precision`` (``bf16-mixed``: bfloat16 autocast around the
network only, on every device).
See ``docs/PERFORMANCE.md`` for the measurements behind the defaults.
"""
from __future__ import annotations

import torch
from typing import Literal

from torch import nn

from lightning_redd.priors.networks.attention import set_attention

CpuBf16 = Literal["auto", "on", "off"]
CPU_BF16_CHOICES = ("auto", "on", "off")
#: ``torch.cpu`` probes of bf16 matrix instructions (AMX tiles, AVX512-BF16) behind ``cpu_bf16: auto``
CPU_BF16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")

#: keyword arguments of ``nn.Module.compile`` for ``compile=True`` (default: torch's, i.e. inductor).
COMPILE_OPTIONS: dict = {}


def prepare_network(network: nn.Module, *, attention: str = "auto", channels_last: bool = False,
                    compile: bool = False) -> nn.Module:
    """Freeze ``network`` (eval mode, no gradients) and apply the switches; returns it (in place)."""
    network.eval().requires_grad_(False)
    set_attention(network, attention)  # validates the name; a network without attention ignores it
    if channels_last:
        network.to(memory_format=torch.channels_last)
    if compile:
        network.compile(**COMPILE_OPTIONS)
    return network


def is_compiled(network: nn.Module) -> bool:
    """Whether :func:`prepare_network` compiled ``network`` (``nn.Module.compile`` in place)."""
    return getattr(network, "_compiled_call_impl", None) is not None


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU has bfloat16 matrix instructions: AMX tiles (Intel Sapphire Rapids and
    later Xeons) or AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake). Measured there for the
    embedded prior's forward: 0.47x float32 on an AMX Xeon, 0.62x on an AMD EPYC with
    AVX512-BF16; without bf16 instructions 2.7x to 76x (docs/PERFORMANCE.md)."""
    for name in CPU_BF16_PROBES:
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except Exception:  # an unusual build without the probe's backing
            continue
    return False


def resolve_cpu_bf16(choice: str) -> bool:
    """``cpu_bf16`` ``"auto"``/``"on"``/``"off"`` (or a bool) as a bool for this machine."""
    if isinstance(choice, bool):
        return choice
    if choice not in CPU_BF16_CHOICES:
        raise ValueError(f"cpu_bf16 must be one of {CPU_BF16_CHOICES}, got {choice!r}")
    return cpu_bf16_is_fast() if choice == "auto" else choice == "on"
