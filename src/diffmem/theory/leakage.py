"""Information leakage of the optimal baseline and ambient solutions (Lemma 4.2, Appendix C.1.2 and C.1.3).

Model (all formulas below are exact for it; information in nats):

- Training points `x_1..x_n` i.i.d. `N(mu, v I_d)`; Algorithm 1's noisy copies `y_i = x_i + sigma z_i` with
  `z_i ~ N(0, I_d)` independent; `SNR = v / sigma^2`. (Variance-preserving form `x_t = sqrt(a) x0 + sqrt(1-a) e`:
  `SNR = a v / (1 - a)`; the formulas are the same.)
- Baseline optimum at noise sigma (= t_n): its distribution at that level is the training set diffused,
  `(1/n) sum_i N(x_i, sigma^2 I)`; a generated sample is `s_j = x_{J_j} + sigma e_j`, J_j uniform, e_j fresh.
- Ambient optimum at sigma_n (Lemma 4.1): the empirical distribution of the copies; `s_j = y_{J_j}`.
- m generated samples S = (s_1..s_m), i.i.d. given the training set.

n = 1 (Lemma 4.2): `I(x; S_baseline) = (d/2) log(1 + m SNR)` (the sample mean is sufficient and
`Cov(x | S) = (1/v + m/sigma^2)^-1 I`), while `I(x; S_ambient) = I(x; y) = (d/2) log(1 + SNR)` for every m >= 1
(all m samples are the same point y).

n > 1 (Appendix C.1.3): J = (J_1..J_m) is independent of X = (x_1..x_n), so `I(X; S, J) = I(X; S | J)`; given J
everything is Gaussian and with `k_i` = number of samples drawn from point i:
`I_base(X; S | J) = E sum_i (d/2) log(1 + k_i SNR) = n E_{k ~ Bin(m, 1/n)} (d/2) log(1 + k SNR)` and
`I_amb(X; S | J) = n (1 - (1 - 1/n)^m) (d/2) log(1 + SNR)`. These are the leakages to an observer who also
knows which training point each sample came from; the true `I(X; S)` lies in `[I(X; S | J) - m log n, I(X; S | J)]`
(`I(X; S, J) = I(X; S) + I(X; J | S)` and `0 <= I(X; J | S) <= H(J) = m log n`). For the ambient optimum the data
processing inequality (X -> Y -> S) also gives `I(X; S) <= I(X; Y) = n (d/2) log(1 + SNR)` for all m, whereas the
baseline's grows without bound in m (about `n (d/2) log(1 + (m/n) SNR)`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import digamma, gammaln

__all__ = [
    "ambient_bound",
    "gaussian_mi_estimate",
    "ksg_mi_estimate",
    "leakage_ambient",
    "leakage_baseline",
    "leakage_curves",
    "leakage_report",
    "monte_carlo_leakage",
    "simulate_generated_samples",
]

METHODS = ("baseline", "ambient")


def _check(m: int, d: int, snr: float, n: int = 1) -> None:
    if isinstance(m, bool) or int(m) != m or m < 0:
        raise ValueError(f"m (number of generated samples) must be an integer >= 0, got {m!r}")
    if int(d) != d or d < 1 or int(n) != n or n < 1:
        raise ValueError(f"dimension d and training-set size n must be integers >= 1, got d={d!r}, n={n!r}")
    if not (math.isfinite(snr) and snr >= 0):
        raise ValueError(f"SNR must be finite and >= 0, got {snr!r}")


def leakage_baseline(m: int, d: int, snr: float, n: int = 1) -> float:
    """Leakage of m samples of the baseline optimum (nats): `(d/2) log(1 + m SNR)` for n = 1 (Lemma 4.2).

    For n > 1 it is `I(X; S | J) = n E_{k~Bin(m,1/n)} (d/2) log(1 + k SNR)` (Appendix C.1.3; module docstring).
    """
    _check(m, d, snr, n)
    if n == 1:
        return 0.5 * d * math.log1p(m * snr)
    k = np.arange(m + 1)
    log_pmf = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1) + k * math.log(1 / n) + (m - k) * math.log1p(-1 / n)
    return float(n * np.sum(np.exp(log_pmf) * 0.5 * d * np.log1p(k * snr)))


def leakage_ambient(m: int, d: int, snr: float, n: int = 1) -> float:
    """Leakage of m samples of the ambient optimum at sigma_n (nats): `(d/2) log(1 + SNR)` for n = 1, m >= 1.

    For n > 1 it is `I(X; S | J) = n (1 - (1 - 1/n)^m) (d/2) log(1 + SNR)` (module docstring); 0 for m = 0.
    """
    _check(m, d, snr, n)
    seen = 1.0 - (1.0 - 1.0 / n) ** m  # chance that a given training point's copy is among the samples
    return float(n * seen * 0.5 * d * math.log1p(snr))


EXACT_LEAKAGE = {"baseline": leakage_baseline, "ambient": leakage_ambient}  # the closed form of each model


def ambient_bound(d: int, snr: float, n: int = 1) -> float:
    """`I(X; Y) = n (d/2) log(1 + SNR)`: bounds the ambient leakage for every m (data processing, Lemma C.1)."""
    _check(0, d, snr, n)
    return 0.5 * n * d * math.log1p(snr)


def leakage_curves(ms: list[int], d: int, snrs: list[float], n: int = 1) -> dict[str, Any]:
    """Both exact leakages on a grid: `{"m", "snr", "baseline": [[per m] per snr], "ambient": ..., "ambient_bound"}`."""
    return {
        "m": [int(m) for m in ms],
        "snr": [float(s) for s in snrs],
        "d": int(d),
        "n": int(n),
        "baseline": [[leakage_baseline(m, d, s, n) for m in ms] for s in snrs],
        "ambient": [[leakage_ambient(m, d, s, n) for m in ms] for s in snrs],
        "ambient_bound": [ambient_bound(d, s, n) for s in snrs],
    }


# ----------------------------------------------------------------------------------------------------
# Monte Carlo


def simulate_generated_samples(
    method: str, m: int, d: int, snr: float, num_draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the n = 1 model of Lemma 4.2 `num_draws` times: (x [N, d], S [N, m, d]) with v = 1, sigma^2 = 1/SNR."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check(m, d, snr)
    if snr <= 0 or m < 1:
        raise ValueError("simulation needs SNR > 0 and m >= 1")
    sigma = 1.0 / math.sqrt(snr)
    x = rng.standard_normal((num_draws, d))  # [N, d]
    if method == "baseline":
        s = x[:, None, :] + sigma * rng.standard_normal((num_draws, m, d))  # [N, m, d], fresh noise per sample
    else:
        y = x + sigma * rng.standard_normal((num_draws, d))  # the one noisy copy
        s = np.repeat(y[:, None, :], m, axis=1)  # all m samples are y
    return x, s


def _logdet_bias(p: int, n: int) -> float:
    """E[log det S] - log det Sigma for the unbiased sample covariance S of n Gaussian draws in p dimensions.

    `(n-1) S ~ Wishart_p(n-1, Sigma)`, so the bias is `p log(2/(n-1)) + sum_{i=1}^p psi((n-i)/2)`.
    """
    return p * math.log(2.0 / (n - 1)) + float(np.sum(digamma((n - np.arange(1, p + 1)) / 2.0)))


def gaussian_mi_estimate(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9, unbiased: bool = True) -> float:
    """Gaussian mutual information `0.5 (log det C_aa + log det C_bb - log det C)` from samples a [N, p], b [N, q].

    C are empirical covariances; exact for jointly Gaussian (a, b) as N -> infinity. A degenerate b (e.g. m
    identical copies) is first reduced to its non-degenerate principal subspace (eigenvalues > rtol * largest),
    which conditions on the same information. `unbiased` subtracts the exact Wishart bias of each log-determinant
    (`_logdet_bias`), which makes the estimate unbiased for Gaussian data (the plug-in's bias is about p q / 2N).
    """
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    n = a.shape[0]
    b = b - b.mean(0)
    evals, evecs = np.linalg.eigh(np.atleast_2d(np.cov(b, rowvar=False)))
    b = b @ evecs[:, evals > rtol * evals.max()]  # [N, r]
    p, r = a.shape[1], b.shape[1]
    c = np.atleast_2d(np.cov(np.concatenate([a, b], axis=1), rowvar=False))
    mi = 0.5 * (np.linalg.slogdet(c[:p, :p])[1] + np.linalg.slogdet(c[p:, p:])[1] - np.linalg.slogdet(c)[1])
    if unbiased:
        mi -= 0.5 * (_logdet_bias(p, n) + _logdet_bias(r, n) - _logdet_bias(p + r, n))
    return float(mi)


def ksg_mi_estimate(a: np.ndarray, b: np.ndarray, k: int = 3) -> float:
    """Kraskov-Stoegbauer-Grassberger estimator (2004, algorithm 1, max-norm) of I(a; b) in nats.

    `psi(k) + psi(N) - mean(psi(n_a + 1) + psi(n_b + 1))`, with n_a, n_b the marginal neighbour counts strictly
    inside the distance to the k-th joint neighbour. Model-free; good for low dimensions (d = 1, 2).
    """
    from scipy.spatial import cKDTree

    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    n = a.shape[0]
    joint = np.concatenate([a, b], axis=1)
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, -1]  # k-th neighbour, excluding the point itself
    r = np.nextafter(eps, 0)  # strictly closer than eps
    n_a = cKDTree(a).query_ball_point(a, r, p=np.inf, return_length=True) - 1
    n_b = cKDTree(b).query_ball_point(b, r, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(n_a + 1) + digamma(n_b + 1)))


def monte_carlo_leakage(
    method: str,
    m: int,
    d: int,
    snr: float,
    num_draws: int,
    num_reps: int,
    rng: np.random.Generator,
    estimator: str = "gaussian",
) -> dict[str, float]:
    """Monte Carlo estimate of the n = 1 leakage, `{"mean", "stderr", "exact"}` over `num_reps` independent replicates.

    estimator "gaussian": `gaussian_mi_estimate` on the full (x, s_1..s_m) vectors (an empirical covariance in the
    exact Gaussian log-det formula). "ksg": `ksg_mi_estimate` between x and the sample mean of S (a sufficient
    statistic of S for x in this model, so I(x; mean S) = I(x; S)); use it for d <= 2.
    """
    if estimator not in ("gaussian", "ksg"):
        raise ValueError(f"estimator must be 'gaussian' or 'ksg', got {estimator!r}")
    if num_reps < 2 or num_draws < 10:
        raise ValueError("monte_carlo_leakage needs num_reps >= 2 and num_draws >= 10")
    vals = []
    for _ in range(num_reps):
        x, s = simulate_generated_samples(method, m, d, snr, num_draws, rng)
        if estimator == "gaussian":
            vals.append(gaussian_mi_estimate(x, s))
        else:
            vals.append(ksg_mi_estimate(x, s.mean(axis=1)))
    arr = np.asarray(vals)
    exact = EXACT_LEAKAGE[method](m, d, snr)
    return {"mean": float(arr.mean()), "stderr": float(arr.std(ddof=1) / math.sqrt(num_reps)), "exact": exact}


def leakage_report(
    m_max: int,
    d: int,
    snrs: list[float],
    n: int,
    rng: np.random.Generator,
    mc_draws: int = 4000,
    mc_reps: int = 10,
    mc_m_max: int = 32,
    estimator: str = "gaussian",
) -> dict[str, Any]:
    """Exact curves for m = 1..m_max (log-spaced) and every SNR, a curve over SNR at m = m_max, and Monte Carlo
    checks (n = 1 model only; m = 1, 2, 4, ... <= mc_m_max; `mc_reps = 0` skips them). JSON-ready."""
    if m_max < 1:
        raise ValueError(f"m_max must be >= 1, got {m_max}")
    ms = sorted({int(round(v)) for v in np.geomspace(1, m_max, min(m_max, 40))})
    snr_grid = [float(v) for v in np.geomspace(1e-2, 1e2, 41)]
    out: dict[str, Any] = {
        "model": "x_i ~ N(mu, v I_d), y_i = x_i + sigma z_i, SNR = v / sigma^2; baseline samples x_J + sigma e, "
                 "ambient samples y_J (see diffmem.theory.leakage); nats; n > 1: given the source indices J",
        "exact": leakage_curves(ms, d, snrs, n),
        "snr_grid": {
            "m": m_max,
            "snr": snr_grid,
            "baseline": [leakage_baseline(m_max, d, s, n) for s in snr_grid],
            "ambient": [leakage_ambient(m_max, d, s, n) for s in snr_grid],
        },
        "monte_carlo": [],
    }
    if n == 1 and mc_reps > 0:
        mc_ms = [2**k for k in range(0, 20) if 2**k <= min(mc_m_max, m_max)]
        for snr in snrs:
            for method in METHODS:
                for m in mc_ms:
                    r = monte_carlo_leakage(method, m, d, snr, mc_draws, mc_reps, rng, estimator)
                    out["monte_carlo"].append({"method": method, "m": m, "snr": float(snr), **r})
        out["monte_carlo_settings"] = {"draws": mc_draws, "reps": mc_reps, "estimator": estimator}
    return out
