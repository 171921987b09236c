"""Per-image randomness.

Every stochastic quantity of a restoration (operator parameters such as masks or kernels,
measurement noise, the solver's noise) is drawn from a ``torch.Generator`` seeded from
``(seed, image index, stream)``; with several posterior samples per image
(``data.samples_per_image``) the solver's stream of sample ``k > 0`` also mixes in ``k``
(sample 0 keeps the seed of a run with one sample). Draws happen on the CPU, one image at a time, and are then
moved to the target device, so an image's result does not depend on its batch size, its
batch mates, the device or the number of devices.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Independent random streams of one image. New streams get new numbers; never renumber.
STREAMS = {"operator": 0, "noise": 1, "solver": 2}


def image_seed(seed: int, index: int, stream: str, sample: int = 0) -> int:
    """A 63-bit seed mixed from ``(seed, index, stream)`` (numpy's SeedSequence hashing), and
    from ``sample`` when it is > 0: sample 0 is the seed of a run with one sample per image, so
    sample ``k`` of an image is the same whatever the number of samples asked for."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; allowed: {sorted(STREAMS)}")
    if seed < 0 or index < 0 or sample < 0:
        raise ValueError(f"seed, image index and sample must be >= 0, got seed={seed}, index={index}, sample={sample}")
    entropy = [int(seed), int(index), STREAMS[stream]] + ([int(sample)] if sample > 0 else [])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(seed: int, index: int, stream: str, sample: int = 0) -> torch.Generator:
    """A CPU generator for one image (and one of its samples, see :func:`image_seed`) and one stream."""
    return torch.Generator().manual_seed(image_seed(seed, index, stream, sample))


def generators(seed: int, indices: Sequence[int], stream: str) -> list[torch.Generator]:
    """One CPU generator per image index."""
    return [generator(seed, int(i), stream) for i in indices]


def _draw(fn, shape, gens, device, dtype) -> torch.Tensor:
    out = torch.stack([fn(tuple(shape), generator=g, dtype=dtype) for g in gens])
    return out.to(device) if device is not None else out


def randn(
    shape: Sequence[int],
    gens: Sequence[torch.Generator],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal draws of ``(len(gens), *shape)``, image ``i`` from ``gens[i]``."""
    return _draw(torch.randn, shape, gens, device, dtype)


def rand(
    shape: Sequence[int],
    gens: Sequence[torch.Generator],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``(len(gens), *shape)``, image ``i`` from ``gens[i]``."""
    return _draw(torch.rand, shape, gens, device, dtype)
