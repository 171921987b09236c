"""TiledPrior / at_size: any prior at any image size.

Exactness is checked where it is known: at the prior's own size (bit-identical), and with the
analytic Gaussian prior, whose pixels are independent so that tiling changes nothing (eps and
whole solves equal to float precision). Seams are checked with a small convolutional network
whose zero padding leaves a mark at every tile edge.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import ConvPrior, MaskOperator

from lightning_redd import seeding
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.gaussian import GaussianPrior
from lightning_redd.priors.tiled import TiledPrior, Tiling, at_size, axis_tiles, grid_offset, ramp_window, reflect_index
from lightning_redd.solvers.ddim import DDIM
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.red_diff import RedDiff


@pytest.fixture(autouse=True)
def one_thread():
    """Many small convolutions: on a shared 2-core machine one thread is 10-20x faster than two
    contending ones (0.4 s against 3-8 s per 64 px forward of the embedded network)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def embedded():
    from lightning_redd.priors.embedded import EmbeddedPrior

    return EmbeddedPrior()


def noisy(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- the prior's own size
def test_at_the_prior_s_own_size_eps_is_bit_identical(embedded):
    x, t = noisy((1, 3, 64, 64)), torch.tensor([700])
    with torch.no_grad():
        ref = embedded.eps(x, t)
        for mode in ("tiles", "whole", "auto"):
            assert torch.equal(TiledPrior(embedded, mode=mode, shift="time").eps(x, t), ref), mode


def test_at_size_gives_the_prior_itself_where_it_takes_the_size(embedded):
    assert at_size(embedded, (64, 64)) is embedded
    g = GaussianPrior()
    assert at_size(g, (24, 40)) is g  # image_size None: any size already
    wrapped = at_size(embedded, (48, 100), Tiling(tile_batch=4, overlap=8), mode="tiles")
    assert isinstance(wrapped, TiledPrior) and (wrapped.tile, wrapped.overlap, wrapped.tile_batch, wrapped.mode) == (64, 8, 4, "tiles")
    assert at_size(wrapped, (300, 20)) is wrapped
    assert isinstance(at_size(g, (16, 16), tile=8), TiledPrior)  # tiling on request
    torch.testing.assert_close(wrapped.alphas_cumprod, embedded.alphas_cumprod, rtol=0, atol=0)
    wrapped.autocast_dtype = torch.bfloat16  # the Lightning module sets precision on whatever prior it holds
    assert embedded.autocast_dtype is torch.bfloat16 and wrapped.autocast_dtype is torch.bfloat16
    embedded.autocast_dtype = None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tile_batch": 0}, r"tile_batch must be >= 1"),
        ({"mode": "fast"}, r"unknown mode 'fast'; allowed: \('auto', 'tiles', 'whole'\)"),
        ({"shift": "random"}, r"unknown shift 'random'; allowed: \('none', 'time'\)"),
        ({"overlap": -1}, r"overlap must be >= 0"),
        ({"tile": 16, "overlap": 9}, r"overlap must be at most tile // 2 = 8 pixels, got 9"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        at_size(GaussianPrior(), (20, 20), **{"tile": 16, **options})


def test_whole_mode_needs_a_network_that_says_it_takes_other_sizes():
    with pytest.raises(ValueError, match="whole_image_multiple is None\\): use mode='tiles'"):
        TiledPrior(GaussianPrior(), tile=16, mode="whole")
    with pytest.raises(ValueError, match="takes any image size .* set tile="):
        TiledPrior(GaussianPrior())


# --------------------------------------------------------------------------- exact with independent pixels
@pytest.mark.parametrize("hw", [(24, 40), (21, 35), (16, 50), (5, 7), (1, 1), (70, 33)])
@pytest.mark.parametrize("overlap, shift", [(0, "none"), (4, "none"), (8, "time")])
def test_gaussian_prior_tiled_eps_equals_untiled(hw, overlap, shift):
    """Independent pixels: every tile predicts each pixel exactly as the whole image does, so
    the blend is exact up to the float32 rounding of the weighted mean (bound 1e-6 relative)."""
    g = GaussianPrior(mean=0.1, std=0.5)
    x, t = noisy((3, 3, *hw)), torch.tensor([0, 400, 999])
    out = TiledPrior(g, tile=16, overlap=overlap, shift=shift).eps(x, t)
    torch.testing.assert_close(out, g.eps(x, t), rtol=1e-6, atol=1e-6)


def _inpainting_problem(shape=(3, 24, 40), n=2):
    x = (0.1 + 0.5 * noisy((n, *shape), seed=1)).clamp(-1, 1)
    op = Inpainting(mask="random", drop_fraction=0.5).bind(list(range(n)), shape)
    return op, op.measure(x, seeding.generators(0, range(n), "noise"))


@pytest.mark.parametrize("solver", [lambda: RedDiff(num_steps=25, order="random"), lambda: DDIM(num_steps=10),
                                    lambda: DPS(num_steps=10, eta=0.5)], ids=["red_diff", "ddim", "dps"])
def test_tiled_solve_of_a_non_square_image_equals_the_untiled_solve(solver):
    """Gaussian prior, 24x40 images in 16 px tiles (overlap 4, grid moving with t): RED-diff,
    DDIM and DPS (which differentiates through the tiles, checkpointed chunk by chunk) give the
    untiled result to float precision (measured max difference ~1e-6; bound 1e-4)."""
    g = GaussianPrior(mean=0.1, std=0.5)
    op, y = _inpainting_problem()
    tiled = TiledPrior(g, tile=16, overlap=4, tile_batch=3, shift="time")
    plain = solver().solve(y, op, g, seeding.generators(0, [0, 1], "solver"))
    out = solver().solve(y, op, tiled, seeding.generators(0, [0, 1], "solver"))
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-4)
    assert (out - op.pinv(y)).abs().max() > 0.1  # the solve really moved


# --------------------------------------------------------------------------- gradients, chunks, batch independence
def test_gradients_flow_and_chunk_checkpointing_changes_nothing():
    prior = ConvPrior(seed=2)
    x, t = noisy((2, 3, 40, 28)), torch.tensor([5, 600])
    grads = []
    for ckpt in (True, False):
        xg = x.clone().requires_grad_(True)
        eps = TiledPrior(prior, tile=16, tile_batch=5, grad_checkpoint=ckpt).eps(xg, t)
        (eps * noisy(eps.shape, seed=3)).sum().backward()
        grads.append(xg.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    g, xg = GaussianPrior(std=0.5), x.clone().requires_grad_(True)
    TiledPrior(g, tile=16).eps(xg, t).sum().backward()
    xr = x.clone().requires_grad_(True)
    g.eps(xr, t).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_tile_batch_bounds_every_network_call_and_results_do_not_depend_on_it_or_on_batch_mates():
    """Same values (to float rounding of batched convolutions) for any tile_batch, and for an
    image alone or with batch mates at other times (its grid depends on its own t only)."""
    prior = ConvPrior(seed=4)
    x, t = noisy((3, 3, 30, 40)), torch.tensor([3, 3, 800])
    outs = [TiledPrior(prior, tile=16, tile_batch=b, shift="time").eps(x, t) for b in (1, 7, 100)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)
    alone = [TiledPrior(prior, tile=16, tile_batch=7, shift="time").eps(x[i : i + 1], t[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(torch.cat(alone), outs[1], rtol=1e-5, atol=1e-6)


def test_no_network_call_exceeds_tile_batch():
    prior = ConvPrior(seed=4)
    sizes = []
    original = prior.network_eps
    prior.network_eps = lambda x, t: (sizes.append(tuple(x.shape)), original(x, t))[1]
    TiledPrior(prior, tile=16, tile_batch=7).eps(noisy((3, 3, 37, 50)), torch.tensor([3, 3, 800]))
    assert sum(s[0] for s in sizes) == 3 * 3 * 4 and max(s[0] for s in sizes) == 7  # 3 x 4 tiles each
    assert all(s[-2:] == (16, 16) for s in sizes)


# --------------------------------------------------------------------------- seams
def _steps(e: torch.Tensor, cuts: list[int], axis: int) -> tuple[float, float]:
    """Mean |difference| of neighbouring pixels across the tile edges ``cuts`` / elsewhere."""
    st = e.diff(dim=axis).abs().mean(dim=[d for d in range(4) if d != 4 + axis])
    at = torch.zeros_like(st, dtype=torch.bool)
    at[[c - 1 for c in cuts]] = True
    return float(st[at].mean()), float(st[~at].mean())


def _edges(prior: TiledPrior, n: int, t: int) -> list[list[int]]:
    out = []
    for ax in prior.layout(n, n, t):
        cuts = {s - ax.front for s in ax.starts} | {s + prior.tile - ax.front for s in ax.starts}
        out.append(sorted(c for c in cuts if 0 < c < n))
    return out


@pytest.mark.parametrize("image", ["flat", "gradient"])
@pytest.mark.parametrize("t", [0, 300, 700])
def test_no_seams_at_tile_borders_of_a_4x4_tiling(image, t):
    """64x64 images in 16 px tiles (4 x 4 without overlap), noise-free ``x_t``: with the default
    overlap (tile // 4) the mean step across tile edges is below the step inside tiles (measured
    ratio 0.1-0.6; bound 1.0), while plain tiling (overlap 0) leaves steps 3.5-5x larger at the
    edges (bound > 2.5: the metric sees seams)."""
    prior = ConvPrior(seed=1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x0 = torch.tensor([0.3, -0.2, 0.5]).view(1, 3, 1, 1).expand(1, 3, 64, 64) if image == "flat" else 0.6 * torch.stack([xx, yy, (xx + yy) / 2])[None]
    x_t = math.sqrt(float(prior.alphas_cumprod[t])) * x0
    for overlap, ok in ((None, lambda a, b: a <= 1.0 * b), (0, lambda a, b: a > 2.5 * b)):
        tiled = TiledPrior(prior, tile=16, overlap=overlap)
        with torch.no_grad():
            eps = tiled.eps(x_t, torch.tensor([t]))
        for axis, cuts in zip((-2, -1), _edges(tiled, 64, t), strict=True):
            across, inside = _steps(eps, cuts, axis)
            assert ok(across, inside), (overlap, axis, across, inside)


@pytest.mark.slow
def test_no_seams_with_the_embedded_prior(embedded):
    """The shipped 64 px prior on 128x128 flat and gradient images (2 x 2 tiles without overlap,
    3 x 3 with the default 16 px), noise-free ``x_t`` at t = 500: across tile edges / inside,
    measured 0.10-0.47 with overlap (bound 1.0) and 13-17 without (bound > 5)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    flat = torch.tensor([0.3, -0.2, 0.5]).view(1, 3, 1, 1).expand(1, 3, 128, 128)
    x_t = math.sqrt(float(embedded.alphas_cumprod[500])) * torch.cat([flat, 0.6 * torch.stack([xx, yy, (xx + yy) / 2])[None]])
    for overlap, ok in ((None, lambda a, b: a <= 1.0 * b), (0, lambda a, b: a > 5 * b)):
        tiled = TiledPrior(embedded, overlap=overlap)
        with torch.no_grad():
            eps = tiled.eps(x_t, torch.tensor([500, 500]))
        for i in (0, 1):
            for axis, cuts in zip((-2, -1), _edges(tiled, 128, 500), strict=True):
                across, inside = _steps(eps[i : i + 1], cuts, axis)
                assert ok(across, inside), (overlap, i, axis, across, inside)


# --------------------------------------------------------------------------- layout pieces
def test_reflect_index_is_reflect_padding_repeated_for_large_pads():
    x = torch.arange(5.0)
    idx = reflect_index(5, 3, 2, x.device)
    torch.testing.assert_close(x[idx], F.pad(x[None, None], (3, 2), mode="reflect")[0, 0])
    assert x[reflect_index(5, 9, 0, x.device)].tolist()[:2] == [1.0, 0.0]  # 9 before: ... 1 0 | 1 2 3 4 3 2 1 | 0 1 2 3 4
    assert reflect_index(1, 3, 4, x.device).tolist() == [0] * 8


@pytest.mark.parametrize("tile, overlap", [(16, 0), (16, 4), (16, 8), (64, 16)])
def test_tiles_cover_the_image_and_windows_sum_to_one(tile, overlap):
    for n in (1, 5, tile - 1, tile, tile + 1, 3 * tile + 7, 250):
        for offset in sorted({0, (tile - overlap) // 2, tile - overlap - 1}):
            ax = axis_tiles(n, tile, overlap, offset if n > tile else 0)
            assert ax.starts[0] == 0 and ax.starts[-1] + tile == ax.front + n + ax.back
            assert ax.front <= tile and ax.back < tile  # no tile lies outside the image
            total = torch.zeros(ax.front + n + ax.back, dtype=torch.float64)
            for i, s in enumerate(ax.starts):
                total[s : s + tile] += ramp_window(tile, overlap, i == 0, i == ax.count - 1)
            torch.testing.assert_close(total, torch.ones_like(total))


def test_grid_offset_depends_on_t_alone_and_spreads():
    offsets = [grid_offset(t, 48, 0) for t in range(0, 1000, 10)]
    assert offsets == [grid_offset(t, 48, 0) for t in range(0, 1000, 10)] and all(0 <= o < 48 for o in offsets)
    assert len(set(offsets)) > 30 and grid_offset(123, 48, 0) != grid_offset(123, 48, 1)


# --------------------------------------------------------------------------- whole-image evaluation
def test_embedded_and_adm_networks_take_multiples_of_their_downsampling_whole(embedded):
    """The embedded UNet (3 downsamplings: multiples of 8) and ADM (levels - 1 downsamplings) run
    whole at non-square multiples; other sizes are reflect-padded to the next multiple."""
    assert embedded.whole_image_multiple == 8
    adm = ADMPrior(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", attention_resolutions="16,8",
                   num_heads=4, num_head_channels=16, learn_sigma=True, resblock_updown=True, allow_random_init=True)
    assert adm.whole_image_multiple == 4
    for prior, hw in ((embedded, (24, 40)), (embedded, (21, 35)), (adm, (20, 44)), (adm, (19, 45))):
        x = noisy((1, 3, *hw))
        with torch.no_grad():
            out = TiledPrior(prior, mode="whole").eps(x, torch.tensor([500]))
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_whole_mode_equals_the_network_on_a_size_it_takes(embedded):
    x, t = noisy((1, 3, 24, 40)), torch.tensor([300])
    with torch.no_grad():
        direct = embedded.network_eps(x, t)
        assert torch.equal(TiledPrior(embedded, mode="whole").eps(x, t), direct)
        with pytest.raises(ValueError, match="trained on 64x64 images, got 24x40"):
            embedded.eps(x, t)  # the prior itself still refuses other sizes


def test_mask_operator_solve_through_the_wrapper_on_a_small_image():
    """An image smaller than a tile is reflect-padded to one tile (Gaussian prior: exact)."""
    g = GaussianPrior(mean=0.0, std=0.5)
    op = MaskOperator((noisy((3, 6, 9)) > 0).float())
    y = op(noisy((1, 3, 6, 9), seed=5).clamp(-1, 1))
    plain = RedDiff(num_steps=10).solve(y, op, g, seeding.generators(0, [0], "solver"))
    tiled = RedDiff(num_steps=10).solve(y, op, TiledPrior(g, tile=16), seeding.generators(0, [0], "solver"))
    torch.testing.assert_close(tiled, plain, rtol=0, atol=1e-5)
