"""The commitment curve and the sigma_n rule (DESIGN.md section 1, "Choosing sigma_n")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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
    assert sug["range"] == pytest.approx([0.25, 1.0]) and sug["suggested"] == pytest.approx(0.5)
    assert "warning" not in sug
    # log-linear interpolation between grid points
    sug = suggest_sigma_n(_fake_curve([1.0, 1.0, 1.0, 0.8, 0.1], sig))
    assert sug["window"][0] == pytest.approx(math.exp(math.log(1.0) + 0.5 * math.log(2.0)))
    # floor above the window bottom: empty range, warning
    sug = suggest_sigma_n(_fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], sig, nn=40.0))
    assert sug["range"] == pytest.approx([1.0, 1.0]) and "warning" in sug
    with pytest.raises(DiffmemError, match="extend the noise levels upward"):
        suggest_sigma_n(_fake_curve([1.0, 1.0, 1.0, 0.95, 0.92], sig))


def test_default_sigma_grid_brackets_the_suggestion() -> None:
    curve = _fake_curve([1.0, 1.0, 0.9, 0.5, 0.1], [0.25, 0.5, 1.0, 2.0, 4.0])
    grid = default_sigma_grid(curve)
    sug = suggest_sigma_n(curve)
    assert grid == sorted(grid) and len(grid) >= 5
    assert grid[0] < sug["range"][0] and grid[-1] > sug["window"][1]
    assert np.all(np.asarray(grid) > 0)
