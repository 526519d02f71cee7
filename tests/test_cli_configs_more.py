"""diffmem.cli.configs for demo, frontier and audit: flags -> DemoConfig, FrontierConfig, AuditOptions; and the
click defaults of demo, audit, fid, sample and trace that are the library's (one home each)."""

from __future__ import annotations

import inspect

import click
import pytest

from diffmem.cli.audit import audit_options_from_flags
from diffmem.cli.configs import frontier_config_from_flags
from diffmem.cli.demo import demo_config_from_flags
from diffmem.demo import DEMO_OUT, DemoConfig, demo_configs
from diffmem.errors import DiffmemError
from diffmem.evaluate.options import AuditOptions
from diffmem.sweep.frontier import FRONTIER_STEPS, default_variants


def _refused(build, match: str, **flags) -> str:
    """`build(**flags)` raises a one-line DiffmemError matching `match`; returns its text."""
    with pytest.raises(DiffmemError, match=match) as err:
        build(**flags)
    assert "\n" not in str(err.value)
    return str(err.value)


def _click_defaults(command: click.Command) -> dict:
    ctx = click.Context(command)
    return {p.name: p.get_default(ctx) for p in command.params}


def test_demo_config() -> None:
    assert demo_config_from_flags() == DemoConfig()
    cfg = demo_config_from_flags(subset=20, steps=3, batch=8, resolution=16, sigma_n=0.5, ambient_weight="capped",
                                 weight_cap=2.0, n_samples=50, seed=4)
    assert cfg == DemoConfig(subset=20, steps=3, batch=8, resolution=16, sigma_n=0.5, ambient_weight="capped",
                             weight_cap=2.0, n_samples=50, seed=4)
    assert demo_configs(cfg)["ambient"].method.weight_cap == 2.0


@pytest.mark.parametrize("flags, match", [
    ({"subset": 1}, "--subset must be an integer >= 2, got 1"),
    ({"steps": 0}, "--steps must be an integer >= 1, got 0"),
    ({"batch": 0}, "--batch must be an integer >= 1, got 0"),
    ({"n_samples": 1}, "--n-samples must be an integer >= 50, got 1"),
    ({"resolution": 3}, "--resolution must be an integer >= 4, got 3"),
    ({"sigma_n": 0.0}, "--sigma-n must be a positive noise level, e.g. 0.5; got 0.0"),
    ({"sigma_n": float("nan")}, "--sigma-n must be a positive noise level"),
    ({"ambient_weight": "capped", "weight_cap": 0.0}, "--weight-cap must be a positive number"),  # validate_config
    ({"ambient_weight": "heavy"}, "--ambient-weight must be one of"),
])
def test_demo_refuses_bad_flags(flags, match) -> None:
    _refused(demo_config_from_flags, match, **flags)


def test_frontier_config() -> None:
    fc = frontier_config_from_flags()
    assert fc.subsets == (100,) and fc.seeds == (0, 1, 2) and fc.variants == default_variants()
    assert (fc.checkpoints, fc.n_samples, fc.sample_steps) == (8, 500, 18)
    assert fc.base.optim.steps == FRONTIER_STEPS == 4000 and fc.base.data.resolution == 16 and fc.base.log_every == 50
    assert [v.lr_factor for v in fc.variants if v.role == "control"] == [1.0, 0.5, 0.25]
    assert [(v.ambient_weight, v.sigma_n) for v in fc.variants if v.role == "candidate"] == [
        ("plain", 1.0), ("compensated", 1.0), ("capped", 1.0)]
    fc = frontier_config_from_flags(subsets="30,60", seeds="5", sigma_n=0.5, weightings=" capped ", weight_cap=2.0,
                                    lr_factors="1", steps=40, batch=8, lr=2e-4, channels="8,16", checkpoints=2,
                                    n_samples=50, sample_steps=2, resolution=8, patience=0)
    assert fc.subsets == (30, 60) and fc.seeds == (5,) and (fc.checkpoints, fc.n_samples, fc.sample_steps) == (2, 50, 2)
    assert [v.slug for v in fc.variants] == ["edm-lr1", "ambient-capped2-sn0.5"]
    assert fc.base.optim.steps == 40 and fc.base.optim.lr == 2e-4 and fc.base.log_every == 2
    assert fc.base.network.channels == (8, 16) and fc.base.data.resolution == 8
    assert fc.base.data.resize is False


