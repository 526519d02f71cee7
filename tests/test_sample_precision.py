"""Sampling under bfloat16 autocast (SampleOptions.precision, `diffmem sample --precision`, the guard's
`sample_precision`): close to float32, sample i still fixed by (seed, i), recorded in every check and in the
certificate, and refused with the flag's name when it is neither fp32 nor bf16."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import diffmem
from conftest import run_cli, tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.generate import SampleOptions, generate
from diffmem.guard import GuardConfig, make_guard, validate_guard
from diffmem.release import read_release
from diffmem.train.checkpoint import load_denoiser
from diffmem.train.loop import train
from diffmem.train.rundir import LOG


@pytest.fixture
def trained(tmp_path: Path, npz_data: str) -> Path:
    run = tmp_path / "run"
    train(tiny_config(npz_data, steps=4), run, progress=False)
    return run


def test_bf16_sampling_is_close_to_fp32_and_sample_i_stays_fixed(trained: Path) -> None:
    fp32 = diffmem.sample(trained, 12, seed=0)
    bf16 = diffmem.sample(trained, 12, seed=0, precision="bf16")
    diff = np.abs(fp32.astype(int) - bf16.astype(int))
    assert diff.max() > 0  # the forward pass did run in bfloat16
    assert diff.mean() < 1.0 and diff.max() <= 8  # of 255 levels: a rounding, not another image (measured: 0.15, 1)
    net, cfg, meta = load_denoiser(trained)
    in_fives = generate(net, cfg, meta, 12, seed=0, batch=5, opts=SampleOptions(precision="bf16"), progress=False)
    assert np.array_equal(in_fives, bf16)  # the batch size still never changes sample i


def test_sample_cli_takes_the_precision(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.npz"
    code, _, _ = run_cli(["sample", "--run", str(trained), "--n", "6", "--precision", "bf16", "--out", str(out),
                          "--no-grid", "--quiet"], capsys)
    assert code == 0
    assert np.array_equal(np.load(out)["images"], diffmem.sample(trained, 6, seed=0, precision="bf16"))
    code, _, err = run_cli(["sample", "--run", str(trained), "--n", "6", "--precision", "fp16", "--out",
                            str(tmp_path / "t.npz")], capsys)
    assert code == 2 and "--precision" in err and not (tmp_path / "t.npz").exists()


def test_the_guard_checks_in_the_precision_asked_and_certifies_it(tmp_path: Path) -> None:
    data = str(write_npz(tmp_path / "big.npz", n=850))  # a subset of 20 leaves 830 held out: the guard's p99
    cfg = tiny_config(data, subset=20, steps=4)
    run = tmp_path / "run"
    gc = GuardConfig(n_samples=50, quality_features="pixels", patience=0, sample_precision="bf16")
    train(cfg, run, progress=False, monitor=make_guard(cfg, gc, run), monitor_every=cfg.checkpoint_every)
    checks = [json.loads(line)["monitor"] for line in (run / LOG).read_text().splitlines() if '"monitor"' in line]
    assert len(checks) == 2 and all(c["sample_precision"] == "bf16" for c in checks)
    rec = read_release(run)
    assert rec["settings"]["sample_precision"] == "bf16"
    released = np.load(run / "release" / "released.npz")["images"]
    assert np.array_equal(released, diffmem.sample(run, 50, seed=0, checkpoint="release", precision="bf16"))
    assert not np.array_equal(released, diffmem.sample(run, 50, seed=0, checkpoint="release"))


def test_precisions_other_than_fp32_and_bf16_are_refused_naming_the_flag(trained: Path, npz_data: str) -> None:
    from diffmem.cli.configs import frontier_config_from_flags
    from diffmem.sweep.frontier import guard_config

    with pytest.raises(DiffmemError, match="--guard-sample-precision must be one of fp32, bf16, got 'fp16'"):
        validate_guard(GuardConfig(sample_precision="fp16"), tiny_config(npz_data))
    with pytest.raises(DiffmemError, match="--precision must be one of fp32, bf16"):
        diffmem.sample(trained, 2, precision="int8")
    with pytest.raises(DiffmemError, match="--sample-precision must be one of fp32, bf16"):
        frontier_config_from_flags(sample_precision="fp8")
    fc = frontier_config_from_flags(sample_precision="bf16")
    assert guard_config(fc).sample_precision == "bf16" and fc.to_dict()["sample_precision"] == "bf16"
    assert guard_config(frontier_config_from_flags()).sample_precision == "fp32"  # the default instrument
