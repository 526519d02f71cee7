"""What a sweep runs: the grid of points (method x its swept setting x subset x seed) and how each is measured.

Every point shares one training budget (steps, batch, network, optimizer) and one evaluation (the same
number of samples from the same sampler seeds, the same feature spaces); only the method, its
parameter, the training-set size and the seed differ. A method's swept setting is the one its class names
(`param_field`: sigma_n, mask_p, or a new method's own); the sweep asks the class, never the name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from diffmem.config import DataConfig, TrainConfig, json_ready
from diffmem.diffusion.methods import METHOD_CLASSES, Method, method_config
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import PIXEL_THRESHOLDS, EvalOptions
from diffmem.train.checks import validate_config
from diffmem.utils.flags import float_list, int_list, str_list

__all__ = ["EvalOptions", "SweepConfig", "SweepPoint", "PIXEL_THRESHOLDS", "sweep_points", "point_config",
           "parse_float_list", "parse_int_list", "parse_methods", "validate_sweep", "feature_dirname"]


GRID_FIELD = "sigma_n"  # the setting whose values may come from the data (diffmem.theory.default_sigma_grid)


@dataclass(frozen=True)
class SweepPoint:
    """One training run of a sweep: a method, the value of its swept setting (None: it has none), data, seed."""

    method: str
    param: float | None = None
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


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: `base` fixes data, network and budget; points vary method, parameter, subset and seed.

    `values`: the values of each swept setting by name, e.g. {"sigma_n": (0.5, 1.0), "mask_p": (0.2,)}; a
    setting without values takes its class's `sweep_values`, and sigma_n (GRID_FIELD) without values gets
    for each subset `diffmem.theory.default_sigma_grid` of its commitment curve.
    `settings`: the other settings the points share (e.g. ambient_weight, weight_cap, mask_delta); each point's
    method takes those its class declares.
    `monitor_every > 0`: every run logs copy statistics of `monitor_samples` EMA samples every K steps.
    """

    base: TrainConfig
    methods: tuple[str, ...] = ("edm", "ambient")
    values: dict[str, tuple[float, ...] | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
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
    for name in dict.fromkeys(sc.methods):  # each method checks its own settings, at every swept value
        _check_values(sc, METHOD_CLASSES[name])
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
    validate_config(dataclasses.replace(sc.base, method=method_config("edm")))


def _check_values(sc: SweepConfig, cls: type[Method]) -> None:
    """Build the method's configuration at each of its values, so that its class refuses a bad one."""
    field_name = cls.param_field
    values = _values(sc, cls)
    if field_name is not None and values is not None and not values:
        raise DiffmemError(f"--{field_name.replace('_', '-')} is empty; give the values of {field_name} to sweep "
                           f"for --methods {cls.name}" + (", or leave the flag out to use the data set's default grid"
                                                          if field_name == GRID_FIELD else ""))
    for v in (values or ()) if field_name is not None else (None,):
        base = dataclasses.replace(sc.base, method=_point_method(sc, cls, v))
        validate_config(base)


def _values(sc: SweepConfig, cls: type[Method], grid: tuple[float, ...] | None = None) -> tuple[float, ...] | None:
    """The values of the method's swept setting: the data's grid (sigma_n), the sweep's, or its class's."""
    if cls.param_field is None:
        return None
    if grid is not None and cls.param_field == GRID_FIELD:
        return grid
    given = sc.values.get(cls.param_field)
    return tuple(given) if given is not None else cls.sweep_values


def _point_method(sc: SweepConfig, cls: type[Method], value: float | None):
    pool = dict(sc.settings)
    if cls.param_field is not None and value is not None:
        pool[cls.param_field] = float(value)
    return method_config(cls.name, **pool)


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


def sweep_points(sc: SweepConfig, grids: dict[int | None, tuple[float, ...]] | None = None) -> list[SweepPoint]:
    """All points, in a stable order: subset, seed, method (as given), parameter ascending.

    `grids`: sigma_n (GRID_FIELD) values per subset (overrides `sc.values`, e.g. default grids from the data).
    """
    points = []
    for subset in sc.subsets:
        for seed in sc.seeds:
            for method in dict.fromkeys(sc.methods):  # unique, in the given order
                cls = METHOD_CLASSES[method]
                if cls.param_field is None:  # nothing to sweep: one point
                    points.append(SweepPoint(method, subset=subset, seed=seed))
                    continue
                values = _values(sc, cls, (grids or {}).get(subset))
                if not values:
                    raise DiffmemError(f"--methods {method} needs --{cls.param_field.replace('_', '-')} values")
                points += [SweepPoint(method, float(v), subset, seed) for v in sorted(set(values))]
    return points


def point_config(sc: SweepConfig, point: SweepPoint) -> TrainConfig:
    """The TrainConfig of one point: `base` with the point's method (its settings from `sc.settings` and the
    point's value of its swept setting), subset and seed."""
    base = sc.base
    data: DataConfig = dataclasses.replace(base.data, subset=point.subset)
    method = _point_method(sc, METHOD_CLASSES[point.method], point.param)
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
