"""Gaussian subpopulations under noise (Lemmas 4.5, A.5, A.6) and Feldman's heavy-tailed frequencies (Thm 4.3).

Two components `N(mu_1, s0^2 I)` and `N(mu_2, s0^2 I)` seen at noise s are `N(mu_k, (s0^2 + s^2) I)`; with
`Delta = |mu_1 - mu_2|` their total variation is exactly (project on mu_2 - mu_1; equal covariances)

    TV(s) = 2 Phi(Delta / (2 sqrt(s0^2 + s^2))) - 1 = erf(Delta / (2 sqrt(2 (s0^2 + s^2)))),

strictly decreasing in s. Since `f(a) = 2 Phi(a) - 1` is concave on a >= 0 with f(0) = 0 and f'(0) = sqrt(2/pi):

- (Lemma A.5, low noise stays separated) `TV(s) >= TV(0) s0 / sqrt(s0^2 + s^2)`, so `TV(s) >= TV(0) / 2`
  for `s <= sqrt(3) s0`.
- (Lemma A.6, high noise merges) `TV(s) <= Delta / sqrt(2 pi (s0^2 + s^2))`, so `TV(s) <= eps` once
  `s >= sqrt(Delta^2 / (2 pi eps^2) - s0^2)` (noise of order Delta / eps).

Here "separated" means TV >= TV(0)/2 and "eps-merged" means TV <= eps. Two thresholds named "merged" appear in
`diffmem theory mixtures`: the TV panel's `eps` (default 0.1, Lemma A.6's eps-merged), and the subpopulation
simulation's `merge_tv` (default 0.5), the TV at or below which two subpopulations are joined into one.

In the simulation, `tau1` (Feldman's coefficient of Theorem 4.3 / A.1) does not fall with the noise: with the
default settings it rises from about 5.7e-4 to 8.7e-4 while components merge. What falls is the number of
singletons, and with it `singleton_mass = tau1 x expected singletons`. Once one component remains no
subpopulation can be a singleton and tau1 is 0/0: it is reported as None (undefined), not 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf, erfinv

__all__ = [
    "feldman_frequencies",
    "gaussian_tv",
    "merge_noise_bound",
    "merge_subpopulations",
    "mixtures_report",
    "noise_for_tv",
    "separated_noise_bound",
    "simulate_subpopulations",
    "singleton_statistics",
    "tv_lower_bound",
    "tv_upper_bound",
]


def _arr(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def gaussian_tv(delta: Any, sigma: Any, sigma0: float = 1.0) -> np.ndarray:
    """Exact TV between N(mu_1, (s0^2 + s^2) I) and N(mu_2, same) with |mu_1 - mu_2| = delta (module docstring)."""
    var = sigma0**2 + _arr(sigma) ** 2
    return erf(_arr(delta) / (2.0 * np.sqrt(2.0 * var)))


def tv_lower_bound(delta: Any, sigma: Any, sigma0: float = 1.0) -> np.ndarray:
    """Lemma A.5's bound `TV(0) s0 / sqrt(s0^2 + s^2)` (concavity of 2 Phi - 1); needs sigma0 > 0."""
    return gaussian_tv(delta, 0.0, sigma0) * sigma0 / np.sqrt(sigma0**2 + _arr(sigma) ** 2)


def tv_upper_bound(delta: Any, sigma: Any, sigma0: float = 1.0) -> np.ndarray:
    """Lemma A.6's bound `Delta / sqrt(2 pi (s0^2 + s^2))` (capped at 1)."""
    return np.minimum(1.0, _arr(delta) / np.sqrt(2.0 * math.pi * (sigma0**2 + _arr(sigma) ** 2)))


def noise_for_tv(delta: float, tv: float, sigma0: float = 1.0) -> float:
    """The noise level s at which TV(s) = tv exactly (0 if TV(0) <= tv already)."""
    if not 0 < tv < 1:
        raise ValueError(f"tv must be in (0, 1), got {tv}")
    a = math.sqrt(2.0) * float(erfinv(tv))  # 2 Phi(a) - 1 = tv
    s2 = (delta / (2.0 * a)) ** 2 - sigma0**2
    return math.sqrt(s2) if s2 > 0 else 0.0


