"""Information leakage (Lemma 4.2, Appendix C.1.3): exact formulas against Monte Carlo."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from diffmem.theory.leakage import (
    _logdet_bias,
    ambient_bound,
    gaussian_mi_estimate,
    ksg_mi_estimate,
    leakage_ambient,
    leakage_baseline,
    leakage_report,
    monte_carlo_leakage,
)


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """Small covariance products are much faster on one BLAS thread on a shared CPU."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def test_lemma_4_2_formulas() -> None:
    d, snr = 3, 0.7
    for m in (1, 2, 10, 1000):
        assert leakage_baseline(m, d, snr) == pytest.approx(0.5 * d * math.log(1 + m * snr))
        assert leakage_ambient(m, d, snr) == pytest.approx(0.5 * d * math.log(1 + snr))  # same for every m
    assert leakage_baseline(1, d, snr) == pytest.approx(leakage_ambient(1, d, snr))  # one sample: equal
    assert leakage_baseline(0, d, snr) == 0 and leakage_ambient(0, d, snr) == 0
    ms = [1, 2, 4, 8, 64]
    assert np.all(np.diff([leakage_baseline(m, d, snr) for m in ms]) > 0)  # grows without bound in m


def test_n_point_formulas_match_a_simulation_of_the_source_counts() -> None:
    rng = np.random.default_rng(0)
    n, m, d, snr = 5, 12, 2, 1.5
    counts = rng.multinomial(m, np.full(n, 1 / n), size=20000)  # [R, n]: samples drawn from each point
    base_mc = (0.5 * d * np.log1p(counts * snr)).sum(1)
    amb_mc = (counts > 0).sum(1) * 0.5 * d * math.log1p(snr)
    se_b, se_a = base_mc.std() / math.sqrt(len(counts)), amb_mc.std() / math.sqrt(len(counts))
    assert abs(base_mc.mean() - leakage_baseline(m, d, snr, n)) < 4 * se_b
    assert abs(amb_mc.mean() - leakage_ambient(m, d, snr, n)) < 4 * se_a
    for mm in (1, 10, 10_000):  # ambient stays below I(X; Y) (data processing), baseline does not
        assert leakage_ambient(mm, d, snr, n) <= ambient_bound(d, snr, n) + 1e-12
    assert leakage_baseline(10_000, d, snr, n) > 3 * ambient_bound(d, snr, n)
    assert leakage_baseline(m, d, snr, 1) == pytest.approx(0.5 * d * math.log1p(m * snr))


@pytest.mark.parametrize("method", ["baseline", "ambient"])
@pytest.mark.parametrize(("m", "d", "snr"), [(1, 1, 1.0), (4, 1, 0.25), (16, 1, 4.0), (4, 3, 1.0)])
def test_monte_carlo_gaussian_estimator_agrees(method: str, m: int, d: int, snr: float) -> None:
    r = monte_carlo_leakage(method, m, d, snr, num_draws=3000, num_reps=8, rng=np.random.default_rng(m * 7 + d))
    assert abs(r["mean"] - r["exact"]) < 4 * r["stderr"] + 1e-3, r


@pytest.mark.parametrize("method", ["baseline", "ambient"])
def test_monte_carlo_ksg_estimator_agrees_in_one_dimension(method: str) -> None:
    r = monte_carlo_leakage(method, 8, 1, 1.0, num_draws=1500, num_reps=6, rng=np.random.default_rng(5),
                            estimator="ksg")
    # KSG has a small finite-sample bias at this MI (~1 nat): allow it on top of the error bars.
    assert abs(r["mean"] - r["exact"]) < 4 * r["stderr"] + 0.03, r


def test_gaussian_estimator_handles_identical_copies_and_independence() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 1))
    y = x + rng.standard_normal((4000, 1))
    s = np.repeat(y, 5, axis=1)  # five identical samples carry what one does
    assert gaussian_mi_estimate(x, s) == pytest.approx(gaussian_mi_estimate(x, y), abs=1e-6)
    assert abs(gaussian_mi_estimate(x, rng.standard_normal((4000, 3)))) < 0.01
    assert abs(ksg_mi_estimate(x, rng.standard_normal((4000, 1)))) < 0.03


def test_report_shapes() -> None:
    rep = leakage_report(8, 1, [1.0], 1, np.random.default_rng(0), mc_draws=500, mc_reps=2, mc_m_max=2)
    assert rep["exact"]["m"][0] == 1 and rep["exact"]["m"][-1] == 8
    assert len(rep["monte_carlo"]) == 2 * 2  # two methods, m in {1, 2}
    assert leakage_report(8, 1, [1.0], 3, np.random.default_rng(0), mc_reps=2)["monte_carlo"] == []


def test_wishart_logdet_bias_matches_monte_carlo() -> None:
    # E[log det S] - log det Sigma for the unbiased sample covariance of n = 8 draws in p = 3 dimensions (about -1.03),
    # against 40000 replicates with a non-diagonal Sigma.
    rng = np.random.default_rng(0)
    p, n, reps = 3, 8, 40000
    a = rng.standard_normal((p, p))
    sigma = a @ a.T + np.eye(p)
    x = rng.standard_normal((reps, n, p)) @ np.linalg.cholesky(sigma).T
    xc = x - x.mean(1, keepdims=True)
    cov = np.einsum("rni,rnj->rij", xc, xc) / (n - 1)
    gap = np.linalg.slogdet(cov)[1] - np.linalg.slogdet(sigma)[1]
    se = gap.std() / math.sqrt(reps)
    assert abs(gap.mean() - _logdet_bias(p, n)) < 4 * se, (gap.mean(), _logdet_bias(p, n), se)
    assert _logdet_bias(p, n) < -20 * se  # a bias of this size, so that its sign is tested


def test_gaussian_estimator_is_unbiased_at_small_sample_size() -> None:
    # 1500 replicates of N = 20 draws of x ~ N(0, I_2), y = x + N(0, I_2): I(x; y) = 2 * 0.5 log 2 exactly.
    # The Wishart correction is about 0.11 nats here (20 standard errors); the plug-in is biased by that.
    rng = np.random.default_rng(1)
    reps, n, d = 1500, 20, 2
    vals = []
    for _ in range(reps):
        x = rng.standard_normal((n, d))
        vals.append(gaussian_mi_estimate(x, x + rng.standard_normal((n, d))))
    est, se = float(np.mean(vals)), float(np.std(vals) / math.sqrt(reps))
    exact = d * 0.5 * math.log(2.0)
    assert abs(est - exact) < 4 * se, (est, exact, se)
    correction = 0.5 * (2 * _logdet_bias(d, n) - _logdet_bias(2 * d, n))
    assert correction > 10 * se