def test_frontier_config_runs_each_sigma_n_and_resizes() -> None:
    """--sigma-n 1,2.7 gives one candidate per (sigma_n, weighting), sigma_n-major; --resize reaches the data."""
    fc = frontier_config_from_flags(sigma_n="1, 2.7", weightings="plain,capped", lr_factors="1,0.5", resolution=8,
                                    resize=True)
    assert [v.slug for v in fc.variants] == ["edm-lr1", "edm-lr0.5", "ambient-plain-sn1", "ambient-capped4-sn1",
                                             "ambient-plain-sn2.7", "ambient-capped4-sn2.7"]
    assert [v.label for v in fc.variants if v.role == "candidate"][2] == "Algorithm 1, plain, sigma_n 2.7"
    assert fc.base.data.resize is True and fc.base.data.resolution == 8
    assert frontier_config_from_flags(sigma_n="0.5").variants == default_variants(0.5)


@pytest.mark.parametrize("flags, match", [
    ({"sigma_n": "1,0"}, "--sigma-n needs positive noise levels"),
    ({"sigma_n": "1,x"}, "--sigma-n"),
    ({"sigma_n": "1,1"}, "two variants share a name"),
    ({"resize": True}, "--resize needs a target size"),
])
def test_frontier_sigma_n_and_resize_bad_input(flags, match) -> None:
    with pytest.raises(DiffmemError, match=match):
        frontier_config_from_flags(**flags)


@pytest.mark.parametrize("flags, match", [
    ({"weightings": "plain,heavy"}, "--weightings: 'heavy' is not one of plain, compensated, capped"),
    ({"checkpoints": 1}, "--checkpoints must be at least 2"),
    ({"n_samples": 3}, "--n-samples must be at least 50"),
    ({"lr_factors": "1,0"}, "--lr-factors must be positive"),
    ({"lr_factors": "1,x"}, "--lr-factors"),
    ({"weight_cap": 0.0}, "--weight-cap"),
    ({"subsets": "1"}, "--subset needs training-set sizes of at least 2"),
    ({"seeds": ""}, "--seeds"),
    ({"sigma_n": -1.0}, "--sigma-n"),
    ({"steps": 0}, "--steps"),
])
def test_frontier_refuses_bad_flags(flags, match) -> None:
    _refused(frontier_config_from_flags, match, **flags)


def test_audit_options() -> None:
    assert audit_options_from_flags(train_spec="train/") == AuditOptions()
    opts = audit_options_from_flags(run_dir="run", thresholds="0.8, 0.99", calibrate="90", ratio_k=5,
                                    max_heldout=7, n_pictures=2, backend="faiss", batch=3, xflip=True,
                                    features="pixels", resolution=8, resize=True, image_size=224)
    assert opts == AuditOptions(features="pixels", thresholds=(0.8, 0.99), calibrate=(90.0,), ratio_k=5,
                                max_heldout=7, xflip=True, resolution=8, resize=True, image_size=224, n_pictures=2,
                                backend="faiss", batch=3)


@pytest.mark.parametrize("flags, match", [
    ({}, "give exactly one of --run DIR or --train SPEC"),
    ({"run_dir": "run", "train_spec": "train/"}, "give exactly one of --run DIR or --train SPEC"),
    ({"run_dir": "run", "heldout_spec": "held/"}, "--heldout goes with --train"),
    ({"train_spec": "t", "thresholds": "0.9,high"}, "--thresholds"),
    ({"train_spec": "t", "thresholds": "2"}, r"--thresholds values must lie in \[-1, 1\]; got '2'"),
    ({"train_spec": "t", "calibrate": "101"}, r"--calibrate values must lie in \[0, 100\]; got '101'"),
    ({"train_spec": "t", "ratio_k": 0}, "--ratio-k, --n-pictures and --max-heldout must be at least 1"),
    ({"train_spec": "t", "n_pictures": 0}, "--ratio-k, --n-pictures and --max-heldout must be at least 1"),
    ({"train_spec": "t", "max_heldout": 0}, "--ratio-k, --n-pictures and --max-heldout must be at least 1"),
    ({"train_spec": "t", "backend": "annoy"}, "--backend must be one of torch, faiss"),
])
def test_audit_refuses_bad_flags(flags, match) -> None:
    _refused(audit_options_from_flags, match, **flags)


