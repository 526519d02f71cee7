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
    merge_subpopulations,
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
    one = singleton_statistics(np.array([1.0]), np.array([10]), 10)
    assert one["singleton_mass"] == 0.0 and one["expected_singletons"] == 0.0
    assert one["tau1"] is None  # 0/0 once one component remains: undefined, not 0


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


class _Picks:
    """A generator stub whose `integers` returns fixed picks (indices into Feldman's list)."""

    def __init__(self, picks: list[int]) -> None:
        self.picks = np.asarray(picks)

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        assert (low, high, size) == (0, len(self.picks), len(self.picks))
        return self.picks


def test_feldman_frequencies_pick_from_the_zipf_list_counted_by_hand() -> None:
    # list psi = (1, 1/2, 1/3); picks (3rd, 3rd, 1st) -> (1/3, 1/3, 1) / (5/3) = (0.2, 0.2, 0.6).
    # The Zipf list itself as weights would be (6, 3, 2) / 11.
    assert feldman_frequencies(3, 1.0, _Picks([2, 2, 0])) == pytest.approx([0.2, 0.2, 0.6], abs=1e-15)
    assert feldman_frequencies(2, 2.0, _Picks([1, 1])) == pytest.approx([0.5, 0.5], abs=1e-15)


def test_feldman_frequencies_repeat_list_values_like_uniform_picks() -> None:
    # K independent uniform picks from K values leave about K (1 - (1 - 1/K)^K) = 632 distinct ones for K = 1000
    # (std about 9); the list used directly has 1000 distinct values.
    k = 1000
    pi = feldman_frequencies(k, 1.0, np.random.default_rng(3))
    distinct = np.unique(np.round(pi / pi.max(), 12)).size
    assert 590 < distinct < 675, distinct


def _sd_for_tv(delta: float, tv: float) -> float:
    """The total std at which two components delta apart have exactly this TV."""
    from scipy.special import erfinv

    return delta / (2.0 * math.sqrt(2.0) * float(erfinv(tv)))


def test_merging_counted_by_hand() -> None:
    # 1-D means 0, 1, 3 at the noise where TV(|1|) = 0.4: TV(|2|) = 0.705, TV(|3|) = 0.884.
    sigma0 = 1e-3
    s = math.sqrt(_sd_for_tv(1.0, 0.4) ** 2 - sigma0**2)
    assert float(gaussian_tv(2.0, s, sigma0)) == pytest.approx(0.705, abs=1e-3)
    means = np.array([[0.0], [1.0], [3.0]])
    pi, counts = np.array([0.5, 0.3, 0.2]), np.array([1, 1, 3])
    m_pi, m_counts = merge_subpopulations(means, pi, counts, s, sigma0, merge_tv=0.5)  # only 0-1 merge
    assert sorted(m_pi.tolist()) == pytest.approx([0.2, 0.8]) and sorted(m_counts.tolist()) == [2, 3]
    m_pi, _ = merge_subpopulations(means, pi, counts, s, sigma0, merge_tv=0.3)  # nothing merges
    assert m_pi.size == 3
    m_pi, m_counts = merge_subpopulations(means, pi, counts, s, sigma0, merge_tv=0.75)  # 0-1, 1-3: one chain
    assert m_pi.tolist() == pytest.approx([1.0]) and m_counts.tolist() == [5]
    # single linkage: 0, 1, 2 form one group although TV(0, 2) = 0.705 > 0.5
    m_pi, _ = merge_subpopulations(np.array([[0.0], [1.0], [2.0]]), pi, counts, s, sigma0, merge_tv=0.5)
    assert m_pi.size == 1
    # the singletons after merging, by hand: {0,1} seen twice, {3} three times
    st = singleton_statistics(*merge_subpopulations(means, pi, counts, s, sigma0, 0.5), n=5)
    assert st["singletons"] == 0 and st["components"] == 2


def test_tau1_in_the_simulation_does_not_fall_while_singletons_do() -> None:
    rng = np.random.default_rng(0)
    rows = simulate_subpopulations([0.001, 0.05, 0.2, 5.0], rng, num_components=300, num_train=300)["rows"]
    tau = [r["tau1"] for r in rows]
    assert tau[-1] is None and rows[-1]["components"] == 1
    assert tau[2] > tau[0] > 0  # rises while components merge ...
    assert rows[2]["expected_singletons"] < 0.2 * rows[0]["expected_singletons"]  # ... singletons fall
    for r in rows[:3]:  # singleton mass = tau1 x expected singletons
        assert r["singleton_mass"] == pytest.approx(r["tau1"] * r["expected_singletons"])
