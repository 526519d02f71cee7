"""At which noise level along the sampling trajectory is a sample's identity decided?

At every sampler step the denoiser's estimate D(x_i; sigma_i) of the clean image is compared with the
training images (pixel cosine similarity, mean-centred: the `pixels` feature space of the audit). A
sample's *decision level* is the largest sigma from which on the nearest training image of D no
longer changes, i.e. stays the one the final sample is nearest to. For Algorithm 1 this tells whether
a copy was decided above sigma_n (by the part of the network that only ever saw the noisy copies) or
below it (by the part trained on clean images), which is the mechanism the paper's argument is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from diffmem.data.datasets import to_model_range, to_uint8
from diffmem.diffusion.samplers import edm_sample
from diffmem.evaluate.neighbours import nearest_neighbours

__all__ = ["Trajectory", "identity_trajectory", "decision_summary"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Trajectory:
    """Nearest training images of the denoiser's estimates along the sampling trajectories of B samples."""

    sigmas: np.ndarray  # [S] noise level of each recorded estimate, decreasing
    nn_index: np.ndarray  # [S, B] nearest training image of D(x_i; sigma_i)
    nn_similarity: np.ndarray  # [S, B] its cosine similarity
    final_index: np.ndarray  # [B] nearest training image of the final (uint8) sample
    final_similarity: np.ndarray  # [B]

    def decision_levels(self) -> np.ndarray:
        """[B] the largest recorded sigma from which on every estimate's nearest image is the final one
        (0 when even the last estimate points elsewhere)."""
        same = self.nn_index == self.final_index[None, :]  # [S, B]
        # suffix[i, b]: same[j, b] for every j >= i
        suffix = np.flip(np.cumprod(np.flip(same, axis=0), axis=0), axis=0).astype(bool)
        first = np.where(suffix.any(axis=0), suffix.argmax(axis=0), -1)
        return np.where(first >= 0, self.sigmas[np.maximum(first, 0)], 0.0)


def _unit_pixels(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> mean-centred, L2-normalized rows (the audit's `pixels` features up to scale)."""
    v = x.flatten(1).to(torch.float32)
    return F.normalize(v - v.mean(dim=1, keepdim=True), dim=1)


@torch.no_grad()
def identity_trajectory(denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, train: np.ndarray,
                        solver: str = "heun") -> Trajectory:
    """Sample from `x_init` (standard normal `[B, C, H, W]`) along `sigmas` with the EDM sampler and record,
    at each step, the nearest of the uint8 `train` images `[M, H, W, C]` to the step's first estimate D."""
    refs = _unit_pixels(to_model_range(train))
    recorded: list[tuple[float, torch.Tensor]] = []
    fresh = [True]

    def watched(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = denoiser(x, sigma)
        if fresh[0]:  # the first evaluation of a step is D(x_i; sigma_i)
            recorded.append((float(sigma.reshape(-1)[0]), out.detach().cpu()))
            fresh[0] = False
        return out

    def step_done(_: int) -> None:
        fresh[0] = True

    x = edm_sample(watched, x_init, sigmas, solver=solver, progress=step_done)
    final = to_model_range(to_uint8(x.cpu()))
    idx, sim = [], []
    for _, d in recorded:
        s, i = nearest_neighbours(_unit_pixels(d), refs)
        sim.append(s[:, 0].numpy())
        idx.append(i[:, 0].numpy())
    fs, fi = nearest_neighbours(_unit_pixels(final), refs)
    return Trajectory(np.array([s for s, _ in recorded]), np.stack(idx), np.stack(sim), fi[:, 0].numpy(),
                      fs[:, 0].numpy())


def decision_summary(traj: Trajectory, copy_threshold: float, sigma_n: float | None = None) -> dict:
    """Median decision level of copies (final similarity >= `copy_threshold`) and of the other samples,
    and, given sigma_n, the share of copies whose identity was already fixed at or above it."""
    levels = traj.decision_levels()
    copies = traj.final_similarity >= copy_threshold
    out = {
        "n": int(levels.shape[0]),
        "copy_threshold": float(copy_threshold),
        "copies": float(copies.mean()),
        "median_level_copies": float(np.median(levels[copies])) if copies.any() else None,
        "median_level_others": float(np.median(levels[~copies])) if (~copies).any() else None,
    }
    if sigma_n is not None:
        out["sigma_n"] = float(sigma_n)
        out["copies_decided_above_sigma_n"] = float((levels[copies] >= sigma_n).mean()) if copies.any() else None
        out["all_decided_above_sigma_n"] = float((levels >= sigma_n).mean())
    return out
