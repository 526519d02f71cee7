"""What a sweep runs: the grid of points (method x sigma_n / mask_p x subset x seed) and how each is measured.

Every point shares one training budget (steps, batch, network, optimizer) and one evaluation (the same
number of samples from the same sampler seeds, the same feature spaces); only the method, its
parameter, the training-set size and the seed differ.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from diffmem.config import DataConfig, TrainConfig, json_ready
from diffmem.diffusion.methods import METHOD_CLASSES
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import PIXEL_THRESHOLDS, EvalOptions
from diffmem.train.checks import validate_config
from diffmem.utils.flags import float_list, int_list, str_list

__all__ = ["EvalOptions", "SweepConfig", "SweepPoint", "PIXEL_THRESHOLDS", "sweep_points", "point_config",
           "parse_float_list", "parse_int_list", "parse_methods", "validate_sweep", "feature_dirname"]


@dataclass(frozen=True)
class SweepPoint:
    """One training run of a sweep."""

    method: str
    sigma_n: float = 0.0
    mask_p: float = 0.0
    subset: int | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        """A folder name, e.g. `n300-ambient-sn0.5-seed0`."""
        parts = [f"n{self.subset}" if self.subset is not None else "nall", self.method]
        if self.param is not None:
            parts.append(f"{METHOD_CLASSES[self.method].param_tag}{self.param:g}")
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    @property
    def param(self) -> float | None:
        """The swept parameter: the field the method class names (sigma_n, mask_p), None for the baseline."""
        field_name = METHOD_CLASSES[self.method].param_field
        return None if field_name is None else getattr(self, field_name)


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: `base` fixes data, network and budget; points vary method, parameter, subset and seed.

    `sigma_ns=None`: each subset gets `diffmem.theory.default_sigma_grid` of its commitment curve.
    `monitor_every > 0`: every run logs copy statistics of `monitor_samples` EMA samples every K steps.
    """

    base: TrainConfig
    methods: tuple[str, ...] = ("edm", "ambient")
    sigma_ns: tuple[float, ...] | None = None
    mask_ps: tuple[float, ...] = (0.2,)
    subsets: tuple[int | None, ...] = (300,)
    seeds: tuple[int, ...] = (0,)
    eval: EvalOptions = field(default_factory=EvalOptions)
    monitor_every: int = 0
    monitor_samples: int = 64
    tolerance: float = 0.1  # rule of thumb: quality within this fraction of the baseline

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["base"] = self.base.to_dict()
        return json_ready(d)


