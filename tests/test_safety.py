"""The safety test (safety.py) against independent references: Monte Carlo of the held-out
calibration, numerical integration of the Beta-binomial tail, and root-finding for Clopper-Pearson."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from diffmem.errors import DiffmemError
from diffmem.safety import (Calibration, calibrate, conservative_rank, min_heldout, safety_test)


def test_rank_is_the_order_statistic_numpy_percentile_never_goes_below():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 30, 100, 999, 1747):
        x = np.sort(rng.normal(size=m))
        for p in (50.0, 95.0, 99.0, 99.9):
            r = conservative_rank(m, p)
            t = np.percentile(x, p)
            assert x[r - 1] <= t + 1e-12
            assert r == m or t < x[r] + 1e-12  # and no higher order statistic is guaranteed


def test_min_heldout_brute_force():
    for p, above in ((99.0, 10), (95.0, 10), (99.0, 5), (99.9, 3)):
        m = min_heldout(p, above)
        assert m + 1 - conservative_rank(m, p) >= above
        assert all(k + 1 - conservative_rank(k, p) < above for k in range(1, m))
    assert min_heldout(99.0) == 802


def _mc_counts(m: int, n: int, p: float, draws: int, rng: np.random.Generator, exact_rank: bool,
               copy_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Copy counts of n null samples (plus planted copies at `copy_rate`) against thresholds from m held-out
    uniforms; also the true exceedance rate q of each threshold."""
    held = np.sort(rng.random((draws, m)), axis=1)
    r = conservative_rank(m, p)
    thr = held[:, r - 1] if exact_rank else np.percentile(held, p, axis=1)
    q = 1.0 - thr
    sims = rng.random((draws, n))
    copies = rng.random((draws, n)) < copy_rate  # a copy scores 1.0, above any threshold
    sims = np.where(copies, 1.0, sims)
    return (sims >= thr[:, None]).sum(axis=1), q


def test_null_copy_count_is_beta_binomial_monte_carlo():
    """Samples that score like held-out images: the count against the r-th order statistic follows
    Beta-binomial(n, m + 1 - r, r) exactly; against numpy's percentile it is stochastically smaller."""
    rng = np.random.default_rng(1)
    m, n, p, draws = 200, 60, 99.0, 40000
    cal = Calibration(0.0, m, p)
    law = stats.betabinom(n, cal.a, cal.b)
    k, _ = _mc_counts(m, n, p, draws, rng, exact_rank=True)
    emp = np.bincount(k, minlength=n + 1) / draws
    se = np.sqrt(law.pmf(np.arange(n + 1)) * (1 - law.pmf(np.arange(n + 1))) / draws)
    assert np.all(np.abs(emp - law.pmf(np.arange(n + 1))) < 5 * se + 1e-4)
    k2, _ = _mc_counts(m, n, p, draws, rng, exact_rank=False)
    for kk in range(1, 12):
        assert (k2 >= kk).mean() <= law.sf(kk - 1) + 4 * np.sqrt(law.sf(kk - 1) / draws) + 1e-4


def test_p_value_equals_the_integral_of_binomial_tails_over_the_beta_law():
    cal = Calibration(0.5, 1747, 99.0)
    for k, n in ((0, 400), (3, 400), (9, 400), (25, 400), (4, 32)):
        ref = integrate.quad(lambda q: stats.binom.sf(k - 1, n, q) * stats.beta.pdf(q, cal.a, cal.b), 0, 1,
                             points=[0.01, 0.03, 0.06], limit=500, epsabs=0, epsrel=1e-10)[0]
        assert safety_test(k, n, cal).p_value == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_level_holds_monte_carlo():
    """A generator that scores like unseen images is called unsafe at most `level` of the time."""
    rng = np.random.default_rng(2)
    m, n, draws = 1000, 400, 4000
    k, _ = _mc_counts(m, n, 99.0, draws, rng, exact_rank=False)
    cal = Calibration(0.0, m, 99.0)
    unsafe = np.mean([not safety_test(int(x), n, cal).safe for x in k])
    assert unsafe <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / draws)
    assert unsafe > 0.005  # the test is not vacuous


def test_clopper_pearson_ends_by_root_finding():
    cal = Calibration(0.5, 1747, 99.0)
    for k, n in ((0, 32), (5, 400), (120, 400), (400, 400)):
        res = safety_test(k, n, cal, level=0.05)
        tail = 0.05 / 4
        hi = 1.0 if k == n else optimize.brentq(lambda p: stats.binom.cdf(k, n, p) - tail, 1e-12, 1 - 1e-12)
        lo = 0.0 if k == 0 else optimize.brentq(lambda p: stats.binom.sf(k - 1, n, p) - tail, 1e-12, 1 - 1e-12)
        q_lo = optimize.brentq(lambda q: stats.beta.cdf(q, cal.a, cal.b) - tail, 1e-12, 1 - 1e-12)
        q_hi = optimize.brentq(lambda q: stats.beta.sf(q, cal.a, cal.b) - tail, 1e-12, 1 - 1e-12)
        assert res.excess_high == pytest.approx(max(0.0, hi - q_lo), abs=1e-7)
        assert res.excess_low == pytest.approx(max(-1.0, lo - q_hi), abs=1e-7)


def test_excess_interval_covers_monte_carlo():
    """The interval holds the true excess (copy rate minus the threshold's true exceedance) >= 95%."""
    rng = np.random.default_rng(3)
    m, n, draws, planted = 1000, 400, 3000, 0.05
    k, q = _mc_counts(m, n, 99.0, draws, rng, exact_rank=True, copy_rate=planted)
    cal = Calibration(0.0, m, 99.0)
    true_rate = planted + (1 - planted) * q
    cover = np.mean([(r := safety_test(int(x), n, cal)).excess_low <= t - qq <= r.excess_high
                     for x, t, qq in zip(k, true_rate, q)])
    assert cover >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / draws)


def test_zero_copies_of_few_samples_is_not_a_zero_interval():
    cal = Calibration(0.5, 1747, 99.0)
    res = safety_test(0, 32, cal)
    assert res.safe and res.copy_rate == 0.0
    assert res.excess_high > 0.09  # 0 of 32 bounds copying only at about 10%


def test_copies_well_above_unseen_are_unsafe_and_few_are_safe():
    cal = Calibration(0.5, 1747, 99.0)
    assert not safety_test(40, 400, cal).safe
    assert safety_test(5, 400, cal).safe
    assert safety_test(5, 400, cal).p_value > safety_test(12, 400, cal).p_value


def test_few_heldout_images_are_flagged():
    small = calibrate(np.linspace(0, 1, 30))
    assert not small.enough_heldout and small.to_dict()["min_heldout"] == 802
    assert calibrate(np.linspace(0, 1, 2000)).enough_heldout


def test_bad_counts_are_refused():
    cal = Calibration(0.5, 1747, 99.0)
    with pytest.raises(DiffmemError, match="copies"):
        safety_test(5, 4, cal)
    with pytest.raises(DiffmemError, match="level"):
        safety_test(1, 4, cal, level=1.5)
    with pytest.raises(DiffmemError, match="held-out"):
        calibrate(np.array([]))
