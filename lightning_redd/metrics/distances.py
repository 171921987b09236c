"""Set-to-set distances between feature matrices ``(N, D)``: FID and KID, in float64.

FID (Heusel et al. 2017): ``|mu_1 - mu_2|^2 + tr S_1 + tr S_2 - 2 tr (S_1^1/2 S_2 S_1^1/2)^1/2``
with sample covariances (``N - 1`` denominators). The trace of the square root is exact
either way it is computed here: with centred features ``A = X_1 - mu_1``, ``B = X_2 - mu_2``,
the nonzero eigenvalues of ``S_1 S_2`` are the squared singular values of ``A B^T`` divided
by ``(N_1 - 1)(N_2 - 1)``, so the trace is the nuclear norm of ``A B^T / sqrt((N_1-1)(N_2-1))``
(used while both sets are at most ``D`` images: cheap and well conditioned for few images);
for larger sets, eigen-decompositions of the ``D x D`` symmetric ``S_1^1/2 S_2 S_1^1/2``.

KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared
MMD with the polynomial kernel ``k(a, b) = (a.b / D + 1)^3``, averaged over ``subsets``
random subsets of ``m = min(subset_size, N_1, N_2)`` images drawn without replacement from
each set (the paper's and torchmetrics' defaults: 100 subsets of 1000).
"""
from __future__ import annotations

import torch


def _check(f1: torch.Tensor, f2: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"{what} needs two feature matrices (N, D) with the same D, got {tuple(f1.shape)} and {tuple(f2.shape)}")
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError(f"{what} needs at least 2 images on each side, got {f1.shape[0]} and {f2.shape[0]}")
    return f1.double(), f2.double()


def _trace_sqrt_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``tr (S_a^1/2 S_b S_a^1/2)^1/2`` from centred features ``a (N_a, D)``, ``b (N_b, D)``."""
    na, nb, d = a.shape[0], b.shape[0], a.shape[1]
    if max(na, nb) <= d:
        return torch.linalg.svdvals(a @ b.T).sum() / ((na - 1) * (nb - 1)) ** 0.5
    s_a, s_b = a.T @ a / (na - 1), b.T @ b / (nb - 1)
    lam, v = torch.linalg.eigh(s_a)
    root_a = (v * lam.clamp(min=0).sqrt()) @ v.T
    middle = root_a @ s_b @ root_a
    return torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """FID between feature sets ``f1 (N_1, D)`` and ``f2 (N_2, D)``: a float64 scalar >= 0.

    Needs ``N >= 2`` per side; with fewer than ``D`` images the covariances are rank-deficient
    and FID is strongly biased upwards (compare only values computed with equal counts).
    """
    f1, f2 = _check(f1, f2, "FID")
    mu1, mu2 = f1.mean(dim=0), f2.mean(dim=0)
    a, b = f1 - mu1, f2 - mu2
    tr1 = a.pow(2).sum() / (f1.shape[0] - 1)
    tr2 = b.pow(2).sum() / (f2.shape[0] - 1)
    value = (mu1 - mu2).pow(2).sum() + tr1 + tr2 - 2 * _trace_sqrt_product(a, b)
    return value.clamp(min=0)


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """``(a b^T / D + coef)^degree``, ``(N_a, N_b)``."""
    return (a @ b.T / a.shape[1] + coef) ** degree


def _mmd2_from_kernels(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    m = k_xx.shape[0]
    off = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off - 2 * k_xy.mean()


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """Unbiased squared MMD of two equal-size sets ``(m, D)``: mean off-diagonal ``k(x, x')``
    plus mean off-diagonal ``k(y, y')`` minus twice the mean of all ``k(x, y)``."""
    k = lambda a, b: polynomial_kernel(a, b, degree, coef)  # noqa: E731
    return _mmd2_from_kernels(k(x, x), k(y, y), k(x, y))


# sets up to this size get their kernel matrices computed once (3 x 4096^2 float64 = 400 MB at most)
_PRECOMPUTE_MAX = 4096


def kernel_inception_distance(
    f1: torch.Tensor,
    f2: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KID between ``f1 (N_1, D)`` and ``f2 (N_2, D)``: (mean, std over subsets), float64.

    Subsets of ``m = min(subset_size, N_1, N_2)`` rows, drawn without replacement from each
    side independently with ``generator`` (CPU; default seed 0, so the value is reproducible).
    Needs ``N >= 2`` per side; small ``m`` gives a noisy (but still unbiased) estimate for
    independent sets. A set scored against itself is not independent of itself: with subsets
    covering all ``N`` images the value is exactly ``(2 / N)(mean_{i!=j} k_ij - mean_i k_ii) < 0``,
    which vanishes as ``1 / N``.
    """
    f1, f2 = _check(f1, f2, "KID")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    m = min(subset_size, f1.shape[0], f2.shape[0])
    kernels = None
    if max(f1.shape[0], f2.shape[0]) <= _PRECOMPUTE_MAX and subsets > 1:
        k = lambda a, b: polynomial_kernel(a, b, degree, coef)  # noqa: E731
        kernels = k(f1, f1), k(f2, f2), k(f1, f2)
    values = []
    for _ in range(subsets):
        i = torch.randperm(f1.shape[0], generator=generator)[:m].to(f1.device)
        j = torch.randperm(f2.shape[0], generator=generator)[:m].to(f2.device)
        if kernels is None:
            values.append(mmd2_unbiased(f1[i], f2[j], degree, coef))
        else:
            k11, k22, k12 = kernels
            values.append(_mmd2_from_kernels(k11[i][:, i], k22[j][:, j], k12[i][:, j]))
    v = torch.stack(values)
    return v.mean(), v.std(unbiased=False)
