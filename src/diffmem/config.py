"""Configuration: frozen dataclasses, named network presets, JSON round-trip.

The resolved `TrainConfig` is written to every run directory as config.json; re-running a command
compares against it to decide between resuming and refusing a foreign run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from diffmem.errors import DiffmemError

EXTENSIONS = "extensions"  # config.json key: how a finished run was extended (`diffmem train` with more steps)
RELEASE_JSON = "release.json"  # a run's release certificate (diffmem.release), naming the released step
RELEASE_DIR = "release"  # the folder of a run's released and last checked samples (diffmem.release)


@dataclass(frozen=True)
class NetworkConfig:
    """A UNet backbone (diffusers' UNet2DModel); preconditioning lives outside it."""

    preset: str = "tiny"
    channels: tuple[int, ...] = (32, 64, 64)  # per resolution level, highest resolution first
    layers_per_block: int = 2
    attn_resolutions: tuple[int, ...] = ()  # resolutions (pixels) with self-attention blocks
    dropout: float = 0.0
    num_classes: int = 0  # > 0: class-conditional (label embedding added to the noise embedding)


# Named presets. `cifar` follows EDM's DDPM++ configuration for 32x32 (channels 128*[2,2,2],
# 4 blocks per level, attention at 16x16, dropout 0.13): ~59M parameters in diffusers' UNet2DModel
# (EDM's own implementation has ~56M; the blocks differ in detail).
PRESETS: dict[str, NetworkConfig] = {
    "tiny": NetworkConfig("tiny", (32, 64, 64), 2, (), 0.0),
    "small": NetworkConfig("small", (64, 128, 128), 2, (8,), 0.1),
    "cifar": NetworkConfig("cifar", (256, 256, 256), 4, (16,), 0.13),
}


@dataclass(frozen=True)
class DataConfig:
    spec: str = "builtin:digits"
    resolution: int | None = None  # None: the data's own size (builtin:digits: 16)
    resize: bool = False
    subset: int | None = None
    subset_seed: int = 0
    xflip: bool = False
    cond: bool = False


# Configuration files written before each method had its own fields kept one flat method section, the union
# of every method's settings: these keys, with these defaults (also the command line's flag defaults). Each of
# the four methods of that time read only its own, as listed; reading such a section (it holds all the keys
# but weight_cap) keeps those and drops the rest, and a key of its own a file lacks (weight_cap, which older
# files did not write) takes its default, which by design reproduces the older behaviour.
FLAT_METHOD_DEFAULTS: dict[str, Any] = {"sigma_n": 0.0, "ambient_weight": "plain", "mask_p": 0.0, "mask_delta": 0.1,
                                        "weight_cap": 4.0}
_FLAT_METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    "edm": (), "ambient": ("sigma_n", "ambient_weight", "weight_cap"),
    "noisy-only": ("sigma_n", "ambient_weight", "weight_cap"), "masking": ("mask_p", "mask_delta")}


