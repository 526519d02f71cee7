"""The sampler's settings, importable without torch: `diffmem sample` reads its flags' defaults here."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SOLVERS", "SAMPLE_BATCH", "SampleOptions"]

SOLVERS: tuple[str, ...] = ("heun", "euler")  # EDM Algorithm 2's second-order step, or first-order only
SAMPLE_BATCH = 256  # images per sampler batch (memory only: sample i never depends on it)


@dataclass(frozen=True)
class SampleOptions:
    """EDM sampling (Karras et al. 2022, Algorithm 2 and Table 1): steps, solver, churn and the schedule;
    `precision` of the network's forward pass (fp32, or bf16 autocast: about twice as fast on CPUs with
    AMX and on GPUs; docs/performance.md measures what it changes in a guard's check)."""

    steps: int = 18
    solver: str = "heun"
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    precision: str = "fp32"
