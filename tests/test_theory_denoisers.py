"""Closed-form optimal denoisers and the exact samplers they drive (the paper's Section 2.2, Lemma 4.1)."""

from __future__ import annotations

import math

import pytest
import torch

from scipy.stats import chisquare

from diffmem.data.corruption import draw_noisy_copies
from diffmem.diffusion.samplers import karras_sigmas, per_sample_noise, sample_heun
from diffmem.theory.closed_form import closed_form_check, landing_numbers
from diffmem.theory.denoisers import (
    algorithm1_sample,
    ambient_denoiser,
    ambient_sample,
    baseline_sample,
    empirical_denoiser,
    empirical_posterior,
)
from diffmem.theory.distances import median_nn_distance, nearest

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
    # E[y|x_s] = (sigma_n^2/s^2) x_s + ((s^2 - sigma_n^2)/s^2) E[x0|x_s]   (behind the paper's Eq. (6))
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
    assert numbers["algorithm1"]["fraction_on_some_training_image"] == 1.0  # total memorization of the optimum
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


# Lemma 4.1 beyond its last step: at tau -> 0 the softmax is one-hot, so any sampler ends on *a* copy. These
# tests check what the last step does not force: which copies are hit, and the path that leads there.

_COPIES_2D = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-2.0, -2.0]]).reshape(4, 1, 1, 2)


@pytest.mark.parametrize("sigma_n", [0.5, 2.0])
def test_ambient_sampler_hits_every_copy_equally_often(sigma_n: float) -> None:
    # The exact ODE carries the (near-Gaussian) law at sigma_max onto the empirical law of the copies: 1/4 each.
    z = torch.randn((2000, 1, 1, 2), generator=torch.Generator().manual_seed(0))
    x = ambient_sample(_COPIES_2D, sigma_n, z, num_steps=32)
    dist, idx = nearest(x, _COPIES_2D)
    hits = torch.bincount(idx, minlength=4).double()
    assert chisquare(hits.numpy()).pvalue > 0.01, hits  # seeded: deterministic; uniform gives p = 0.53 here
    assert float(dist.max()) < 1e-6


def test_ambient_tau_ode_agrees_with_the_s_ode_of_the_ambient_denoiser() -> None:
    # The tau-ODE of ambient_sample is the s-ODE dx/ds = (x - E[x0|x_s]) / s with the ambient E[x0|x_s], after
    # tau = sqrt(s^2 - sigma_n^2). Integrate both from sigma_max to s = 2 sigma_n (away from the singularity at
    # sigma_n): 64 Heun steps agree to ~3e-3; a softmax at temperature s instead of tau moves them ~0.17 apart.
    train, sigma_n, s_stop, steps = _train(), 0.5, 1.0, 64
    copies = draw_noisy_copies(train, sigma_n, seed=0)
    z = per_sample_noise(0, list(range(8)), SHAPE, 1)[0]
    x_tau = ambient_sample(copies, sigma_n, z, num_steps=steps, s_stop=s_stop)
    x_s = sample_heun(ambient_denoiser(copies, sigma_n), z, karras_sigmas(steps, s_stop, 80.0)[:-1])
    gap = (x_tau.double() - x_s.double()).flatten(1).norm(dim=1)
    assert float(gap.max()) < 0.02, gap
    with pytest.raises(ValueError):
        ambient_sample(copies, sigma_n, z, s_stop=sigma_n)


def test_landing_numbers_counted_by_hand() -> None:
    train = torch.tensor([[0.0], [10.0], [20.0]])
    copies = torch.tensor([[9.0], [1.0], [21.0]])  # copy 0 lies near image 1, copy 1 near image 0
    amb = torch.tensor([[9.0], [1.0], [21.0], [21.0]])  # nearest copies 0, 1, 2, 2
    alg1 = torch.tensor([[10.0], [0.0], [20.0], [0.5]])  # nearest images 1, 0, 2, 0 (the last 0.5 away)
    base = torch.tensor([[10.0], [0.0], [20.0], [20.0]])  # nearest images 1, 0, 2, 2
    numbers, idx = landing_numbers(train, copies, base, amb, alg1)
    assert idx["i_copy"].tolist() == [0, 1, 2, 2] and idx["i_alg1"].tolist() == [1, 0, 2, 0]
    g = numbers["algorithm1"]
    assert g["fraction_on_source_of_copy"] == 0.25  # only sample 2 ends on the source of its copy
    assert g["fraction_on_some_training_image"] == 0.75  # sample 3 is 0.5 from the nearest image
    assert numbers["distinct_train_points_hit"] == 3


def test_algorithm1_lands_on_the_neighbour_of_a_swapped_copy() -> None:
    # Each copy sits next to the *other* image: the exact optimum passes y_j, then ends on the image next to it,
    # never on y_j's source. The baseline run from the same latents ends where Algorithm 1 does.
    train = torch.tensor([[-1.0, 0.0], [1.0, 0.0]]).reshape(2, 1, 1, 2)
    copies = torch.tensor([[1.0, 0.1], [-1.0, -0.1]]).reshape(2, 1, 1, 2)
    numbers, images = closed_form_check(train, 0.5, num_samples=8, seed=0, num_steps=24, copies=copies)
    g = numbers["algorithm1"]
    assert g["fraction_on_some_training_image"] == 1.0 and g["fraction_on_source_of_copy"] == 0.0
    assert numbers["copies_seed"] is None
    # ... so comparing with the baseline's index would say 1.0
    assert torch.equal(nearest(images["algorithm1"], train)[1], nearest(images["baseline"], train)[1])
