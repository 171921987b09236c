"""Inpainting mask sources. Every mask is ``(Cm, H, W)`` float with 1 = observed pixel,
0 = missing pixel, ``Cm`` 1 (shared across channels) or C (per channel), drawn on the CPU
from one image's generator."""
from __future__ import annotations

import math

import torch


def box_mask(h: int, w: int, fraction: float, position: str, g: torch.Generator) -> torch.Tensor:
    """A missing box of side ``fraction * (H, W)``, centred or at a uniform random position."""
    bh, bw = max(1, round(fraction * h)), max(1, round(fraction * w))
    if position == "center":
        top, left = (h - bh) // 2, (w - bw) // 2
    elif position == "random":
        top = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=g))
    else:
        raise ValueError(f"unknown box_position {position!r}; allowed: 'center', 'random'")
    mask = torch.ones(1, h, w)
    mask[:, top : top + bh, left : left + bw] = 0
    return mask


def random_pixel_mask(h: int, w: int, drop_fraction: float, g: torch.Generator) -> torch.Tensor:
    """Exactly ``round(drop_fraction * H * W)`` missing pixels, uniformly at random."""
    n_drop = round(drop_fraction * h * w)
    mask = torch.ones(h * w)
    mask[torch.randperm(h * w, generator=g)[:n_drop]] = 0
    return mask.view(1, h, w)


def half_mask(h: int, w: int, side: str) -> torch.Tensor:
    """The ``side`` half of the image is missing."""
    mask = torch.ones(1, h, w)
    if side == "left":
        mask[:, :, : w // 2] = 0
    elif side == "right":
        mask[:, :, w // 2 :] = 0
    elif side == "top":
        mask[:, : h // 2] = 0
    elif side == "bottom":
        mask[:, h // 2 :] = 0
    else:
        raise ValueError(f"unknown half {side!r}; allowed: 'left', 'right', 'top', 'bottom'")
    return mask


def _segment(grid: torch.Tensor, a: torch.Tensor, b: torch.Tensor, radius: float) -> torch.Tensor:
    """Pixels within ``radius`` of the segment ``a -> b``; ``grid`` is ``(H, W, 2)`` centres.
    Only the segment's bounding box is evaluated."""
    h, w = grid.shape[:2]
    al, bl = a.tolist(), b.tolist()
    y0, x0 = (int(max(0, min(al[i], bl[i]) - radius - 1)) for i in (0, 1))
    y1, x1 = (int(min(n, max(al[i], bl[i]) + radius + 2)) for i, n in ((0, h), (1, w)))
    sub = grid[y0:y1, x0:x1]
    d = b - a
    t = ((sub - a) @ d / d.dot(d).clamp_min(1e-12)).clamp(0, 1)
    out = torch.zeros(h, w, dtype=torch.bool)
    out[y0:y1, x0:x1] = (sub - a - t[..., None] * d).norm(dim=-1) <= radius
    return out


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def stroke_mask(h: int, w: int, coverage: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Free-form brush strokes whose missing fraction lies in ``[coverage[0], coverage[1]]``.

    A target ``t ~ U(coverage)`` is drawn; strokes are polylines of random-walk vertices
    (turning angle ~ N(0, 0.8) rad, segment length 5-15 % of the image side) painted with a
    round brush of width up to 8 % of the side, until the missing fraction reaches ``t``.
    A segment that would overshoot ``coverage[1]`` is retried with half the brush width.
    """
    lo, hi = coverage
    target = _uniform(g, lo, hi)
    side = min(h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    grid = torch.stack([ys, xs], dim=-1)
    missing = torch.zeros(h, w, dtype=torch.bool)
    for _ in range(2_000):
        if missing.double().mean() >= target:
            return (~missing).float()[None]
        p = torch.tensor([_uniform(g, 0, h - 1), _uniform(g, 0, w - 1)], dtype=torch.float64)
        angle, width = _uniform(g, 0, 2 * math.pi), _uniform(g, 0.3, 1.0) * max(1.0, 0.08 * side)
        for _ in range(int(torch.randint(3, 10, (1,), generator=g))):
            angle += 0.8 * float(torch.randn((), generator=g, dtype=torch.float64))
            length = _uniform(g, 0.05, 0.15) * side
            q = p + length * torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64)
            q = torch.minimum(q.clamp_min(0), torch.tensor([h - 1.0, w - 1.0], dtype=torch.float64))
            cand = missing | _segment(grid, p, q, max(width / 2, 0.75))
            if cand.sum().item() > hi * h * w:
                width /= 2
                continue
            missing, p = cand, q
            if missing.sum().item() >= target * h * w:
                break
    raise RuntimeError(f"stroke mask did not reach coverage {coverage}; widen the range")
