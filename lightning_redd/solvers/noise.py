"""Where a solve's noise is drawn: :class:`NoiseSource`, one stream per image.

Every solver draws all of its noise (a sampler's start ``x_T`` and per-step ``z``, RED-diff's
``eps`` and ``n0``) through the :class:`NoiseSource` its state holds, created by
:meth:`lightning_redd.solvers.base.Solver.init` from the images' generators and the solver's
``noise`` option.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from lightning_redd import seeding

#: where the noise of a solve is drawn (:class:`NoiseSource`).
NoiseMode = Literal["auto", "host", "device"]
NOISE_MODES = ("auto", "host", "device")


def check_noise_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`NOISE_MODES`, else a ``ValueError`` naming them."""
    if mode not in NOISE_MODES:
        raise ValueError(f"unknown noise {mode!r}; allowed: {NOISE_MODES} (auto: host on the CPU, device elsewhere)")
    return mode


def device_seed(generator: torch.Generator) -> int:
    """A 63-bit seed for an image's device generator, mixed from the seed its host generator
    was created with (``generator.initial_seed()``; nothing is drawn from it)."""
    state = np.random.SeedSequence([generator.initial_seed() & 0xFFFFFFFF, generator.initial_seed() >> 32, 0xDE71CE])
    words = state.generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class NoiseSource:
    """Standard normal draws ``(B, *shape)`` for a solve, image ``i`` from its own stream.

    ``mode``:

    * ``"host"``: from the images' CPU generators (``gens``), one image at a time, then copied
      to ``device``: exactly ``seeding.randn(shape, gens)``, identical on every device (a host
      loop and a host-to-device copy per draw on accelerators);
    * ``"device"``: from one ``torch.Generator`` per image *on* ``device``, seeded once from that
      image's host generator (:func:`device_seed`): no host work but one kernel launch per image
      and draw; a different stream from ``"host"``, so results differ from the CPU path;
    * ``"auto"``: ``"host"`` on the CPU (today's results, bit for bit), ``"device"`` elsewhere.

    Either way an image's draws depend only on its own seed: not on batch size, batch mates,
    or the number of devices.
    """

    def __init__(self, gens: Sequence[torch.Generator], device: torch.device, mode: str = "auto") -> None:
        if mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {mode!r}; allowed: {NOISE_MODES}")
        self.device = torch.device(device)
        self.mode = ("host" if self.device.type == "cpu" else "device") if mode == "auto" else mode
        self.host_gens = list(gens)
        if self.mode == "device":
            self.gens = [torch.Generator(device=self.device).manual_seed(device_seed(g)) for g in self.host_gens]
        else:
            self.gens = self.host_gens

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B, *shape)`` standard normal draws on :attr:`device`."""
        shape = tuple(shape)
        if self.mode == "host":
            return seeding.randn(shape, self.gens, device=self.device, dtype=dtype)
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype, device=self.device) for g in self.gens])