def separated_noise_bound(sigma0: float = 1.0) -> float:
    """Lemma A.5: for every s <= sqrt(3) s0 the pair keeps TV(s) >= TV(0)/2, whatever Delta is."""
    return math.sqrt(3.0) * sigma0


def merge_noise_bound(delta: float, eps: float, sigma0: float = 1.0) -> float:
    """Lemma A.6: for every s >= this the pair is eps-merged (TV(s) <= eps); from the upper bound above."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    s2 = delta**2 / (2.0 * math.pi * eps**2) - sigma0**2
    return math.sqrt(s2) if s2 > 0 else 0.0


# ----------------------------------------------------------------------------------------------------
# Feldman's subpopulation model under noise


def feldman_frequencies(num_components: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Mixing weights by Feldman's procedure (Section 4.2.1): the list psi_k = k^-alpha (k = 1..K); each component
    picks an element of the list independently and uniformly at random; normalize. Returns [K], sums to 1."""
    if num_components < 1 or not alpha > 0:
        raise ValueError(f"need num_components >= 1 and alpha > 0, got {num_components}, {alpha}")
    psi = np.arange(1, num_components + 1, dtype=np.float64) ** (-alpha)
    picked = psi[rng.integers(0, num_components, size=num_components)]
    return picked / picked.sum()


def singleton_statistics(freqs: np.ndarray, counts: np.ndarray, n: int) -> dict[str, Any]:
    """Memorization pressure of a list of subpopulation frequencies for a training set of size n (Feldman 2020).

    singletons: components seen exactly once in the drawn training set (`counts`). expected_singletons:
    `sum_k n pi_k (1 - pi_k)^(n-1)`. tau1: Feldman's coefficient `sum pi^2 (1-pi)^(n-1) / sum pi (1-pi)^(n-1)`
    (the expected weight of a subpopulation given it was seen once; Theorem 4.3 / A.1 charge `tau1` per
    unfitted singleton); None when no subpopulation can be seen exactly once (the denominator is 0, e.g. one
    component of frequency 1), where the ratio is 0/0. singleton_mass: `tau1 * expected_singletons =
    n sum pi^2 (1-pi)^(n-1)`, the population mass whose loss is paid for not fitting (memorizing) the singletons.
    """
    pi = np.asarray(freqs, dtype=np.float64)
    tail = np.power(np.clip(1.0 - pi, 0.0, 1.0), n - 1)  # (1 - pi)^(n-1); 0^0 = 1
    den = float(np.sum(pi * tail))
    num = float(np.sum(pi * pi * tail))
    return {
        "components": int(pi.size),
        "singletons": int(np.sum(np.asarray(counts) == 1)),
        "expected_singletons": n * den,
        "tau1": num / den if den > 0 else None,
        "singleton_mass": n * num,
    }


