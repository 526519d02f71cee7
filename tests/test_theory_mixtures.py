"""Gaussian subpopulations under noise (Lemmas 4.5, A.5, A.6) and Feldman's model (Theorem 4.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from diffmem.theory.mixtures import (
    feldman_frequencies,
    gaussian_tv,
    merge_noise_bound,
    mixtures_report,
    noise_for_tv,
    separated_noise_bound,
    simulate_subpopulations,
    singleton_statistics,
    tv_lower_bound,
    tv_upper_bound,
)


@pytest.mark.parametrize(("delta", "sigma", "sigma0"), [(1.0, 0.0, 1.0), (3.0, 0.5, 0.2), (0.2, 2.0, 1.0)])
def test_tv_closed_form_matches_numerical_integration(delta: float, sigma: float, sigma0: float) -> None:
    sd = math.sqrt(sigma0**2 + sigma**2)  # project on mu_2 - mu_1: equal covariances, 1-D problem
    gap = lambda t: abs(norm.pdf(t, 0, sd) - norm.pdf(t, delta, sd))  # noqa: E731
    tv_num = 0.5 * integrate.quad(gap, -50, 50, points=[delta / 2])[0]
    assert float(gaussian_tv(delta, sigma, sigma0)) == pytest.approx(tv_num, abs=1e-7)


def test_tv_decreases_with_noise_and_crosses_the_regimes() -> None:
    sigma0, eps = 1.0, 0.1
    s = np.geomspace(1e-3, 1e3, 400)
    for delta in (0.5, 2.0, 6.0):
        tv = gaussian_tv(delta, s, sigma0)
        assert np.all(np.diff(tv) < 0)  # strictly decreasing
        assert np.all(tv >= tv_lower_bound(delta, s, sigma0) - 1e-12)
        assert np.all(tv <= tv_upper_bound(delta, s, sigma0) + 1e-12)
        tv0 = float(gaussian_tv(delta, 0.0, sigma0))
        low = s <= separated_noise_bound(sigma0)  # Lemma A.5: still separated
        assert np.all(tv[low] >= tv0 / 2)
        high = s >= merge_noise_bound(delta, eps, sigma0)  # Lemma A.6: eps-merged
        assert high.any() and np.all(tv[high] <= eps)
        s_eps = noise_for_tv(delta, eps, sigma0)  # exact crossing, below the bound
        assert float(gaussian_tv(delta, s_eps, sigma0)) == pytest.approx(eps)
        assert s_eps <= merge_noise_bound(delta, eps, sigma0)


def test_feldman_frequencies_and_singleton_statistics() -> None:
    pi = feldman_frequencies(500, 1.0, np.random.default_rng(0))
    assert pi.shape == (500,) and pi.sum() == pytest.approx(1.0) and np.all(pi > 0)
    st = singleton_statistics(np.array([0.5, 0.5]), np.array([1, 3]), 4)
    assert st["singletons"] == 1 and st["expected_singletons"] == pytest.approx(4 * 2 * 0.5 * 0.5**3)
    assert st["tau1"] == pytest.approx(0.5)
    assert singleton_statistics(np.array([1.0]), np.array([10]), 10)["singleton_mass"] == 0.0


def test_noise_merges_heavy_tailed_singletons_away() -> None:
    sigmas = [0.001, 0.01, 0.1, 1.0, 5.0]
    sim = simulate_subpopulations(sigmas, np.random.default_rng(0), num_components=300, num_train=300)
    rows = sim["rows"]
    comps = [r["components"] for r in rows]
    assert comps[0] >= 290 and comps[-1] == 1 and all(a >= b for a, b in zip(comps, comps[1:]))
    assert rows[0]["singletons"] >= 30  # heavy tail: many subpopulations seen once (memorization needed)
    assert rows[-1]["singletons"] == 0 and rows[-1]["singleton_mass"] == 0.0
    assert rows[0]["singleton_mass"] > 10 * rows[3]["singleton_mass"]


def test_report_has_both_parts() -> None:
    rep = mixtures_report([1.0, 2.0], 1.0, 0.1, [0.1, 1.0, 10.0], [0.01, 1.0], np.random.default_rng(0),
                          num_components=50, num_train=50)
    assert [r["delta"] for r in rep["tv"]["rows"]] == [1.0, 2.0]
    assert len(rep["subpopulations"]["rows"]) == 2
