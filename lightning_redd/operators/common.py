"""Small helpers shared by the operator families: input checks, per-image binding,
real orthonormal transforms used by the factored SVDs."""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from lightning_redd.operators.base import ForwardOperator, check_finite


def check_y(op: ForwardOperator, y: torch.Tensor, shape: Sequence[int] | None = None) -> None:
    """Raise a clear error if ``y`` is not a finite batch ``(B, *shape)``."""
    name = type(op).__name__
    if y.ndim != 4:
        raise ValueError(f"{name} expects a measurement batch (B, C, H, W), got shape {tuple(y.shape)}")
    if shape is not None and tuple(y.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} expects measurements of shape (B, {', '.join(map(str, shape))}), got {tuple(y.shape)}; "
            "pass the y this operator produced"
        )
    check_finite(y, "y")


def check_input(op: ForwardOperator, x: torch.Tensor) -> None:
    """Cheap per-call checks of ``x`` (no NaN scan, which would sync an accelerator each step)."""
    if x.ndim != 4:
        raise ValueError(f"{type(op).__name__} expects a batch (B, C, H, W), got shape {tuple(x.shape)}")
    op.check_shape(x.shape[1:])


def check_bound_batch(op: ForwardOperator, n_bound: int, t: torch.Tensor) -> None:
    """Per-image parameters bound for ``n_bound`` images must meet a batch of that size."""
    if n_bound not in (1, t.shape[0]):
        raise ValueError(
            f"{type(op).__name__} was bound for a batch of {n_bound} images but got a batch of {t.shape[0]}; "
            "call bind(seeds, shape) with one seed per image of this batch"
        )


def not_bound_error(op: ForwardOperator) -> RuntimeError:
    return RuntimeError(
        f"{type(op).__name__} has per-image or per-shape parameters: call op = op.bind(seeds, shape) "
        "before using it"
    )


def bound_copy(op: ForwardOperator, shape: Sequence[int], device: torch.device | str | None = None) -> ForwardOperator:
    """A shallow copy of ``op`` (sharing its buffers, moved to ``device`` if given) that
    remembers the image shape."""
    out = copy.copy(op)
    out._modules = dict(op._modules)
    out._buffers = {k: (v.to(device) if v is not None and device is not None else v) for k, v in op._buffers.items()}
    out._parameters = dict(op._parameters)
    out.image_shape = tuple(int(s) for s in shape)
    return out


def check_seeds(seeds: Sequence[int], names: Sequence[str] | None) -> None:
    if len(seeds) == 0:
        raise ValueError("bind needs at least one seed (one per image of the batch)")
    if names is not None and len(names) != len(seeds):
        raise ValueError(f"bind got {len(seeds)} seeds but {len(names)} names; pass one name per image")


def like(buf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``buf`` on ``t``'s device and in ``t``'s dtype (buffers follow the data, never assumed)."""
    return buf.to(device=t.device, dtype=t.dtype)


def dht1(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 1-D discrete Hartley transform over the last dim (self-inverse)."""
    f = torch.fft.fft(x, norm="ortho")
    return f.real - f.imag


def orthonormal_with_first_row(v: torch.Tensor) -> torch.Tensor:
    """An ``(n, n)`` orthogonal matrix (float64) whose first row is ``v / ||v||``."""
    v = v.to(torch.float64).flatten()
    n = v.numel()
    basis = torch.cat([v[:, None], torch.eye(n, dtype=torch.float64)], dim=1)
    q, _ = torch.linalg.qr(basis)
    q = q[:, :n]
    if torch.dot(q[:, 0], v) < 0:
        q[:, 0] = -q[:, 0]
    return q.T.contiguous()


def safe_reciprocal(s: torch.Tensor, rtol: float) -> torch.Tensor:
    """``1 / s`` where ``|s| > rtol * max|s|`` (per leading batch entry), else 0: the pseudo-inverse
    of a diagonal."""
    flat = s.abs().flatten(1) if s.ndim > 1 else s.abs()[None]
    cut = rtol * flat.amax(dim=1)
    cut = cut.view(-1, *([1] * (s.ndim - 1))) if s.ndim > 1 else cut[0]
    keep = s.abs() > cut
    return torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
