"""The prior interface every solver sees.

A :class:`DiffusionPrior` predicts the noise ``eps_hat = eps_theta(x_t, t)`` of
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` on a discrete VP schedule. Wrappers adapt
each network family once (learned-variance outputs, precision, expected input range), so
solvers never branch on them.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from lightning_redd.priors import schedules


class DiffusionPrior(nn.Module):
    """Base class: holds the schedule; subclasses implement :meth:`predict_eps`.

    Args:
        channels: image channels the network takes.
        image_size: side of the square images the network was trained on (``None`` if any
            size works, e.g. fully convolutional analytic priors).
        betas: the noise schedule ``(T,)``; default: the spec's linear schedule
            (1e-4 to 0.02 over 1000 steps).
        sync_checks: check the values of ``t`` on the host whatever its device (a device-to-host
            synchronisation per call on accelerators). Off by default: see :meth:`eps`.
    """

    def __init__(self, *, channels: int = 3, image_size: int | None = None, betas: torch.Tensor | None = None,
                 sync_checks: bool = False) -> None:
        super().__init__()
        self.sync_checks = bool(sync_checks)
        betas = schedules.linear_betas() if betas is None else betas.to(torch.float64)
        self.channels = int(channels)
        self.image_size = None if image_size is None else int(image_size)
        self.register_buffer("alphas_cumprod", schedules.alphas_cumprod(betas), persistent=False)
        #: dtype of the autocast region around the network (None: run in the inputs' dtype).
        #: Set by the Lightning module from the Trainer's precision.
        self.autocast_dtype: torch.dtype | None = None

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The network's noise prediction ``(B, C, H, W)`` for ``x_t`` ``(B, C, H, W)`` and
        integer times ``t`` ``(B,)``."""
        raise NotImplementedError

    def check_times(self, t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
        """``t`` as a ``(batch,)`` long tensor on ``device``, checked without a host sync.

        Shape errors are always raised here (``ValueError``). Values: a ``t`` on the CPU (or a
        Python number) is range-checked eagerly, which costs no synchronisation; a ``t`` already
        on an accelerator is checked on the host only with ``sync_checks``, else on the device
        with ``torch._assert_async`` (CUDA; a bad value then fails the run at the next
        synchronisation, as a device-side assertion), and not at all on backends without it.
        """
        t = torch.as_tensor(t).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"t must hold one integer per image: got {t.numel()} for a batch of {batch}")
        top = self.num_timesteps - 1
        if t.device.type == "cpu" or self.sync_checks:
            if int(t.min()) < 0 or int(t.max()) > top:
                raise ValueError(f"t must hold integers in [0, {top}], got {t.tolist()}")
        elif t.device.type == "cuda" and hasattr(torch, "_assert_async"):
            torch._assert_async(((t >= 0) & (t <= top)).all(), f"t must hold integers in [0, {top}]")
        return t.to(device)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat = eps_theta(x_t, t)`` in float32, under the configured autocast.

        Args:
            x_t: ``(B, C, H, W)`` noisy images (unbounded; ``x0`` lives in ``[-1, 1]``).
            t: ``(B,)`` integer times in ``[0, T-1]`` (a scalar is broadcast); checked by
                :meth:`check_times` (no host synchronisation unless ``sync_checks``).
        """
        if x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} expects (B, {self.channels}, H, W) inputs, got {tuple(x_t.shape)}")
        if self.image_size is not None and tuple(x_t.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{type(self).__name__} was trained on {self.image_size}x{self.image_size} images, got "
                f"{x_t.shape[-2]}x{x_t.shape[-1]}; set the data's image_size to {self.image_size}"
            )
        t = self.check_times(t, x_t.shape[0], x_t.device)
        return self.network_eps(x_t, t)

    def network_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:meth:`predict_eps` in float32 under the configured autocast, without :meth:`eps`'s
        checks: ``t`` must already be a ``(B,)`` long tensor on ``x_t``'s device, and any
        ``H x W`` goes to the network (the wrappers of :mod:`lightning_redd.priors.tiled` call
        it with tiles of the training size, or whole images of sizes the network can take)."""
        if self.autocast_dtype is None:
            ctx = contextlib.nullcontext()
        else:
            ctx = torch.autocast(device_type=x_t.device.type, dtype=self.autocast_dtype)
        with ctx:
            out = self.predict_eps(x_t, t)
        return out.float()

    @property
    def whole_image_multiple(self) -> int | None:
        """The sizes the network can evaluate whole, besides its training size: ``H`` and ``W``
        multiples of this (e.g. ``2 ** downsamplings`` of a fully convolutional UNet), or None
        when only :attr:`image_size` is known to work (or, with ``image_size`` None, any size)."""
        return None
