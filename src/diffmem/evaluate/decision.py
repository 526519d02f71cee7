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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from diffmem.data.datasets import to_model_range, to_uint8
from diffmem.diffusion.methods import method_of
from diffmem.report.methods import short
from diffmem.diffusion.samplers import edm_sample
from diffmem.evaluate.features import PixelFeatures
from diffmem.evaluate.neighbours import nearest_neighbours
from diffmem.evaluate.options import TraceOptions

__all__ = ["Trajectory", "identity_trajectory", "decision_summary", "decision_table", "trace_run", "decision_plot"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TRACE = TraceOptions()  # trace_run's defaults, shared with `diffmem trace`


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
    """[B, C, H, W] in any affine range -> the audit's `pixels` features (mean-centred, so the [-1, 1]
    model range gives the same cosines as the [0, 1] images the audit embeds)."""
    return PixelFeatures().embed_batch(x.to(torch.float32))


@torch.no_grad()
def identity_trajectory(denoiser: Denoiser, x_init: torch.Tensor, sigmas: torch.Tensor, train: np.ndarray,
                        solver: str = "heun", refs: torch.Tensor | None = None) -> Trajectory:
    """Sample from `x_init` (standard normal `[B, C, H, W]`) along `sigmas` with the EDM sampler and record,
    at each step, the nearest of the uint8 `train` images `[M, H, W, C]` to the step's first estimate D.
    `refs`: their pixel features when already computed (tracing in batches)."""
    refs = _unit_pixels(to_model_range(train)) if refs is None else refs
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


def _concat(parts: list[Trajectory]) -> Trajectory:
    return Trajectory(parts[0].sigmas, np.concatenate([p.nn_index for p in parts], axis=1),
                      np.concatenate([p.nn_similarity for p in parts], axis=1),
                      np.concatenate([p.final_index for p in parts]), np.concatenate([p.final_similarity for p in parts]))


def trace_run(run_dir: str | Path, n: int = TRACE.n, seed: int = TRACE.seed, steps: int = TRACE.steps,
              batch: int = TRACE.batch,
              copy_threshold: float | None = None, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Decision levels of `n` samples of a baseline or Algorithm 1 run (EMA weights, EDM Heun).

    Samples are those of `diffmem sample --seed SEED` (sample i depends only on (seed, i)). A copy is a sample
    whose pixel similarity to its nearest training image reaches `copy_threshold`, by default the 99th
    percentile of the run's held-out images (the audit's `heldout_p99`). Returns the summary plus the
    per-sigma share of copies / other samples whose final nearest training image is already fixed.
    """
    from tqdm.auto import tqdm

    from diffmem.diffusion.samplers import per_sample_noise
    from diffmem.errors import DiffmemError
    from diffmem.generate import SampleOptions, method_sigmas
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.rundir import run_datasets

    net, cfg, meta = load_denoiser(run_dir, device=device)
    method = method_of(cfg.method)
    if method.extra_channels or method.sample_stop is not None:  # masking's mask input; noise-only's early stop
        raise DiffmemError(f"run {run_dir} was trained with --method {cfg.method.name}; tracing follows the "
                           "EDM sampler of edm and ambient runs only")
    train, heldout = run_datasets(run_dir)
    refs = _unit_pixels(to_model_range(train.images))
    if copy_threshold is None:
        if len(heldout) == 0:
            raise DiffmemError(f"run {run_dir} trained on all of its data, so there are no held-out images to "
                               "calibrate what a copy is; pass --copy-threshold (a pixel cosine similarity)")
        held, _ = nearest_neighbours(_unit_pixels(to_model_range(heldout.images)), refs)
        copy_threshold = float(np.percentile(held[:, 0].numpy().astype(np.float64), 99))
    sigmas, _ = method_sigmas(cfg, SampleOptions(steps=steps))
    k = cfg.network.num_classes
    shape = (meta["channels"], meta["resolution"], meta["resolution"])
    parts = []
    for lo in tqdm(range(0, n, batch), disable=not progress, desc="trace", unit="batch"):
        idx = list(range(lo, min(lo + batch, n)))
        labels = torch.tensor([i % k for i in idx], device=device) if k > 0 else None
        x0 = per_sample_noise(seed, idx, shape, 1)[0].to(device)
        parts.append(identity_trajectory(lambda x, s: net(x, s, labels), x0, sigmas.to(device), train.images,
                                         refs=refs))
    traj = _concat(parts)
    sigma_n = getattr(method, "sigma_n", None)  # methods trained on fixed noisy copies
    out = decision_summary(traj, copy_threshold, sigma_n)
    settled = traj.nn_index == traj.final_index[None]
    copies = traj.final_similarity >= copy_threshold
    out.update(run=str(run_dir), method=cfg.method.name, seed=seed, steps=steps, sigmas=traj.sigmas.tolist(),
               settled_copies=settled[:, copies].mean(axis=1).tolist() if copies.any() else None,
               settled_others=settled[:, ~copies].mean(axis=1).tolist() if (~copies).any() else None)
    return out


def decision_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """For each traced run: the share of copies (solid) and other samples (dashed) whose final nearest
    training image is already the nearest of D(x; sigma), against sigma; sigma_n dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for r in rows:
        label = short(r["method"]) + (f", sigma_n {r['sigma_n']:g}" if r.get("sigma_n") is not None else "")
        label = f"{Path(r['run']).name}: {label}"
        color = None
        if r["settled_copies"] is not None:
            color = ax.plot(r["sigmas"], r["settled_copies"], marker="o", ms=3,
                            label=f"{label}, copies ({r['copies']:.0%})")[0].get_color()
        if r["settled_others"] is not None:
            color = ax.plot(r["sigmas"], r["settled_others"], ls="--", color=color,
                            label=f"{label}, the others")[0].get_color()
        if r.get("sigma_n"):
            ax.axvline(r["sigma_n"], color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma along the sampler (dotted: sigma_n)")
    ax.set_ylabel("share whose final nearest training\nimage is already fixed")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def decision_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per traced run (`trace_run` results)."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    lines = ["| run | method | sigma_n | copies | median decision sigma of copies | of the others | "
             "copies decided at or above sigma_n |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['method']} | {fmt(r.get('sigma_n'))} | {r['copies']:.3f} | "
                     f"{fmt(r['median_level_copies'])} | {fmt(r['median_level_others'])} | "
                     f"{fmt(r.get('copies_decided_above_sigma_n'))} |")
    return lines