def merge_subpopulations(
    means: np.ndarray,  # [K, dim] subpopulation means
    freqs: np.ndarray,  # [K] frequencies
    counts: np.ndarray,  # [K] training points drawn from each
    sigma: float,  # noise level
    sigma0: float,  # std of every subpopulation
    merge_tv: float,  # join two subpopulations when their TV at noise sigma is <= this
    dist: np.ndarray | None = None,  # [K, K] distances between the means, if already computed
) -> tuple[np.ndarray, np.ndarray]:
    """Merged (frequencies, counts) at noise `sigma`: single linkage over pairs with TV(sigma) <= `merge_tv`.

    TV(sigma) <= merge_tv  <=>  |mu_k - mu_l| <= 2 a sqrt(sigma0^2 + sigma^2) with 2 Phi(a) - 1 = merge_tv.
    Connected components of that graph are the merged subpopulations; frequencies and counts add up.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial.distance import pdist, squareform

    if not 0 < merge_tv < 1:
        raise ValueError(f"merge_tv must be in (0, 1), got {merge_tv}")
    a = math.sqrt(2.0) * float(erfinv(merge_tv))
    if dist is None:
        dist = squareform(pdist(np.asarray(means, dtype=np.float64)))
    adj = dist <= 2.0 * a * math.sqrt(sigma0**2 + sigma**2)
    n_comp, label = connected_components(csr_matrix(adj), directed=False)
    merged_pi = np.bincount(label, weights=freqs, minlength=n_comp)
    merged_counts = np.bincount(label, weights=counts, minlength=n_comp).round().astype(np.int64)
    return merged_pi, merged_counts


def simulate_subpopulations(
    sigmas: list[float],
    rng: np.random.Generator,
    num_components: int = 1000,
    num_train: int = 1000,
    dim: int = 2,
    sigma0: float = 0.005,
    spread: float = 1.0,
    alpha: float = 1.0,
    merge_tv: float = 0.5,
) -> dict[str, Any]:
    """Feldman's heavy-tailed subpopulations as Gaussians, merged as the noise grows (Lemmas 4.5, A.6, Thm 4.3).

    K components `N(mu_k, sigma0^2 I_dim)` with `mu_k ~ N(0, spread^2 I_dim)` and Feldman frequencies (Zipf list,
    exponent `alpha`); a training set of `num_train` points is drawn (component counts ~ Multinomial). At noise s,
    components whose pairwise TV(s) <= merge_tv are merged (`merge_subpopulations`: connected components of that
    graph, i.e. single linkage); merged frequencies and counts add up. For every s this reports
    `singleton_statistics` of the merged list: at low noise the heavy tail leaves many singletons (memorization is
    needed), at high noise they vanish. `merge_tv` (default 0.5) is not the TV panel's eps of `mixtures_report`.
    """
    from scipy.spatial.distance import pdist, squareform

    if not 0 < merge_tv < 1:
        raise ValueError(f"merge_tv must be in (0, 1), got {merge_tv}")
    pi = feldman_frequencies(num_components, alpha, rng)
    mu = spread * rng.standard_normal((num_components, dim))
    counts = rng.multinomial(num_train, pi)
    dist = squareform(pdist(mu))  # [K, K] distances between means
    rows = []
    for s in sigmas:
        merged_pi, merged_counts = merge_subpopulations(mu, pi, counts, float(s), sigma0, merge_tv, dist)
        row = singleton_statistics(merged_pi, merged_counts, num_train)
        row["sigma"] = float(s)
        row["max_frequency"] = float(merged_pi.max())
        rows.append(row)
    return {
        "params": {
            "num_components": num_components, "num_train": num_train, "dim": dim, "sigma0": sigma0,
            "spread": spread, "alpha": alpha, "merge_tv": merge_tv,
        },
        "median_nn_mean_distance": float(np.median(np.where(np.eye(num_components, dtype=bool), np.inf, dist).min(1))),
        "rows": rows,
    }


def mixtures_report(
    deltas: list[float],
    sigma0: float,
    eps: float,
    sigmas: list[float],
    sim_sigmas: list[float],
    rng: np.random.Generator,
    num_components: int = 1000,
    num_train: int = 1000,
    dim: int = 2,
    cluster_std: float = 0.005,
    spread: float = 1.0,
    alpha: float = 1.0,
    merge_tv: float = 0.5,
) -> dict[str, Any]:
    """TV curves with the Lemma A.5/A.6 regime bounds for each separation `deltas` (components of std `sigma0`),
    plus `simulate_subpopulations` at `sim_sigmas` (components of std `cluster_std`, means of std `spread`).
    JSON-ready: `{"tv": {...}, "subpopulations": {...}}`."""
    tv_rows = []
    for delta in deltas:
        tv_rows.append({
            "delta": float(delta),
            "tv": [float(v) for v in gaussian_tv(delta, np.asarray(sigmas), sigma0)],
            "tv_at_0": float(gaussian_tv(delta, 0.0, sigma0)),
            "separated_below": separated_noise_bound(sigma0),
            "merged_above_bound": merge_noise_bound(delta, eps, sigma0),
            "merged_above_exact": noise_for_tv(delta, eps, sigma0),
            "half_tv0_exact": noise_for_tv(delta, 0.5 * float(gaussian_tv(delta, 0.0, sigma0)), sigma0),
        })
    return {
        "tv": {"sigma0": sigma0, "eps": eps, "sigmas": [float(s) for s in sigmas], "deltas": [float(d) for d in deltas],
               "rows": tv_rows},
        "subpopulations": simulate_subpopulations(
            sim_sigmas, rng, num_components=num_components, num_train=num_train, dim=dim, sigma0=cluster_std,
            spread=spread, alpha=alpha, merge_tv=merge_tv,
        ),
    }
