"""The commitment curve and the sigma_n heuristic (docs/method.md, "Theory commands")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scipy.stats import norm

from diffmem.errors import DiffmemError
from diffmem.theory.commitment import commitment_curve, default_sigma_grid, suggest_sigma_n

SIGMAS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8]


def _data(n: int, seed: int) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed)) * 2 - 1  # d = 64


def test_max_weight_decreases_and_effective_count_increases_with_noise() -> None:
    curve = commitment_curve(_data(40, 0), _data(30, 1), SIGMAS, torch.Generator().manual_seed(0), repeats=2)
    assert curve["sigmas"] == SIGMAS and curve["n_train"] == 40 and curve["n_heldout"] == 30 and curve["dim"] == 64
    assert curve["generator_seed"] == 0
    for key in ("train", "heldout"):
        mw = [r[key]["max_weight"]["median"] for r in curve["rows"]]
        ec = [r[key]["eff_count"]["median"] for r in curve["rows"]]
        assert all(a >= b - 1e-9 for a, b in zip(mw, mw[1:])), mw
        assert all(a <= b + 1e-9 for a, b in zip(ec, ec[1:])), ec
        assert mw[0] > 0.99 and mw[-1] < 0.1 and ec[-1] > 20
    first = curve["rows"][0]["train"]
    assert first["argmax_is_source"] == 1.0 and first["own_weight"]["median"] > 0.99
    # at the same noise, a noisy training point is more committed than a noisy new point
    mid = curve["rows"][4]
    assert mid["train"]["max_weight"]["median"] >= mid["heldout"]["max_weight"]["median"]


def test_commitment_curve_rejects_bad_input() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(DiffmemError, match="noise levels"):
        commitment_curve(_data(5, 0), None, [0.1, -1.0], g)
    with pytest.raises(DiffmemError, match="differ in shape"):
        commitment_curve(_data(5, 0), torch.zeros(3, 1, 4, 4), [0.1], g)
    with pytest.raises(DiffmemError, match="at least 2"):
        commitment_curve(_data(1, 0), None, [0.1], g)
    curve = commitment_curve(_data(5, 0), _data(3, 1), [0.1], g, max_heldout=0)
    assert curve["n_heldout"] == 0 and "heldout" not in curve["rows"][0]


def _fake_curve(medians: list[float], sigmas: list[float], nn: float = 4.0, dim: int = 256) -> dict:
    return {
        "sigmas": sigmas,
        "median_nn_distance": nn,
        "dim": dim,
        "rows": [{"sigma": s, "train": {"max_weight": {"median": m}}} for s, m in zip(sigmas, medians)],
    }


def test_suggest_sigma_n_rule() -> None:
    sig = [0.25, 0.5, 1.0, 2.0, 4.0]
    sug = suggest_sigma_n(_fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], sig))
    assert sug["window"] == pytest.approx([1.0, 2.0])
    assert sug["floor"] == pytest.approx(4.0 / 16)
    assert sug["range"] == pytest.approx([0.25, 1.0]) and sug["suggested"] == pytest.approx(1.0)  # the window's bottom
    assert "warning" not in sug
    # log-linear interpolation between grid points
    sug = suggest_sigma_n(_fake_curve([1.0, 1.0, 1.0, 0.8, 0.1], sig))
    assert sug["window"][0] == pytest.approx(math.exp(math.log(1.0) + 0.5 * math.log(2.0)))
    # floor above the window bottom: empty range, warning
    sug = suggest_sigma_n(_fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], sig, nn=40.0))
    assert sug["range"] == pytest.approx([1.0, 1.0]) and len(sug["warnings"]) == 1
    assert "floor" in sug["warning"] and "hides" not in sug["warning"]
    with pytest.raises(DiffmemError, match="extend the noise levels upward"):
        suggest_sigma_n(_fake_curve([1.0, 1.0, 1.0, 0.95, 0.92], sig))


def test_default_sigma_grid_brackets_the_suggestion() -> None:
    curve = _fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], [0.25, 0.5, 1.0, 2.0, 4.0])
    grid = default_sigma_grid(curve)
    sug = suggest_sigma_n(curve)
    assert grid == sorted(grid) and len(grid) >= 5
    assert grid[0] < sug["range"][0] and grid[-1] > sug["window"][1]
    assert np.all(np.asarray(grid) > 0)


def test_every_warning_is_kept() -> None:
    # the window starts at the smallest level AND the floor lies above it: both caveats are reported
    sug = suggest_sigma_n(_fake_curve([0.9, 0.5, 0.1], [0.25, 0.5, 1.0], nn=40.0))
    assert len(sug["warnings"]) == 2, sug
    assert "extend the noise levels downward" in sug["warning"] and "lies above the bottom" in sug["warning"]


def test_share_of_copies_nearest_their_source_is_reported_at_the_range() -> None:
    sig = [0.25, 0.5, 1.0, 2.0, 4.0]
    curve = _fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], sig)  # range [0.25, 1], suggested 1
    for row, share in zip(curve["rows"], [1.0, 0.98, 0.8, 0.4, 0.1]):
        row["train"]["argmax_is_source"] = share
    at = suggest_sigma_n(curve)["argmax_is_source_at"]
    assert at == pytest.approx({"range_low": 1.0, "range_high": 0.8})
    curve["median_nn_distance"] = 16 * math.sqrt(0.5)  # d = 256: floor 0.5 * sqrt(2): log-midway between 0.5 and 1
    assert suggest_sigma_n(curve)["argmax_is_source_at"]["range_low"] == pytest.approx(0.89)


@pytest.mark.parametrize("dim", [4, 256])
def test_a_copy_reveals_its_source_by_separation_not_by_noise_norm(dim: int) -> None:
    # Two images delta apart: a noisy copy x_1 + s z is nearer x_1 iff z.u > -delta / (2 s) (u: unit difference),
    # with probability Phi(delta / (2 s)) in every dimension d, although the noise norm s sqrt(d) grows with d.
    delta, reps = 2.0, 3000
    train = torch.zeros((2, dim), dtype=torch.float64)
    train[1, 0] = delta
    s_levels = [0.5, 1.0, 2.0]
    curve = commitment_curve(train, None, s_levels, torch.Generator().manual_seed(dim), repeats=reps)
    for row, s in zip(curve["rows"], s_levels):
        exact = float(norm.cdf(delta / (2 * s)))
        se = math.sqrt(exact * (1 - exact) / (2 * reps))
        assert abs(row["train"]["argmax_is_source"] - exact) < 4 * se + 1e-12, (dim, s, row["train"], exact)
