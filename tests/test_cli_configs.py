"""diffmem.cli.configs: flags -> configurations, as pure functions with the defaults of diffmem.config."""

from __future__ import annotations

import inspect
from pathlib import Path

import click
import pytest

from conftest import write_npz
from diffmem.cli.audit import audit, audit_options_from_flags
from diffmem.cli.configs import (eval_options_from_flags, frontier_config_from_flags, network_from_flags,
                                 sweep_config_from_flags, train_config_from_flags)
from diffmem.cli.demo import demo, demo_config_from_flags
from diffmem.cli.frontier import frontier
from diffmem.cli.sweep import compare, sweep
from diffmem.cli.train import train
from diffmem.config import PRESETS, DataConfig, MethodConfig, OptimConfig, TrainConfig
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import EvalOptions


@pytest.mark.parametrize("command, build", [(train, train_config_from_flags), (sweep, sweep_config_from_flags),
                                            (sweep, eval_options_from_flags), (compare, eval_options_from_flags),
                                            (demo, demo_config_from_flags), (frontier, frontier_config_from_flags),
                                            (audit, audit_options_from_flags)])
def test_click_defaults_are_the_config_defaults(command: click.Command, build) -> None:
    """Each default is written once: every flag a config function takes has the function's default."""
    ctx = click.Context(command)
    defaults = {p.name: p.get_default(ctx) for p in command.params}
    params = inspect.signature(build).parameters
    shared = [n for n in params if n in defaults]
    assert len(shared) >= 8 or build is eval_options_from_flags
    for name in shared:
        assert defaults[name] == params[name].default, f"{command.name} --{name}: click {defaults[name]!r} != " \
                                                       f"{build.__name__} {params[name].default!r}"


def test_train_defaults() -> None:
    assert train_config_from_flags() == TrainConfig(data=DataConfig(resolution=16))  # builtin digits: 16 pixels
    assert train_config_from_flags(kimg=1.0, batch=10).optim.steps == 100


def test_train_flags_become_keyword_fields() -> None:
    cfg = train_config_from_flags(method="ambient", sigma_n=0.5, ambient_weight="capped", weight_cap=3.0, lr=2e-4,
                                  channels="8,16", attn_resolutions="", seed=3, subset=5, xflip=True)
    assert cfg.method == MethodConfig(name="ambient", sigma_n=0.5, ambient_weight="capped", weight_cap=3.0)
    assert cfg.network.channels == (8, 16) and cfg.network.attn_resolutions == ()
    assert cfg.optim == OptimConfig(lr=2e-4) and cfg.seed == 3
    assert cfg.data == DataConfig(resolution=16, subset=5, xflip=True)


def test_cond_counts_the_classes_of_the_data(tmp_path: Path) -> None:
    data = str(write_npz(tmp_path / "d.npz"))  # labels 0..2
    assert train_config_from_flags(data_spec=data, cond=True).network.num_classes == 3
    with pytest.raises(DiffmemError, match="--cond needs class labels"):
        train_config_from_flags(data_spec=str(write_npz(tmp_path / "n.npz", labels=False)), cond=True)


def test_validation_names_the_flag() -> None:
    with pytest.raises(DiffmemError, match="--method ambient needs a positive --sigma-n"):
        train_config_from_flags(method="ambient")
    with pytest.raises(DiffmemError, match="give either --steps or --kimg"):
        train_config_from_flags(steps=10, kimg=1.0)
    with pytest.raises(DiffmemError, match="--channels takes comma-separated integers, e.g. 32,64,64"):
        network_from_flags(channels="8,x")


def test_sweep_defaults() -> None:
    sc = sweep_config_from_flags()
    assert sc.methods == ("edm", "ambient") and sc.subsets == (None,) and sc.seeds == (0,) and sc.values["mask_p"] == (0.2,)
    assert sc.base.checkpoint_every == sc.base.optim.steps // 4 and sc.base.data.resolution == 16
    assert sc.eval == EvalOptions() and sc.base.network == PRESETS["tiny"]
    sc = sweep_config_from_flags(methods="edm,masking", mask_ps="0.3", subsets="10,20", seeds="1,2", steps=8)
    assert sc.values["mask_p"] == (0.3,) and sc.subsets == (10, 20) and sc.seeds == (1, 2) and sc.base.checkpoint_every == 2
    with pytest.raises(DiffmemError, match="--methods: unknown method 'edn'"):
        sweep_config_from_flags(methods="edn")


def test_eval_options() -> None:
    assert eval_options_from_flags() == EvalOptions()
    opts = eval_options_from_flags(features="pixels, digits-net", thresholds="0.9", no_pictures=True)
    assert opts.features == ("pixels", "digits-net") and opts.thresholds == (0.9,) and not opts.pictures
    with pytest.raises(DiffmemError, match=r"--thresholds must be cosine similarities in \[-1, 1\]"):
        eval_options_from_flags(thresholds="2")


def test_t2i_train_defaults_are_the_config_defaults() -> None:
    import dataclasses

    from diffmem.cli.t2i import train as t2i_train
    from diffmem.t2i.config import T2IConfig

    ctx = click.Context(t2i_train)
    defaults = {p.name: p.get_default(ctx) for p in t2i_train.params}
    fields = {f.name: f.default for f in dataclasses.fields(T2IConfig) if f.default is not dataclasses.MISSING}
    shared = [n for n in fields if n in defaults]
    assert len(shared) >= 15
    assert {n: defaults[n] for n in shared} == {n: fields[n] for n in shared}
