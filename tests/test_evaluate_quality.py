"""Frechet distance, KID and precision/recall against closed forms and known cases."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.linalg

from diffmem.errors import DiffmemError
from diffmem.evaluate.quality import feature_statistics, frechet_distance, kid, kid_report, precision_recall


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


def _frechet_by_eigenvalues(mu1, s1, mu2, s2) -> float:
    """tr((S1 S2)^(1/2)) = sum of the square roots of the eigenvalues of S1 S2 (real and >= 0: S1 S2 is similar
    to the PSD matrix S1^(1/2) S2 S1^(1/2)); exact for singular covariances too."""
    lam = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # singular on purpose
def test_frechet_singular_covariances_match_the_eigenvalue_form() -> None:
    s = np.zeros((3, 3))
    s[0, 0] = 1.0  # rank 1 each: tr((S S)^(1/2)) = 1, so FD = |mu1 - mu2|^2 = 3
    assert frechet_distance(np.zeros(3), s, np.ones(3), s) == pytest.approx(3.0, abs=1e-5)
    rng = np.random.default_rng(5)
    for r1, r2 in ((2, 3), (1, 4), (3, 3)):  # rank-deficient, non-commuting covariances in 6 dimensions
        a, b = rng.normal(size=(6, r1)), rng.normal(size=(6, r2))
        s1, s2 = a @ a.T, b @ b.T
        mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
        expected = _frechet_by_eigenvalues(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-4 * np.trace(s1 + s2))
    # features with fewer images than dimensions: the usual singular case
    x, y = rng.normal(size=(5, 8)), rng.normal(size=(4, 8)) + 0.5
    (m1, c1), (m2, c2) = feature_statistics(x), feature_statistics(y)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(_frechet_by_eigenvalues(m1, c1, m2, c2), abs=1e-4)


def test_frechet_mismatched() -> None:
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


def test_kid_report_says_when_a_subset_is_a_whole_set() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(50, 3))
    rep = kid_report(a, b, subsets=5, subset_size=1000, generator=0)
    assert rep["subset_size"] == 50 and rep["subset_size_requested"] == 1000
    assert "all 50 reference images" in rep["warning"] and "understates" in rep["warning"]
    assert (rep["mean"], rep["std"]) == kid(a, b, subsets=5, subset_size=1000, generator=0)
    both = kid_report(a[:50], b, subsets=5, subset_size=50, generator=0)["warning"]
    assert "all 50 samples and all 50 reference images" in both
    ok = kid_report(a, b, subsets=5, subset_size=20, generator=0)
    assert ok["warning"] is None and ok["subset_size"] == 20


def _brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int, rank_offset: int = 0) -> tuple[float, float]:
    """Kynkaanniemi et al.'s precision and recall in float64; radius = (k + rank_offset)-th nearest other point."""
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        np.fill_diagonal(d, np.inf)  # the point itself is not one of its neighbours
        return np.sort(d, axis=1)[:, k + rank_offset - 1]

    def covered(points: np.ndarray, centres: np.ndarray) -> float:
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return float((d <= radii(centres)[None]).any(axis=1).mean())

    return covered(fake, real), covered(real, fake)


def test_precision_recall_on_a_hand_counted_line() -> None:
    """1-D real points 0, 1, 3, 6, 10: radii to the 2nd nearest other point are 3, 2, 3, 4, 7. Of the fakes
    -3.5, 4.5, 15, 17.5, 20 only 4.5 (ball of 3) and 15 (ball of 10) are inside: precision 0.4. With the 1st
    (or with the point itself counted) it would be 0.2, with the 3rd 0.8. Every real point is inside the
    fake ball of -3.5 (radius 18.5): recall 1."""
    real = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    fake = np.array([[-3.5], [4.5], [15.0], [17.5], [20.0]])
    assert precision_recall(real, fake, k=2) == (0.4, 1.0)
    assert _brute_force_pr(real, fake, 2) == (0.4, 1.0)
    assert _brute_force_pr(real, fake, 2, -1)[0] == 0.2 and _brute_force_pr(real, fake, 2, +1)[0] == 0.8


@pytest.mark.parametrize("k", [2, 3, 5])
def test_precision_recall_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(k)
    real, fake = rng.normal(size=(60, 4)), 1.3 * rng.normal(size=(45, 4)) + 0.4
    expected = _brute_force_pr(real, fake, k)
    assert precision_recall(real, fake, k=k, chunk_size=16) == pytest.approx(expected, abs=1e-12)
    for off in (-1, 1):  # the data tell the k-th radius from its neighbours' on both sides
        assert _brute_force_pr(real, fake, k, off) != expected


def test_precision_recall() -> None:
    """Extreme cases: identical sets, disjoint sets, fakes collapsed onto part of the real set, points on a ball's
    boundary, each against the brute-force reference (Kynkaanniemi et al. 2019, eqs. 1-2) and its known value."""
    rng = np.random.default_rng(7)
    real = rng.normal(size=(50, 3))
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0) == _brute_force_pr(real, real, 3)
    far = rng.normal(size=(40, 3)) + 100.0  # disjoint: no ball of either set reaches the other
    assert precision_recall(real, far, k=3) == (0.0, 0.0) == _brute_force_pr(real, far, 3)
    # mode collapse: every fake sits near one of 5 real points, so precision is 1 and recall is small; the
    # fakes' balls (radius: distance to their 3rd nearest fellow fake, all near the same real point) are tiny
    fake = np.repeat(real[:5], 8, axis=0) + 1e-3 * rng.normal(size=(40, 3))
    precision, recall = precision_recall(real, fake, k=3)
    assert (precision, recall) == pytest.approx(_brute_force_pr(real, fake, 3), abs=1e-12)
    assert precision == 1.0 and recall == pytest.approx(5 / 50)
    # a point on a ball's boundary is inside: real 0..4 with k = 1 have radius 1, so fakes -1 and 5 count
    line, on_edge = np.arange(5.0)[:, None], np.array([[5.0], [-1.0], [2.5], [7.0]])
    assert precision_recall(line, on_edge, k=1) == (0.75, 1.0) == _brute_force_pr(line, on_edge, 1)
    # swapping the roles swaps the two numbers
    assert precision_recall(fake, real, k=3) == pytest.approx((recall, precision), abs=1e-12)


def test_precision_recall_needs_more_than_k_images_per_set() -> None:
    """Each point's radius is its distance to its k-th nearest OTHER point, so a set needs k + 1 points."""
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(20, 2)), rng.normal(size=(4, 2))
    with pytest.raises(DiffmemError, match=r"k=4 needs more than 4 images per set, got 20 real and 4 generated"):
        precision_recall(real, fake, k=4)
    with pytest.raises(DiffmemError, match=r"needs more than 4 images per set, got 4 real and 20 generated"):
        precision_recall(fake, real, k=4)
    assert precision_recall(real, fake, k=3) == pytest.approx(_brute_force_pr(real, fake, 3), abs=1e-12)
