"""Frechet distance, KID and precision/recall against closed forms and known cases."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.linalg

from diffmem.errors import DiffmemError
from diffmem.evaluate.quality import feature_statistics, frechet_distance, kid, precision_recall


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(200, 6))
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (6, 6)
    assert np.allclose(sigma, np.cov(x, rowvar=False))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_closed_form_diagonal_and_general() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    v1, v2 = rng.uniform(0.5, 2, size=4), rng.uniform(0.5, 2, size=4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    r1 = scipy.linalg.sqrtm(s1).real  # symmetric form: tr((S1 S2)^1/2) = tr((R1 S2 R1)^1/2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # singular on purpose
def test_frechet_singular_and_mismatched() -> None:
    s = np.zeros((3, 3))
    s[0, 0] = 1.0  # rank 1: sqrtm may be non-finite; the eps retry keeps it finite
    assert np.isfinite(frechet_distance(np.zeros(3), s, np.ones(3), s))
    with pytest.raises(DiffmemError, match="different feature extractors"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(DiffmemError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))


def _k(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def test_kid_is_unbiased_on_a_known_case() -> None:
    # Two discrete distributions (uniform over 4 and 5 points): the population MMD^2 is exact.
    rng = np.random.default_rng(0)
    pa, pb = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)) + 0.3
    exact = _k(pa, pa).mean() + _k(pb, pb).mean() - 2 * _k(pa, pb).mean()
    a = pa[rng.integers(0, 4, 4000)]
    b = pb[rng.integers(0, 5, 4000)]
    m, subsets = 20, 400
    mean, std = kid(a, b, subsets=subsets, subset_size=m, generator=np.random.default_rng(1))
    assert std > 0
    se = std / np.sqrt(subsets)
    assert abs(mean - exact) < 4 * se
    # the biased (V-statistic) estimate is off by about 2 (E k(x,x) - E k(x,x')) / m: far outside that band
    bias = (np.diag(_k(pa, pa)).mean() - _k(pa, pa).mean() + np.diag(_k(pb, pb)).mean() - _k(pb, pb).mean()) / m
    assert bias > 8 * se


def test_kid_same_distribution_near_zero_and_seeded() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    r1 = kid(a, b, subsets=20, subset_size=50, generator=3)
    r2 = kid(a, b, subsets=20, subset_size=50, generator=3)
    assert r1 == r2
    assert abs(r1[0]) < 3 * r1[1]


def test_precision_recall() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(100, 4))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    p, r = precision_recall(real, real + 100.0, k=3)
    assert p == 0.0 and r == 0.0
    # fakes collapsed onto a small part of the real set: high precision, low recall
    fake = real[:10].repeat(5, axis=0) + 1e-3 * rng.normal(size=(50, 4))
    p, r = precision_recall(real, fake, k=3)
    assert p == 1.0 and r < 0.5
    with pytest.raises(DiffmemError, match="more than 3"):
        precision_recall(real[:3], real, k=3)
