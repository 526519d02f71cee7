"""The closed-form check (docs/method.md, "Theory commands"): the baseline optimum replays training points
(Shah et al. 2025, Sec. 2.2), the ambient optimum lands on the noisy copies at sigma_n (Lemma 4.1), and
Algorithm 1's full optimum, continued below sigma_n with the clean optimum, lands on training points again: always on *some* training
image, and on the clean source of the copy it passed for a share that is measured here."""

from __future__ import annotations

import math
from typing import Any

import torch

from diffmem.data.corruption import draw_noisy_copies
from diffmem.diffusion.samplers import per_sample_noise
from diffmem.theory.denoisers import algorithm1_sample, baseline_sample
from diffmem.theory.distances import median_nn_distance, nearest

__all__ = ["ON_POINT_TOL", "closed_form_check", "landing_numbers"]

ON_POINT_TOL = 1e-3  # a sample "is" a point when their Euclidean distance is below this


def _stats(dist: torch.Tensor) -> dict[str, Any]:
    return {
        "per_sample": [float(v) for v in dist],
        "max": float(dist.max()),
        "median": float(dist.median()),
        "fraction_within_tol": float((dist < ON_POINT_TOL).double().mean()),
    }


def landing_numbers(
    train: torch.Tensor,  # [N, ...] training images x_i
    copies: torch.Tensor,  # [N, ...] their noisy copies y_i (copy i belongs to image i)
    base: torch.Tensor,  # [B, ...] baseline-optimum samples
    amb: torch.Tensor,  # [B, ...] ambient-optimum states at s = sigma_n
    alg1: torch.Tensor,  # [B, ...] Algorithm 1's final samples (the continuation of `amb`)
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Where the samples land: distances to the nearest training image / copy, and the indices behind them.

    `fraction_on_some_training_image`: share of Algorithm 1's samples within `ON_POINT_TOL` of a training image.
    `fraction_on_source_of_copy`: share whose nearest training image is the source x_i of the copy y_i nearest to
    the same sample's state at sigma_n. Returns (numbers, {"i_base", "i_copy", "i_alg1"}).
    """
    d_base, i_base = nearest(base, train)
    d_copy, i_copy = nearest(amb, copies)
    d_amb_clean, _ = nearest(amb, train)
    d_alg1, i_alg1 = nearest(alg1, train)
    numbers = {
        "baseline": {"distance_to_nearest_train": _stats(d_base)},
        "ambient_at_sigma_n": {
            "distance_to_nearest_copy": _stats(d_copy),
            "distance_to_nearest_train": _stats(d_amb_clean),
        },
        "algorithm1": {
            "distance_to_nearest_train": _stats(d_alg1),
            "fraction_on_some_training_image": float((d_alg1 < ON_POINT_TOL).double().mean()),
            "fraction_on_source_of_copy": float((i_alg1 == i_copy).double().mean()),
        },
        "distinct_train_points_hit": int(torch.unique(i_base).numel()),
    }
    return numbers, {"i_base": i_base, "i_copy": i_copy, "i_alg1": i_alg1}


def closed_form_check(
    train: torch.Tensor,  # [N, C, H, W] training images in [-1, 1]
    sigma_n: float,
    num_samples: int,
    seed: int,
    copies_seed: int = 0,
    num_steps: int = 32,
    sigma_max: float = 80.0,
    copies: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Sample the exact optima and measure where the samples land. Returns (JSON-ready numbers, images).

    Latents come from `per_sample_noise(seed, range(num_samples), ...)` (sample i depends only on (seed, i)); the
    copies `y_i = x_i + sigma_n z_i` from `draw_noisy_copies(train, sigma_n, copies_seed)`, as a training run draws
    them (or `copies`, if given). Numbers (`landing_numbers`): Euclidean distances (pixel units of [-1, 1]) of
    baseline samples to the nearest training image; of ambient samples at sigma_n to the nearest copy and to the
    nearest clean image; of Algorithm 1's final samples to the nearest training image, the share on some training
    image, and the share that end on the clean source of the copy they passed.
    Images: `baseline`, `baseline_nearest`, `ambient`, `ambient_nearest_copy`, `ambient_source`, `algorithm1`.
    """
    if num_samples < 1 or num_steps < 1:
        raise ValueError(f"need num_samples >= 1 and num_steps >= 1, got {num_samples}, {num_steps}")
    if not 0 < sigma_n < sigma_max:
        raise ValueError(f"need 0 < sigma_n < sigma_max, got {sigma_n}, {sigma_max}")
    train = train.to(torch.float32)
    shape = tuple(train.shape[1:])
    given = copies
    if copies is None:
        copies = draw_noisy_copies(train, sigma_n, copies_seed)  # [N, ...]
    elif copies.shape != train.shape:
        raise ValueError(f"copies {tuple(copies.shape)} must have the training set's shape {tuple(train.shape)}")
    z = per_sample_noise(seed, list(range(num_samples)), shape, 1)[0]  # [B, ...]

    base = baseline_sample(train, z, num_steps, sigma_max=sigma_max)
    amb, alg1 = algorithm1_sample(train, copies, sigma_n, z, num_steps, sigma_max=sigma_max)
    landed, idx = landing_numbers(train, copies, base, amb, alg1)
    numbers = {
        "n_train": int(train.shape[0]),
        "dim": math.prod(shape),
        "sigma_n": sigma_n,
        "num_samples": num_samples,
        "num_steps": num_steps,
        "sigma_max": sigma_max,
        "seed": seed,
        "copies_seed": copies_seed if given is None else None,  # None: the caller gave the copies
        "tolerance": ON_POINT_TOL,
        "median_nn_distance": median_nn_distance(train),
        "copy_noise_norm": sigma_n * math.sqrt(math.prod(shape)),
        **landed,
    }
    images = {
        "baseline": base,
        "baseline_nearest": train[idx["i_base"]],
        "ambient": amb,
        "ambient_nearest_copy": copies[idx["i_copy"]],
        "ambient_source": train[idx["i_copy"]],
        "algorithm1": alg1,
    }
    return numbers, images
