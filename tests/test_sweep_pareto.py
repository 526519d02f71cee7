"""Tests for diffmem.sweep's tables: the Pareto set, the rule of thumb, result files, summaries."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from diffmem.sweep import choose_sigma_n, markdown_tables, pareto_front, plot_pareto, read_results, summarize
from diffmem.sweep import write_results
from diffmem.sweep.results import format_table, make_row


def _row(method: str, quality: float | None, copy: float | None, sigma: float | None = None, seed: int = 0,
         subset: int = 300, **kw) -> dict:
    return {"name": f"{method}-{sigma}-{seed}", "method": method, "sigma_n": sigma, "mask_p": None, "subset": subset,
            "seed": seed, "quality_metric": "FD_digits-net", "quality": quality, "copy_metric": "pixels >= held-out p99",
            "copy_frac": copy, "heldout_copy_frac": 0.01, **kw}


def test_pareto_front_hand_made_table() -> None:
    rows = [
        _row("edm", 10.0, 0.5),             # 0: on the front
        _row("ambient", 12.0, 0.3, 1.0),    # 1: dominated by 2 (same copies, worse quality)
        _row("ambient", 11.0, 0.3, 0.5),    # 2: on the front
        _row("ambient", 9.0, 0.6, 0.2),     # 3: on the front (best quality)
        _row("masking", 15.0, 0.7),         # 4: dominated by 0
        _row("ambient", None, 0.0, 5.0),    # 5: no quality: never on the front
        _row("noisy-only", 20.0, 0.1, 2.0), # 6: on the front (fewest copies)
        _row("ambient", 11.0, 0.3, 0.6),    # 7: exact duplicate of 2: kept
        _row("ambient", 10.0, 0.55, 0.4),   # 8: dominated by 0 (same quality, more copies)
    ]
    assert pareto_front(rows) == [6, 2, 7, 0, 3]


def test_pareto_front_edge_cases() -> None:
    assert pareto_front([]) == []
    assert pareto_front([_row("edm", 1.0, 0.1)]) == [0]
    assert pareto_front([_row("edm", float("nan"), 0.1), _row("edm", 2.0, 0.2)]) == [1]
    assert pareto_front([{"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 2, "b": 2}], x="a", y="b") == [0, 1]


def _trade_off() -> list[dict]:
    return [
        _row("edm", 10.0, 0.60, seed=0), _row("edm", 10.0, 0.60, seed=1),
        _row("ambient", 10.4, 0.30, 0.25, seed=0), _row("ambient", 10.6, 0.30, 0.25, seed=1),  # mean 10.5, +5%
        _row("ambient", 10.9, 0.20, 0.5),   # +9%: within 10%, fewest copies within -> the pick at 10%
        _row("ambient", 12.0, 0.10, 1.0),   # +20%
        _row("ambient", 15.0, 0.05, 2.0),   # +50%
    ]


def test_rule_of_thumb_picks_lowest_copies_within_tolerance() -> None:
    (c,) = choose_sigma_n(_trade_off(), tolerance=0.1)
    assert c["sigma_n"] == 0.5 and c["helps"] and c["copy_frac"] == pytest.approx(0.2)
    assert c["baseline_quality"] == pytest.approx(10.0) and "sigma_n = 0.5" in c["message"]
    assert choose_sigma_n(_trade_off(), tolerance=0.25)[0]["sigma_n"] == 1.0
    assert choose_sigma_n(_trade_off(), tolerance=0.06)[0]["sigma_n"] == 0.25  # seed mean 10.5 is +5%


def test_rule_of_thumb_when_nothing_qualifies_or_helps() -> None:
    rows = [_row("edm", 10.0, 0.6), _row("ambient", 13.0, 0.1, 0.5)]
    (c,) = choose_sigma_n(rows, tolerance=0.1)
    assert c["sigma_n"] is None and "no sigma_n keeps quality within 10%" in c["message"]
    rows = [_row("edm", 10.0, 0.2), _row("ambient", 10.0, 0.3, 0.5)]
    (c,) = choose_sigma_n(rows, tolerance=0.1)
    assert not c["helps"] and "did not help" in c["message"]
    (c,) = choose_sigma_n([_row("ambient", 10.0, 0.3, 0.5)])
    assert c["sigma_n"] is None and "no baseline" in c["message"]


def test_rule_of_thumb_weighs_sampling_noise_and_the_held_out_reference() -> None:
    # 500 samples each: 0.182 vs 0.150 is 1.36 standard errors (sqrt(.182*.818/500 + .15*.85/500) = 0.0235)
    rows = [_row("edm", 2.0, 0.182, n_samples=500), _row("ambient", 2.1, 0.150, 0.5, n_samples=500)]
    (c,) = choose_sigma_n(rows)
    assert c["sigma_n"] == 0.5 and not c["helps"] and "within sampling noise (1.4 standard errors" in c["message"]
    # three seeds of 500 samples each: the same fractions are 2.36 standard errors apart
    rows = [_row(m, q, f, sg, seed=k, n_samples=500) for k in range(3)
            for m, q, f, sg in (("edm", 2.0, 0.182, None), ("ambient", 2.1, 0.150, 0.5))]
    (c,) = choose_sigma_n(rows)
    assert c["helps"] and "2.4 standard errors" in c["message"]
    # a baseline that copies as rarely as held-out images (0.01) leaves nothing to remove
    rows = [_row("edm", 1.2, 0.004, n_samples=500), _row("ambient", 1.1, 0.002, 0.5, n_samples=500)]
    (c,) = choose_sigma_n(rows)
    assert c["sigma_n"] is None and not c["helps"] and "no more than unseen real images" in c["message"]


def test_rule_of_thumb_per_subset() -> None:
    rows = [_row("edm", 10.0, 0.6, subset=100), _row("ambient", 10.5, 0.3, 0.5, subset=100),
            _row("edm", 8.0, 0.1, subset=1000), _row("ambient", 8.1, 0.05, 1.0, subset=1000)]
    choices = choose_sigma_n(rows)
    assert [(c["subset"], c["sigma_n"]) for c in choices] == [(100, 0.5), (1000, 1.0)]


def test_summarize_averages_seeds() -> None:
    s = {(r["method"], r["param"]): r for r in summarize(_trade_off())}
    amb = s[("ambient", 0.25)]
    assert amb["seeds"] == 2 and amb["quality"] == pytest.approx(10.5)
    assert amb["quality_std"] == pytest.approx(math.sqrt(0.02))
    assert s[("ambient", 0.5)]["quality_std"] is None


def test_results_files_one_row_per_run(tmp_path: Path) -> None:
    rows = _trade_off()
    rows[0]["extra"] = None
    csv_path, json_path = write_results(rows, tmp_path)
    with open(csv_path) as f:
        parsed = list(csv.DictReader(f))
    assert len(parsed) == len(rows) and parsed[2]["sigma_n"] == "0.25" and parsed[0]["extra"] == ""
    assert read_results(tmp_path) == rows


def test_tables_text_and_markdown() -> None:
    rows = _trade_off()
    for r in rows:
        r.update({"pixels:>0.98": r["copy_frac"], "pixels:heldout>0.98": 0.02, "pixels:mean": 0.9,
                  "pixels:heldout_mean": 0.8, "quality_train_images": 12.0})
    text = format_table(rows)
    assert "FD_digits-net" in text and "sigma_n=0.25" in text and "+- " in text
    md = markdown_tables(rows, chosen={300: 0.5})
    assert "| held-out real images (reference) |" in md and "Algorithm 1 (ambient) (sigma_n=0.5)" in md
    assert "sigma_n=0.25" not in md  # only the chosen sigma_n
    assert "FID" not in md


def test_plot_pareto_writes_png(tmp_path: Path) -> None:
    rows = _trade_off() + [_row("masking", 11.0, 0.4), _row("edm", 9.0, 0.7, subset=100)]
    path = plot_pareto(rows, tmp_path / "pareto.png", title="test")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_make_row_uses_calibrated_or_fixed_threshold() -> None:
    report = {"features": "pixels", "thresholds": [0.9, 0.98], "similarity": {"mean": 0.9, "median": 0.9,
              "p95": 0.99, "max": 1.0}, "fraction_above": {"0.9": 0.5, "0.98": 0.2},
              "calibrated_thresholds": {"heldout_p99": 0.97, "heldout_p99.9": 0.985},
              "fraction_above_calibrated": {"heldout_p99": 0.3, "heldout_p99.9": 0.1},
              "heldout": {"similarity": {"mean": 0.8}, "fraction_above": {"0.9": 0.2, "0.98": 0.0},
                          "fraction_above_calibrated": {"heldout_p99": 0.01, "heldout_p99.9": 0.001}},
              "ratio_test": {"fraction_below": 0.05}}
    quality = {"fd_name": "FD_pixels", "fd": 3.0, "kid": {"mean": 0.1}, "precision_recall": None}
    row = make_row({"name": "x", "method": "edm"}, {"pixels": report}, quality)
    assert (row["copy_frac"], row["heldout_copy_frac"], row["copy_threshold"]) == (0.3, 0.01, 0.97)
    assert row["pixels:>0.98"] == 0.2 and row["pixels:heldout>0.9"] == 0.2 and row["pixels:ratio_carlini"] == 0.05
    row = make_row({"name": "x"}, {"pixels": report}, quality, copy_threshold=0.98)
    assert (row["copy_frac"], row["heldout_copy_frac"], row["copy_metric"]) == (0.2, 0.0, "pixels >= 0.98")


def test_rows_measured_differently_are_never_mixed() -> None:
    rows = [_row("edm", 10.0, 0.6), _row("ambient", 10.5, 0.3, 0.5),
            _row("edm", 10.0, 0.1, copy_metric="digits-net >= held-out p99"),  # same run, other feature space
            _row("edm", 9.0, 0.7, steps=4000)]  # another budget
    rows[1]["steps"] = rows[0]["steps"] = rows[2]["steps"] = 1000
    summary = summarize(rows)
    assert len(summary) == 4 and all(s["seeds"] == 1 for s in summary)
    choices = choose_sigma_n(rows)
    assert len(choices) == 3
    (picked,) = [c for c in choices if c["sigma_n"] is not None]
    assert picked["sigma_n"] == 0.5 and picked["baseline_copy_frac"] == 0.6
    assert "measured as" in format_table(rows)


def test_reproduce_bench_picks_sigma_n() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--out", "x", "--subsets", "100,300", "--sigma-n", "0.25,0.5"])
    sc = bench.configs(args)
    assert sc.subsets == (100, 300) and sc.values["sigma_n"] == (0.25, 0.5) and sc.eval.quality_features == "digits-net"
    assert bench.parse_args(["--out", "x"]).subsets == (100, 300, 1000)
    rows = _trade_off() + [_row("edm", 10.0, 0.1, subset=1000), _row("ambient", 14.0, 0.1, 0.5, subset=1000),
                           _row("ambient", 12.0, 0.1, 1.0, subset=1000)]
    picked = bench.pick_sigmas(rows, 0.1)
    assert picked[300][0] == 0.5 and picked[300][1].startswith("rule of thumb")
    assert picked[1000][0] == 1.0 and picked[1000][1].startswith("best quality")


def test_weightings_and_learning_rates_are_never_averaged_together() -> None:
    rows = [_row("edm", 2.0, 0.18, lr=1e-4, seed=0), _row("edm", 3.0, 0.004, lr=2e-5, seed=0),
            _row("ambient", 2.2, 0.15, 0.5, ambient_weight="plain", lr=1e-4),
            _row("ambient", 1.9, 0.005, 0.5, ambient_weight="compensated", lr=1e-4)]
    groups = summarize(rows)
    assert len(groups) == 4  # not 2: same method and sigma_n, other weighting or learning rate
    tables = markdown_tables(rows)
    assert "sigma_n=0.5, compensated" in tables and "lr=2e-05" in tables
    (c,) = choose_sigma_n(rows)
    # the baseline is the one trained at the candidates' learning rate; the compensated run is named
    assert c["baseline_copy_frac"] == 0.18 and c["ambient_weight"] == "compensated"
    assert "sigma_n = 0.5, compensated copies 0.005" in c["message"]


def test_reporting_asks_the_method_classes() -> None:
    """Tables group methods by what their class declares (diffusion/methods.py), not by name, and label them
    from the report layer (method_looks.py), which names every registered method."""
    from diffmem.diffusion.methods import METHOD_CLASSES
    from diffmem.method_looks import METHOD_LOOKS, title
    from diffmem.sweep.results import param_column

    assert set(METHOD_LOOKS) == set(METHOD_CLASSES) and title("ambient") == "Algorithm 1 (ambient)"
    assert title("new-method") == "new-method"  # an unlisted method reports under its own name
    assert {m: param_column(m) for m in METHOD_CLASSES} == {"edm": None, "ambient": "sigma_n", "masking": "mask_p",
                                                            "noisy-only": "sigma_n"}
    assert param_column("unknown") is None and param_column(None) is None
