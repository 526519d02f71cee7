"""`ratio_tests_of`: one reader of an audit report's ratio tests for the CLI, comparison tables and sweeps."""

from __future__ import annotations

import numpy as np
import torch

from diffmem.evaluate.memorization import carlini_ratio, memorization_report, nn1_nn2_ratio
from diffmem.evaluate.report_fields import ratio_tests_of
from diffmem.report.comparison import audit_row, heldout_row
from diffmem.sweep.results import make_row


def _report() -> tuple[dict, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    samples = torch.cat([train[:5] + 0.01 * torch.randn(5, 16, generator=g), torch.randn(15, 16, generator=g)])
    samples = torch.nn.functional.normalize(samples, dim=1)
    held = torch.nn.functional.normalize(torch.randn(30, 16, generator=g), dim=1)
    return memorization_report(samples, train, held, ratio_k=10), samples, train


def test_both_definitions_are_read_with_the_fraction_a_brute_force_count_gives() -> None:
    rep, samples, train = _report()
    tests = ratio_tests_of(rep)
    assert sorted(tests) == ["carlini", "nn1_nn2"]
    sims = np.sort((samples @ train.T).numpy(), axis=1)[:, ::-1]  # brute force: every training image
    assert tests["carlini"]["fraction_below"] == float((carlini_ratio(sims[:, :10]) < 1 / 3).mean())
    assert tests["nn1_nn2"]["fraction_below"] == float((nn1_nn2_ratio(sims) < 1 / 3).mean())
    assert tests["carlini"]["fraction_below"] >= 0.25  # the 5 planted near-copies of 20 are flagged


def test_an_old_report_with_one_ratio_test_reads_as_carlini_and_missing_tests_are_left_out() -> None:
    rep, _, _ = _report()
    old = {k: v for k, v in rep.items() if k != "ratio_tests"}
    assert ratio_tests_of(old) == {"carlini": rep["ratio_tests"]["carlini"]}
    assert ratio_tests_of({**rep, "ratio_tests": {"carlini": None, "nn1_nn2": rep["ratio_tests"]["nn1_nn2"]}}) == \
        {"nn1_nn2": rep["ratio_tests"]["nn1_nn2"]}
    assert ratio_tests_of({}) == {}


def test_comparison_rows_and_sweep_rows_carry_every_definition_also_for_held_out_images() -> None:
    rep, _, _ = _report()
    row = audit_row("m", rep)
    assert row["ratio carlini < 0.333"] == rep["ratio_tests"]["carlini"]["fraction_below"]
    assert row["ratio nn1_nn2 < 0.333"] == rep["ratio_tests"]["nn1_nn2"]["fraction_below"]
    held = heldout_row(rep)
    assert held["ratio nn1_nn2 < 0.333"] == rep["heldout"]["ratio_tests"]["nn1_nn2"]["fraction_below"]
    sweep = make_row({"name": "r"}, {"pixels": rep}, None)
    assert sweep["pixels:ratio_nn1_nn2"] == rep["ratio_tests"]["nn1_nn2"]["fraction_below"]
