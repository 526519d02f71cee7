"""The safe-quality rule (sweep/safe_quality.py): the paired test against scipy's one-sample t-test, q* of a
run, the best control, and the rule's error rate and power on synthetic paths (sweep/synthetic.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from diffmem.sweep.safe_quality import paired_comparison, qstar_verdicts, run_qstar
from diffmem.sweep.synthetic import PathModel, synthetic_frontier


def test_paired_verdict_is_scipys_one_sided_t_test() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        s = int(rng.integers(2, 9))
        ctrl = {i: float(np.exp(rng.normal(0, 0.3))) for i in range(s)}
        shift = rng.normal(0, 0.1)
        cand = {i: ctrl[i] * float(np.exp(shift + rng.normal(0, 0.08))) for i in range(s)}
        res = paired_comparison(cand, ctrl)
        d = np.log([cand[i] for i in range(s)]) - np.log([ctrl[i] for i in range(s)])
        less = stats.ttest_1samp(d, 0.0, alternative="less").pvalue
        greater = stats.ttest_1samp(d, 0.0, alternative="greater").pvalue
        expected = "better" if less < 0.05 else "worse" if greater < 0.05 else "no difference shown"
        if min(abs(less - 0.05), abs(greater - 0.05)) > 1e-9:
            assert res["verdict"] == expected, (trial, less, greater)
        assert res["change"] == pytest.approx(math.expm1(d.mean()))
        assert res["change_low"] <= res["change"] <= res["change_high"]


def test_paired_comparison_uses_the_common_seeds_only() -> None:
    res = paired_comparison({0: 1.0, 1: 1.0, 2: 0.5}, {1: 2.0, 2: 1.0, 3: 9.0})
    assert res["seeds"] == [1, 2] and res["log_ratios"] == pytest.approx([math.log(0.5)] * 2)
    assert paired_comparison({0: 1.0}, {0: 2.0})["verdict"] == "too few seeds"


def _check(step: int, safe: bool, q: float) -> dict:
    return {"step": step, "safe": safe, "quality": q}


def test_run_qstar_is_the_best_safe_quality_or_the_worst_when_none_is_safe() -> None:
    assert run_qstar([_check(1, True, 3.0), _check(2, True, 2.0), _check(3, False, 1.0)]) == \
        {"qstar": 2.0, "step": 2, "safe_found": True}
    assert run_qstar([_check(1, False, 3.0), _check(2, False, 2.0)]) == {"qstar": 3.0, "step": 1, "safe_found": False}


def test_best_control_has_the_lowest_mean_log_qstar() -> None:
    runs = []
    for seed in range(3):
        for variant, role, q in (("fast", "control", 2.0), ("slow", "control", 1.5), ("cand", "candidate", 1.0)):
            runs.append({"subset": 50, "variant": variant, "role": role, "seed": seed,
                         "qstar": {"qstar": q * (1 + 0.01 * seed), "step": 1, "safe_found": True}})
    (v,) = qstar_verdicts(runs)
    assert v["best_control"] == "slow" and v["verdict"]["verdict"] == "better"
    assert v["verdict"]["change"] == pytest.approx(1.0 / 1.5 - 1.0)
    assert set(v["against"]) == {"fast", "slow"}


def _calls(seeds: int, draws: int, rng: np.random.Generator, **cand: float) -> list[str]:
    return [qstar_verdicts(synthetic_frontier(PathModel(), rng, seeds, clocks=(1.0, 0.5), **cand))[0]
            ["verdict"]["verdict"] for _ in range(draws)]


@pytest.mark.slow
def test_an_identical_method_is_rarely_called_better_and_a_better_one_often() -> None:
    """The rule's level and power on the synthetic paths (the full table: bench/qstar_power.py)."""
    rng = np.random.default_rng(7)
    draws = 80
    same = _calls(5, draws, rng)
    assert same.count("better") / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)
    better = _calls(15, draws, rng, quality_factor=0.9)
    assert better.count("better") / draws >= 0.75
    assert better.count("worse") == 0
