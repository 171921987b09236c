"""Time grids (owned by the solvers): every S visits S distinct times up to T - T/S."""
from __future__ import annotations

import pytest
import torch

from lightning_redd import seeding
from lightning_redd.solvers.grids import ordered_grid, reverse_pairs, timestep_grid
from lightning_redd.solvers.red_diff import RedDiff

T = 1000


def test_every_grid_size_reaches_the_top_with_distinct_points():
    """For every S in 1..T: S distinct ascending points from 0 to round(T - T/S), and exactly
    the reference's range(0, T, T // S) whenever S divides T."""
    for s in range(1, T + 1):
        grid = timestep_grid(s, T)
        assert grid.dtype == torch.long and grid.shape == (s,), s
        assert grid[0] == 0 and int(grid[-1]) == round(T - T / s), s
        assert (grid[1:] > grid[:-1]).all(), s  # distinct (and ascending)
        if T % s == 0:
            assert grid.tolist() == list(range(0, T, T // s)), s


@pytest.mark.parametrize(
    "s, top", [(1, 0), (3, 667), (7, 857), (100, 990), (300, 997), (400, 998), (600, 998), (999, 999), (1000, 999)]
)
def test_top_time_of_awkward_sizes(s, top):
    assert int(timestep_grid(s, T)[-1]) == top
    t, t_prev = reverse_pairs(s, T)
    assert int(t[0]) == top and int(t_prev[-1]) == -1 and t_prev[:-1].tolist() == t[1:].tolist()


def test_red_diff_parallel_grid_spans_num_steps_times_parallel():
    """num_steps * parallel = 400 points (4 per iterate), the first iterate at the top."""
    times = RedDiff(num_steps=100, parallel=4).schedule(_Prior(), seeding.generators(0, [0], "solver"))
    flat = times[0].flatten()
    assert times.shape == (1, 100, 4) and flat.unique().numel() == 400
    assert int(flat[0]) == round(T - T / 400) == 998 and int(flat[-1]) == 0
    assert sorted(flat.tolist()) == timestep_grid(400, T).tolist()


def test_ordered_grid_orders():
    g = torch.Generator().manual_seed(0)
    assert ordered_grid(300, T, "descending").tolist() == timestep_grid(300, T).flip(0).tolist()
    assert sorted(ordered_grid(300, T, "random", g).tolist()) == timestep_grid(300, T).tolist()
    with pytest.raises(ValueError, match="allowed"):
        ordered_grid(10, T, "sideways")
    with pytest.raises(ValueError, match=r"\[1, 1000\]"):
        timestep_grid(1001, T)


def test_quadratic_spacing_squares_the_same_span():
    """quadratic: round(top * (j / (S - 1))^2), from 0 to the linear grid's top; the small times repeat, the
    large ones spread; RedDiff visits it in descending order; other spacings are refused."""
    for s in (2, 10, 100, 130, 1000):
        grid = timestep_grid(s, T, "quadratic")
        top = T - T / s
        assert grid.tolist() == [round(top * (j / (s - 1)) ** 2) for j in range(s)], s
        assert grid[0] == 0 and grid[-1] == timestep_grid(s, T)[-1] and (grid[1:] >= grid[:-1]).all(), s
    g130 = timestep_grid(130, T, "quadratic")
    assert g130[:8].tolist() == [0, 0, 0, 1, 1, 1, 2, 3] and g130[-3:].tolist() == [962, 977, 992]
    assert int((g130 < 250).sum()) == 65 and int((timestep_grid(130, T) < 250).sum()) == 33  # half below t = 250, not a quarter
    assert timestep_grid(1, T, "quadratic").tolist() == [0]
    times = RedDiff(num_steps=130, time_grid="quadratic").schedule(_Prior(), seeding.generators(0, [0], "solver"))
    assert times[0, :, 0].tolist() == g130.flip(0).tolist()
    assert RedDiff(num_steps=130).schedule(_Prior(), seeding.generators(0, [0], "solver"))[0, :, 0].tolist() == \
        timestep_grid(130, T).flip(0).tolist()  # linear stays the default
    with pytest.raises(ValueError, match="allowed"):
        timestep_grid(10, T, "cubic")
    with pytest.raises(ValueError, match="time_grid"):
        RedDiff(time_grid="cubic")


class _Prior:
    num_timesteps = T
