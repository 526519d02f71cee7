"""Closed-form optimal denoisers and the exact samplers they drive (DESIGN.md section 4, Lemma 4.1)."""

from __future__ import annotations

import math

import pytest
import torch

from diffmem.data.corruption import draw_noisy_copies
from diffmem.diffusion.samplers import per_sample_noise
from diffmem.theory.closed_form import closed_form_check
from diffmem.theory.denoisers import (
    algorithm1_sample,
    ambient_denoiser,
    ambient_sample,
    baseline_sample,
    empirical_denoiser,
    empirical_posterior,
)
from diffmem.theory.neighbors import median_nn_distance, nearest

SHAPE = (1, 4, 4)  # d = 16


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=1e-7, atol=1e-9), (a, b)


def _train(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)) * 2 - 1  # [N, 1, 4, 4]


def test_posterior_matches_direct_softmax_with_chunking() -> None:
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(10, 3, generator=g, dtype=torch.float64)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    sigma = torch.linspace(0.3, 2.0, 7, dtype=torch.float64)
    logits = -((x[:, None] - pts[None]) ** 2).sum(-1) / (2 * sigma[:, None] ** 2)
    w = torch.softmax(logits, dim=1)
    for chunk in (None, 3, 1):
        post = empirical_posterior(x, pts, sigma, chunk=chunk)
        _close(post.mean, w @ pts)
        _close(post.max_weight, w.max(1).values)
        _close(post.eff_count, 1 / (w**2).sum(1))
        _close(post.log_norm, torch.logsumexp(logits, 1))
        assert torch.equal(post.argmax, w.argmax(1))
    assert empirical_posterior(x, pts, sigma, with_mean=False).mean.shape == (7, 0)


def test_posterior_is_stable_at_tiny_and_huge_noise() -> None:
    pts = _train(5).double()
    tiny = empirical_posterior(pts + 1e-6, pts, 1e-5)  # logits ~ -1e9 apart: one-hot, no NaN
    _close(tiny.mean.reshape(pts.shape), pts)
    assert torch.all(tiny.max_weight == 1) and torch.equal(tiny.argmax, torch.arange(5))
    huge = empirical_posterior(pts, pts, 1e6)  # all weights equal
    _close(huge.eff_count, torch.full((5,), 5.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        empirical_posterior(pts, pts, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_baseline_optimum_sampler_replays_training_points(seed: int) -> None:
    train = _train()
    z = per_sample_noise(seed, list(range(6)), SHAPE, 1)[0]
    x = baseline_sample(train, z, num_steps=16)
    dist, _ = nearest(x, train)
    assert float(dist.max()) < 1e-3  # every sample is a training point (total memorization)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ambient_optimum_sampler_ends_on_noisy_copies(seed: int) -> None:
    train, sigma_n = _train(), 0.5
    copies = draw_noisy_copies(train, sigma_n, seed=seed)
    z = per_sample_noise(seed, list(range(6)), SHAPE, 1)[0]
    x = ambient_sample(copies, sigma_n, z, num_steps=16)
    d_copy, _ = nearest(x, copies)
    d_clean, _ = nearest(x, train)
    assert float(d_copy.max()) < 1e-3  # Lemma 4.1: the samples at sigma_n are the y_i
    assert float(d_clean.min()) > 0.25 * sigma_n * math.sqrt(16)  # ... not the clean images


def test_ambient_denoiser_satisfies_the_noisy_copy_identity() -> None:
    train, sigma_n = _train(), 0.5
    copies = draw_noisy_copies(train, sigma_n, seed=0)
    x = torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = torch.tensor([0.6, 1.0, 3.0, 20.0], dtype=torch.float64)
    x0 = ambient_denoiser(copies, sigma_n)(x, s)
    tau = (s**2 - sigma_n**2).sqrt()
    ey = empirical_denoiser(copies)(x, tau)
    c = (s**2).reshape(-1, 1, 1, 1)
    # E[y|x_s] = (sigma_n^2/s^2) x_s + ((s^2 - sigma_n^2)/s^2) E[x0|x_s]   (DESIGN.md section 1)
    _close(ey, sigma_n**2 / c * x + (c - sigma_n**2) / c * x0)
    with pytest.raises(ValueError):
        ambient_denoiser(copies, sigma_n)(x, torch.full((4,), sigma_n, dtype=torch.float64))


def test_algorithm1_optimum_ends_on_training_points_via_the_copies() -> None:
    train, sigma_n = _train(), 0.05  # copies close to their sources: each trajectory returns to its source
    copies = draw_noisy_copies(train, sigma_n, seed=0)
    z = per_sample_noise(0, list(range(6)), SHAPE, 1)[0]
    x_n, x0 = algorithm1_sample(train, copies, sigma_n, z, num_steps=16)
    d_copy, i_copy = nearest(x_n, copies)
    d0, i0 = nearest(x0, train)
    assert float(d_copy.max()) < 1e-3 and float(d0.max()) < 1e-3
    assert torch.equal(i0, i_copy)


def test_closed_form_check_reports_the_lemma() -> None:
    numbers, images = closed_form_check(_train(), 0.5, num_samples=4, seed=0, num_steps=12)
    assert numbers["baseline"]["distance_to_nearest_train"]["fraction_within_tol"] == 1.0
    assert numbers["ambient_at_sigma_n"]["distance_to_nearest_copy"]["fraction_within_tol"] == 1.0
    assert numbers["ambient_at_sigma_n"]["distance_to_nearest_train"]["fraction_within_tol"] == 0.0
    assert numbers["copy_noise_norm"] == pytest.approx(0.5 * 4)
    assert images["baseline"].shape == (4, *SHAPE) and images["ambient_source"].shape == (4, *SHAPE)


def test_nearest_neighbours() -> None:
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    dist, idx = nearest(pts, pts, exclude_self=True)
    assert idx.tolist() == [2, 2, 0]
    _close(dist, torch.tensor([1.0, math.sqrt(18), 1.0], dtype=torch.float64))
    assert median_nn_distance(pts) == pytest.approx(1.0)


def test_posterior_blocks_of_queries_match(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffmem.theory import denoisers

    pts = _train(6).double()
    x = torch.randn((11, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigma = torch.linspace(0.2, 3.0, 11, dtype=torch.float64)
    whole = empirical_posterior(x, pts, sigma)
    monkeypatch.setattr(denoisers, "_QUERY_BLOCK", 4)
    parts = empirical_posterior(x, pts, sigma)
    for f in ("mean", "max_weight", "eff_count", "log_norm"):
        _close(getattr(parts, f), getattr(whole, f))
    assert torch.equal(parts.argmax, whole.argmax)
