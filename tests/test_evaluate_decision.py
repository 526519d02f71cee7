"""Decision levels along sampling trajectories: the suffix rule by hand, and the exact denoiser's copies."""

from __future__ import annotations

import numpy as np
import torch

from diffmem.data.datasets import to_model_range
from diffmem.diffusion.samplers import karras_sigmas
from diffmem.evaluate.decision import Trajectory, decision_summary, identity_trajectory
from diffmem.theory.denoisers import empirical_denoiser


def test_decision_level_is_the_start_of_the_final_suffix() -> None:
    sig = np.array([8.0, 4.0, 2.0, 1.0])
    idx = np.array([[0, 5, 1, 2],
                    [3, 5, 1, 9],
                    [3, 6, 1, 9],
                    [3, 5, 1, 9]])  # [S, B]
    traj = Trajectory(sig, idx, np.zeros_like(idx, float), np.array([3, 5, 1, 2]), np.array([1.0, 0.5, 1.0, 0.2]))
    # sample 0 settles at 4; sample 1 wanders back (settles at 1); 2 is fixed from the start; 3 never ends on 2
    assert traj.decision_levels().tolist() == [4.0, 1.0, 8.0, 0.0]
    summary = decision_summary(traj, copy_threshold=0.9, sigma_n=2.0)
    assert summary["copies"] == 0.5 and summary["median_level_copies"] == 6.0
    assert summary["copies_decided_above_sigma_n"] == 1.0 and summary["all_decided_above_sigma_n"] == 0.5


def test_exact_denoiser_copies_and_decides_at_moderate_noise() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    points = to_model_range(train).to(torch.float64)
    x0 = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    traj = identity_trajectory(empirical_denoiser(points), x0, karras_sigmas(24), train)
    assert traj.nn_index.shape == (24, 32) and np.all(np.diff(traj.sigmas) < 0)
    assert np.all(traj.final_similarity > 0.999)  # the exact optimum replays training images
    assert np.array_equal(traj.nn_index[-1], traj.final_index)
    levels = traj.decision_levels()
    # at sigma 80 D is (nearly) the training mean, so identity is not yet decided for most samples;
    # the images are ~8 apart (random pixels in [-1, 1], 64 dims), so it is decided by sigma ~1
    assert np.mean(levels >= traj.sigmas[0]) < 0.5
    assert np.all(levels >= 1.0)