class MethodConfig:
    """Which method (docs/method.md) and its own settings: `MethodConfig("ambient", sigma_n=0.5)`.

    The settings are the fields the method's class declares (`diffmem.diffusion.methods`), which checks their
    names, types and ranges; this section holds them as given, in JSON as {"name": ..., setting: value, ...}.
    Frozen and hashable like the other parts of a TrainConfig; `cfg.method.sigma_n` reads a setting.
    """

    __slots__ = ("name", "_settings")

    def __init__(self, name: str = "edm", **settings: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_settings", tuple(settings.items()))

    @property
    def settings(self) -> dict[str, Any]:
        """The method's settings, by name (a copy)."""
        return dict(self._settings)

    def __getattr__(self, key: str) -> Any:
        if not key.startswith("_"):
            for k, v in self._settings:
                if k == key:
                    return v
        raise AttributeError(f"method {self.name!r} has no setting {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {key!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MethodConfig):
            return NotImplemented
        return self.name == other.name and self.settings == other.settings

    def __hash__(self) -> int:
        return hash((self.name, frozenset(self._settings)))

    def __repr__(self) -> str:
        return f"MethodConfig({', '.join([repr(self.name)] + [f'{k}={v!r}' for k, v in self._settings])})"

    def __reduce__(self) -> tuple:
        return _method_config, (self.name, self._settings)

    def to_dict(self) -> dict[str, Any]:
        """{"name": ..., setting: value, ...} (JSON-ready)."""
        return json_ready({"name": self.name, **self.settings})

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "method.") -> "MethodConfig":
        """Inverse of `to_dict`; also reads the flat section of older files (FLAT_METHOD_DEFAULTS). Settings must
        be JSON scalars here; their names and types are the method class's to check."""
        if not isinstance(d, dict):
            raise DiffmemError(f"configuration {prefix.rstrip('.')} must be a JSON object, got {d!r}")
        d = dict(d)
        name = d.pop("name", "edm")
        check_type(prefix + "name", "str", name)
        for key, value in d.items():
            if not (value is None or isinstance(value, (str, int, float, bool))):
                raise DiffmemError(f"configuration key {prefix + key!r} must be a number, a string, true, false "
                                   f"or null, got {value!r}")
        if name in _FLAT_METHOD_FIELDS:  # the four methods of the flat era: their own keys, their old defaults
            own = _FLAT_METHOD_FIELDS[name]
            flat = set(FLAT_METHOD_DEFAULTS) - {"weight_cap"} <= set(d)  # the flat union: keep only its own
            d = {**{k: d.get(k, FLAT_METHOD_DEFAULTS[k]) for k in own},
                 **{k: v for k, v in d.items() if k not in own and not (flat and k in FLAT_METHOD_DEFAULTS)}}
        return cls(name, **d)


def _method_config(name: str, settings: tuple[tuple[str, Any], ...]) -> MethodConfig:
    """Unpickling (configurations travel to the processes of a sweep)."""
    return MethodConfig(name, **dict(settings))


@dataclass(frozen=True)
class OptimConfig:
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-4  # the paper: Adam(W) lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    ema_halflife_kimg: float = 5.0  # EMA half-life in thousands of images (EDM convention)
    ema_decay: float | None = None  # if set, a fixed per-step decay instead of the half-life


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    network: NetworkConfig = field(default_factory=lambda: PRESETS["tiny"])
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    sigma_data: float = 0.5
    p_mean: float = -1.2  # training noise levels: ln(s) ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    checkpoint_every: int = 500
    log_every: int = 50

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["method"] = self.method.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys and values of the wrong type are an error (they usually mean
        a typo, a hand edit or a newer version). The record of extensions (EXTENSIONS) is not configuration."""
        if isinstance(d, dict):
            d = {k: v for k, v in d.items() if k != EXTENSIONS}
        return _from_dict(cls, d)


def json_ready(obj: Any) -> Any:
    """Tuples -> lists, recursively (what json.loads(json.dumps(x)) gives back)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def with_defaults(recorded: dict[str, Any], cls: type) -> dict[str, Any]:
    """`recorded` (a config as an older diffmem wrote it) with each field of dataclass `cls` that it lacks set to
    that field's default: a field added later keeps the old behaviour by its default, so old files compare
    equal to today's config of the same run."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**json_ready(defaults), **recorded}


_SUBCONFIGS = {"DataConfig": DataConfig, "NetworkConfig": NetworkConfig, "OptimConfig": OptimConfig}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# a field's annotation (a string: `from __future__ import annotations`) -> (check, what the message asks for)
_TYPES: dict[str, tuple[Any, str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (_is_number, "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and all(_TYPES["int"][0](x) for x in v),
                        "a list of integers"),
    "tuple[float, float]": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_number, v)),
                            "a list of two numbers"),
}


def check_type(key: str, annotation: str, value: Any) -> None:
    """Raise a DiffmemError naming `key` when `value` (from JSON) does not fit the field's annotation."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return
    check, what = _TYPES.get(base, (lambda v: True, ""))
    if not check(value):
        raise DiffmemError(f"configuration key {key!r} must be {what}{' or null' if optional else ''}, "
                           f"got {value!r}")


def _from_dict(cls: type, d: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise DiffmemError(f"configuration {prefix.rstrip('.') or 'file'} must be a JSON object, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise DiffmemError(f"unknown configuration keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        ftype = fields[name].type
        tname = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", "")
        sub = _SUBCONFIGS.get(tname)
        if tname == "MethodConfig":
            value = MethodConfig.from_dict(value, f"{prefix}{name}.")
        elif sub is not None:
            value = _from_dict(sub, value, f"{prefix}{name}.")
        else:
            check_type(prefix + name, tname, value)
            if isinstance(value, list):
                value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def validate_fields(cfg: TrainConfig) -> None:
    """Check each field's range (types are checked on reading) and raise a DiffmemError that names the flag at
    fault. The method's section is its class's to check (`diffmem.diffusion.methods`: the names, types and
    ranges of its settings, with its weighting's); `diffmem.train.checks.validate_config` runs both."""
    _validate_optim(cfg.optim)
    for name, value in (("--checkpoint-every", cfg.checkpoint_every), ("--log-every", cfg.log_every)):
        if value < 1:
            raise DiffmemError(f"{name} must be a positive integer, got {value}")
    if not (cfg.sigma_data > 0 and _finite(cfg.sigma_data) and cfg.p_std > 0 and _finite(cfg.p_std)
            and _finite(cfg.p_mean)):
        raise DiffmemError("sigma_data and p_std must be positive and p_mean finite (config.json)")
    n = cfg.network
    if not n.channels or any(c < 1 for c in n.channels):
        raise DiffmemError("--channels must be a list of positive integers")
    if n.layers_per_block < 1:
        raise DiffmemError(f"--layers-per-block must be a positive integer, got {n.layers_per_block}")
    if not 0 <= n.dropout < 1:
        raise DiffmemError("--dropout must be in [0, 1)")
    if n.num_classes < 0:
        raise DiffmemError(f"network.num_classes must be >= 0, got {n.num_classes}")
    d = cfg.data
    if d.resolution is not None and d.resolution < 1:
        raise DiffmemError(f"--resolution must be a positive integer, got {d.resolution}")
    if d.subset is not None and d.subset < 1:
        raise DiffmemError(f"--subset must be a positive integer, got {d.subset}")


def _validate_optim(o: OptimConfig) -> None:
    for name, value in (("--steps", o.steps), ("--batch", o.batch)):
        if value < 1:
            raise DiffmemError(f"{name} must be a positive integer, got {value}")
    if not (o.lr > 0 and _finite(o.lr)):
        raise DiffmemError(f"--lr must be a positive finite number, got {o.lr}")
    if not (o.weight_decay >= 0 and _finite(o.weight_decay)):
        raise DiffmemError(f"--weight-decay must be a finite number >= 0, got {o.weight_decay}")
    if o.warmup_steps < 0:
        raise DiffmemError(f"--warmup-steps must be >= 0 (0: no warm-up), got {o.warmup_steps}")
    if not (o.ema_halflife_kimg > 0 and _finite(o.ema_halflife_kimg)):
        raise DiffmemError(f"--ema must be a positive half-life in kimg, got {o.ema_halflife_kimg}")
    if o.ema_decay is not None and not 0 <= o.ema_decay < 1:
        raise DiffmemError(f"--ema-decay must be in [0, 1), got {o.ema_decay}")
    if not (all(0 <= b < 1 for b in o.betas) and o.eps > 0):
        raise DiffmemError(f"optim.betas must lie in [0, 1) and optim.eps be positive, got {o.betas}, {o.eps}")