def test_library_defaults_of_the_other_flags() -> None:
    """Click defaults that no config function takes are still the library's."""
    import diffmem.api as api
    from diffmem.cli.audit import audit
    from diffmem.cli.demo import demo
    from diffmem.cli.fid import fid
    from diffmem.cli.sample import sample
    from diffmem.cli.trace import trace
    from diffmem.evaluate.decision import trace_run
    from diffmem.generate import SampleOptions, generate

    def sig(fn) -> dict:
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()}

    assert _click_defaults(demo)["out"] == DEMO_OUT
    a, opts = sig(api.audit), AuditOptions()
    assert (a["calibrate"], a["max_heldout"], a["n_pictures"], a["backend"], a["batch_size"], a["ratio_k"]) == (
        opts.calibrate, opts.max_heldout, opts.n_pictures, opts.backend, opts.batch, opts.ratio_k)
    assert [c for c in audit.params if c.name == "backend"][0].type.choices == ("torch", "faiss")
    f, d = sig(api.fid), _click_defaults(fid)
    assert {k: d[k] for k in ("features", "kid_subsets", "kid_subset_size", "pr_k", "seed")} == {
        k: f[k] for k in ("features", "kid_subsets", "kid_subset_size", "pr_k", "seed")}
    assert d["batch"] == f["batch_size"]
    d, so = _click_defaults(sample), SampleOptions()
    assert (d["steps"], d["solver"], d["churn"], d["s_tmin"], d["s_tmax"], d["s_noise"]) == (
        so.steps, so.solver, so.s_churn, so.s_tmin, so.s_tmax, so.s_noise)
    assert (d["n"], d["seed"], d["batch"]) == (sig(api.sample)["n"], sig(api.sample)["seed"], sig(generate)["batch"])
    d, t = _click_defaults(trace), sig(trace_run)
    assert {k: d[k] for k in ("n", "seed", "steps", "batch")} == {k: t[k] for k in ("n", "seed", "steps", "batch")}


@pytest.mark.parametrize("given, rule", [
    ({}, "exactly one of"),  # neither run nor train
    ({"run": "r", "train": "t"}, "exactly one of"),
    ({"run": "r", "heldout": "h"}, "goes with"),
    ({"train": "t", "ratio_k": 0}, "must be at least 1"),
    ({"train": "t", "n_pictures": 0}, "must be at least 1"),
    ({"train": "t", "max_heldout": 0}, "must be at least 1"),
])
def test_the_command_and_the_python_api_refuse_the_same_audit_inputs(given: dict, rule: str) -> None:
    """One rule, two vocabularies: `diffmem audit` names flags, `diffmem.audit` its keyword arguments."""
    import diffmem

    flags = {"run": "run_dir", "train": "train_spec", "heldout": "heldout_spec"}
    with pytest.raises(DiffmemError) as cli_err:
        audit_options_from_flags(**{flags.get(k, k): v for k, v in given.items()})
    api_kwargs = {"ratio_k": None, "n_pictures": 16, "max_heldout": 10, **given}
    with pytest.raises(DiffmemError) as api_err:
        diffmem.audit("samples-not-read", **api_kwargs)  # refused before any file is read
    cli_text, api_text = str(cli_err.value), str(api_err.value)
    assert rule in cli_text and rule in api_text
    assert cli_text.startswith(("give exactly one of --run", "--")) and not api_text.startswith("--")
    assert "--run DIR" not in api_text and "--train SPEC" not in api_text
