"""Memorization statistics: self-audit scores 1, held-out scores lower, calibrated thresholds, JSON keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffmem.evaluate.memorization import (
    DEFAULT_THRESHOLDS,
    fraction_above,
    memorization_analysis,
    memorization_report,
    ratio_scores,
    threshold_key,
)


def _clusters(n: int, seed: int, centres: torch.Tensor) -> torch.Tensor:
    """Points near random centres (real images of one distribution, in a toy feature space)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, centres.shape[0], (n,), generator=gen)
    return centres[pick] + 0.6 * torch.randn(n, centres.shape[1], generator=gen)


@pytest.fixture
def sets() -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 2
    return _clusters(60, 1, centres), _clusters(40, 2, centres)


def test_training_set_against_itself(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    rep = memorization_report(train, train, held)
    assert rep["similarity"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert rep["similarity"]["min"] == pytest.approx(1.0, abs=1e-6)
    assert rep["fraction_above"] == {threshold_key(t): 1.0 for t in DEFAULT_THRESHOLDS}
    assert rep["ratio_test"]["fraction_below"] == 1.0  # distance 0 to the nearest: ratio 0
    assert all(v == 1.0 for v in rep["fraction_above_calibrated"].values())


def test_heldout_scores_lower(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    rep = memorization_report(held, train, held, ratio_k=5)
    h = rep["heldout"]
    assert h["similarity"]["mean"] < 0.99 and h["similarity"]["max"] < 1.0
    assert h["ratio_test"]["fraction_below"] < 0.2
    # samples = held-out images: same numbers as the held-out block
    assert rep["similarity"] == h["similarity"]
    assert sum(h["fraction_above"].values()) < len(DEFAULT_THRESHOLDS)


def test_keys_thresholds_and_calibration(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    samples = torch.cat([train[:10], held[:10]])
    rep, arrays = memorization_analysis(samples, train, held, (0.5, 0.9), calibration_percentiles=(90.0,),
                                        ratio_k=5, features="toy")
    json.dumps(rep)  # serializable
    for key in ("features", "n_samples", "n_train", "n_heldout", "similarity", "fraction_above", "ratio_test",
                "calibrated_thresholds", "fraction_above_calibrated", "heldout", "warnings"):
        assert key in rep
    assert set(rep["similarity"]) >= {"mean", "median", "p95", "max"}
    assert list(rep["fraction_above"]) == ["0.5", "0.9"]
    assert rep["n_samples"] == 20 and rep["n_train"] == 60 and rep["n_heldout"] == 40
    assert rep["ratio_test"]["k"] == 5 and rep["ratio_test"]["threshold"] == pytest.approx(1 / 3)
    cal = rep["calibrated_thresholds"]["heldout_p90"]
    assert cal == pytest.approx(np.percentile(arrays["heldout_nn_similarity"].astype(np.float64), 90), abs=1e-6)
    # the first 10 samples are training images: all above the calibrated threshold; held-out ones mostly not
    assert rep["fraction_above_calibrated"]["heldout_p90"] >= 0.5
    assert rep["heldout"]["fraction_above_calibrated"]["heldout_p90"] == pytest.approx(0.1, abs=0.03)
    assert set(arrays) == {"nn_index", "nn_similarity", "ratio", "heldout_nn_index", "heldout_nn_similarity",
                           "heldout_ratio"}
    assert np.array_equal(arrays["nn_index"][:10], np.arange(10))


def test_without_heldout_warns(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, _ = sets
    rep = memorization_report(train[:5], train)
    assert rep["heldout"] is None and rep["calibrated_thresholds"] is None
    assert any("held-out" in w for w in rep["warnings"])


def test_ratio_and_fraction_helpers() -> None:
    # unit distances: d = sqrt(2 - 2 s); s = (1, 0.5, 0.5) -> d = (0, 1, 1) -> ratio 0
    assert ratio_scores(np.array([[1.0, 0.5, 0.5]]))[0] == 0.0
    r = ratio_scores(np.array([[0.5, 0.5]]))[0]
    assert r == pytest.approx(1.0)
    assert fraction_above(np.array([0.1, 0.9, 0.95]), (0.9,)) == {"0.9": pytest.approx(2 / 3)}
    assert threshold_key(0.875) == "0.875" and threshold_key(0.9) == "0.9"
