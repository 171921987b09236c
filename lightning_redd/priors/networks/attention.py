"""Spatial self-attention kernels shared by our networks, and the switch between them.

Two implementations of ``softmax(q k^T / sqrt(d)) v`` over ``(B, heads, L, d)`` tensors, and
``"auto"`` (the default), which each network resolves per call from the input's device
(:func:`resolve`): the path that network has always taken on the CPU (so CPU results stay
bit-identical to earlier releases), SDPA on accelerators:

* ``"sdpa"``: :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused
  kernel (flash / memory-efficient on CUDA, a blocked flash kernel on CPU) and never holds the
  ``(L, L)`` weight matrix in memory;
* ``"math"``: the explicit product, the weights materialised, the softmax in float32 (what
  the networks computed before the switch; the reference the tests compare against).

The choice is a plain attribute (``attention_impl``) of each attention module, so it never
enters a state dict: checkpoints load the same either way. :func:`set_attention` sets it on
every attention module of a network.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: allowed values of the ``attention`` switch.
ATTENTION_IMPLS = ("auto", "sdpa", "math")
AttentionImpl = Literal["auto", "sdpa", "math"]


def check_impl(impl: str) -> str:
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; allowed: {ATTENTION_IMPLS}")
    return impl


def resolve(impl: str, device: torch.device, cpu: str) -> str:
    """``impl`` with ``"auto"`` replaced by ``cpu`` on the CPU and by ``"sdpa"`` elsewhere."""
    if impl == "auto":
        return cpu if device.type == "cpu" else "sdpa"
    return check_impl(impl)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``(B, heads, L, d)`` inputs, softmax in float32."""
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    weight = torch.softmax(logits.float(), dim=-1).to(v.dtype)
    return weight @ v


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str) -> torch.Tensor:
    """Attention of ``(B, heads, L, d)`` queries, keys and values with ``impl`` (see module doc)."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if impl == "math":
        return math_attention(q, k, v)
    raise ValueError(f"unknown attention implementation {impl!r}; allowed: {ATTENTION_IMPLS}")


def set_attention(network: nn.Module, impl: str) -> int:
    """Use ``impl`` in every attention module of ``network``; returns how many were set."""
    check_impl(impl)
    count = 0
    for module in network.modules():
        if hasattr(module, "attention_impl"):
            module.attention_impl = impl
            count += 1
    return count