def feature_dirname(features: str) -> str:
    """A folder-safe name of a feature space: `digits-net:16` -> `digits-net_16`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", features).strip("_") or "features"


def validate_sweep(sc: SweepConfig) -> None:
    """Refuse a sweep a user got wrong, naming the flag."""
    if not sc.methods:
        raise DiffmemError("--methods is empty; choose from " + ", ".join(METHOD_CLASSES))
    bad = [m for m in sc.methods if m not in METHOD_CLASSES]
    if bad:
        raise DiffmemError(f"--methods: unknown method {bad[0]!r}; choose from {', '.join(METHOD_CLASSES)}")
    if sc.sigma_ns is not None:
        _check_positive(sc.sigma_ns, "--sigma-n")
    if any(METHOD_CLASSES[m].param_field == "mask_p" for m in sc.methods):
        if not sc.mask_ps:
            raise DiffmemError("--mask-p is empty; give erase probabilities in (0, 1), e.g. 0.2")
        if any(not 0 < p < 1 for p in sc.mask_ps):
            raise DiffmemError(f"--mask-p values must lie in (0, 1), got {list(sc.mask_ps)}")
    if not sc.seeds:
        raise DiffmemError("--seeds is empty; give at least one seed, e.g. 0")
    if not sc.subsets:
        raise DiffmemError("--subset is empty; give training-set sizes, e.g. 300")
    if any(s is not None and s < 2 for s in sc.subsets):
        raise DiffmemError(f"--subset values must be integers >= 2, got {list(sc.subsets)}")
    validate_eval(sc.eval)
    if sc.monitor_every < 0 or sc.monitor_samples < 2:
        raise DiffmemError("--monitor-every must be >= 0 and --monitor-samples >= 2")
    if not sc.tolerance >= 0:
        raise DiffmemError(f"--tolerance must be >= 0, got {sc.tolerance}")
    validate_config(sc.base)


def validate_eval(e: EvalOptions) -> None:
    """Refuse measurement settings a user got wrong (`diffmem sweep` and `diffmem compare`), naming the flag."""
    if e.n_samples < 2:
        raise DiffmemError(f"--n-samples must be at least 2 (a Frechet distance needs two images), got {e.n_samples}")
    if e.sample_steps < 1:
        raise DiffmemError(f"--sample-steps must be a positive integer, got {e.sample_steps}")
    if not e.features:
        raise DiffmemError("--features is empty; give at least one feature space, e.g. pixels")
    if e.copy_threshold is not None and not -1 <= e.copy_threshold <= 1:
        raise DiffmemError(f"--copy-threshold is a cosine similarity in [-1, 1], got {e.copy_threshold}")


def _check_positive(values: Iterable[float], flag: str) -> None:
    values = list(values)
    if not values:
        raise DiffmemError(f"{flag} is empty; give comma-separated positive noise levels, e.g. 0.2,0.5,1, "
                           "or leave the flag out to use the data set's default grid")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise DiffmemError(f"{flag} values must be positive noise levels (the baseline is --methods edm), "
                           f"got {bad[0]:g}")


def sweep_points(sc: SweepConfig, grids: dict[int | None, tuple[float, ...]] | None = None) -> list[SweepPoint]:
    """All points, in a stable order: subset, seed, method (as given), parameter ascending.

    `grids`: sigma_n values per subset (overrides `sc.sigma_ns`, e.g. default grids from the data).
    """
    points = []
    for subset in sc.subsets:
        sigmas = (grids or {}).get(subset, sc.sigma_ns)
        for seed in sc.seeds:
            for method in dict.fromkeys(sc.methods):  # unique, in the given order
                field_name = METHOD_CLASSES[method].param_field
                if field_name is None:  # nothing to sweep: one point
                    points.append(SweepPoint(method, subset=subset, seed=seed))
                    continue
                values = {"sigma_n": sigmas, "mask_p": sc.mask_ps}[field_name]
                if not values:
                    raise DiffmemError(f"--methods {method} needs --{field_name.replace('_', '-')} values")
                points += [SweepPoint(method, subset=subset, seed=seed, **{field_name: float(v)})
                           for v in sorted(set(values))]
    return points


def point_config(sc: SweepConfig, point: SweepPoint) -> TrainConfig:
    """The TrainConfig of one point: `base` with the point's method, parameter, subset and seed."""
    base = sc.base
    data: DataConfig = dataclasses.replace(base.data, subset=point.subset)
    method = dataclasses.replace(base.method, name=point.method, sigma_n=point.sigma_n, mask_p=point.mask_p)
    return dataclasses.replace(base, data=data, method=method, seed=point.seed)


def parse_float_list(text: str | None, flag: str) -> tuple[float, ...] | None:
    """'0.2,0.5,1' -> (0.2, 0.5, 1.0); None stays None; an empty list is returned empty (checked later)."""
    return float_list(text, flag, example="0.2,0.5,1")


def parse_int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    """'100,300' -> (100, 300); None stays None."""
    return int_list(text, flag, example="100,300", allow_empty=False)


def parse_methods(text: str) -> tuple[str, ...]:
    """'edm,ambient' -> ('edm', 'ambient'), refusing unknown names."""
    return str_list(text, "--methods", tuple(METHOD_CLASSES), what="method")
