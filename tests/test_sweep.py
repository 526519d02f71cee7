"""Tests for diffmem.sweep: resumable sweeps, one row per point, compare from run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.sweep import EvalOptions, SweepConfig, SweepPoint, collect_rows, point_config, run_sweep, sweep_points
from diffmem.sweep.runner import RUNS, run_point, write_outputs
from diffmem.sweep.spec import validate_sweep

EVAL = EvalOptions(n_samples=12, sample_steps=2, quality_features="pixels", pictures=False)


def _sweep_config(data: str, checkpoint_every: int = 3, **kw) -> SweepConfig:
    base = tiny_config(data, steps=3, batch=4, checkpoint_every=checkpoint_every, log_every=1)
    args = {"methods": ("edm", "ambient"), "values": {"sigma_n": (0.5,)}, "subsets": (12,), "seeds": (0,), "eval": EVAL}
    args.update(kw)
    return SweepConfig(base, **args)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepConfig, Path, object]:
    """A finished 2-point sweep (baseline + Algorithm 1) on 12 of 20 random 8x8 images."""
    root = tmp_path_factory.mktemp("sweep")
    data = str(write_npz(root / "data.npz", n=20))
    sc = _sweep_config(data)
    out = root / "out"
    result = run_sweep(sc, out, cache_dir=root / "cache", progress=False, echo=lambda s: None)
    return sc, out, result


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_points_grid_and_names() -> None:
    sc = _sweep_config("x.npz", methods=("edm", "ambient", "masking", "noisy-only"),
                       values={"sigma_n": (1.0, 0.5), "mask_p": (0.2,)}, subsets=(100, 300), seeds=(0, 1))
    points = sweep_points(sc)
    assert len(points) == 2 * 2 * (1 + 2 + 1 + 2)
    names = [p.name for p in points]
    assert len(set(names)) == len(names)
    assert names[:4] == ["n100-edm-seed0", "n100-ambient-sn0.5-seed0", "n100-ambient-sn1-seed0",
                         "n100-masking-p0.2-seed0"]
    cfg = point_config(sc, SweepPoint("ambient", 0.5, 300, 1))
    assert (cfg.method.name, cfg.method.sigma_n, cfg.data.subset, cfg.seed) == ("ambient", 0.5, 300, 1)
    assert cfg.optim == sc.base.optim and cfg.network == sc.base.network  # the same budget for every point


def test_sweep_writes_one_row_per_point(swept) -> None:
    sc, out, result = swept
    names = [p.name for p in sweep_points(sc)]
    assert result.trained == names and not result.skipped
    rows = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in rows] == names
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(names)
    for r in rows:
        assert r["steps"] == 3 and r["batch"] == 4 and r["subset"] == 12 and r["seed"] == 0 and r["n_samples"] == 12
        assert r["quality_metric"] == "FD_pixels" and r["quality"] >= 0
        assert 0 <= r["copy_frac"] <= 1 and r["copy_metric"] == "pixels >= held-out p99"
    assert [r["sigma_n"] for r in rows] == [None, 0.5]
    for name in ("pareto.png", "summary.txt", "results.md", "sweep.json"):
        assert (out / name).is_file()
    assert "Rule of thumb" in result.table


def test_sweep_resume_skips_finished_points(swept) -> None:
    sc, out, first = swept
    before = _mtimes(out / RUNS)
    again = run_sweep(sc, out, cache_dir=out.parent / "cache", progress=False, echo=lambda s: None)
    assert again.trained == [] and again.evaluated == []
    assert again.skipped == first.trained
    assert _mtimes(out / RUNS) == before  # nothing retrained, resampled or re-audited
    assert again.rows == first.rows


def test_sweep_extends_grid_without_retraining(swept, tmp_path: Path) -> None:
    sc, out, first = swept
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = _mtimes(copy / RUNS)
    sc2 = _sweep_config(sc.base.data.spec, values={"sigma_n": (0.5, 2.0)}, methods=("edm", "ambient"))
    res = run_sweep(sc2, copy, cache_dir=out.parent / "cache", progress=False, echo=lambda s: None)
    assert res.trained == ["n12-ambient-sn2-seed0"]
    assert res.skipped == ["n12-edm-seed0", "n12-ambient-sn0.5-seed0"]
    assert {k: v for k, v in _mtimes(copy / RUNS).items() if k in before} == before
    assert len(json.loads((copy / "results.json").read_text())) == 3


def test_interrupted_point_resumes(tmp_path: Path) -> None:
    from diffmem.train.loop import train

    data = str(write_npz(tmp_path / "data.npz", n=20))
    sc = _sweep_config(data, checkpoint_every=2, methods=("ambient",))
    point = sweep_points(sc)[0]
    run = tmp_path / "run"
    train(point_config(sc, point), run, progress=False, stop_after=2)  # "interrupted" after 2 of 3 steps
    row, status = run_point(sc, point, run, cache_dir=tmp_path / "cache")
    assert status == "trained"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # continued from the checkpoint at step 2, not restarted
    assert row["name"] == point.name
    assert run_point(sc, point, run, cache_dir=tmp_path / "cache")[1] == "skipped"


def test_changed_budget_is_refused(swept, tmp_path: Path) -> None:
    sc, out, _ = swept
    import dataclasses
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    base = dataclasses.replace(sc.base, optim=dataclasses.replace(sc.base.optim, steps=5))
    with pytest.raises(DiffmemError, match="another configuration"):
        run_sweep(dataclasses.replace(sc, base=base), copy, cache_dir=tmp_path / "cache", progress=False,
                  echo=lambda s: None)


def test_compare_reproduces_sweep_table(swept, tmp_path: Path) -> None:
    sc, out, result = swept
    runs = [out / RUNS / p.name for p in sweep_points(sc)]
    rows = collect_rows(runs, echo=lambda s: None)
    assert rows == result.rows
    assert collect_rows([out], echo=lambda s: None) == result.rows  # the sweep folder itself
    write_outputs(rows, tmp_path / "cmp")
    assert (tmp_path / "cmp" / "results.csv").read_text() == (out / "results.csv").read_text()
    assert (tmp_path / "cmp" / "summary.txt").read_text() == (out / "summary.txt").read_text()


def test_compare_reads_audit_folders(swept) -> None:
    sc, out, result = swept
    audit = out / RUNS / "n12-edm-seed0" / "audit-pixels"
    row = collect_rows([audit], echo=lambda s: None)[0]
    base = result.rows[0]
    assert row["method"] == "edm" and row["copy_frac"] == base["copy_frac"] and row["quality"] == base["quality"]


def test_compare_refuses_unknown_folder(tmp_path: Path) -> None:
    with pytest.raises(DiffmemError, match="neither a sweep folder"):
        collect_rows([tmp_path])
    with pytest.raises(DiffmemError, match="does not exist"):
        collect_rows([tmp_path / "nope"])


@pytest.mark.parametrize("change, message", [
    ({"methods": ()}, "--methods is empty"),
    ({"methods": ("edm", "dpm")}, "unknown method 'dpm'"),
    ({"values": {"sigma_n": ()}}, "--sigma-n is empty"),
    ({"values": {"sigma_n": (0.5, -1.0)}}, "needs a positive --sigma-n.*got -1"),
    ({"values": {"sigma_n": (0.0,)}}, "needs a positive --sigma-n"),
    ({"methods": ("noisy-only",), "values": {"sigma_n": (float("nan"),)}}, "needs a positive --sigma-n"),
    ({"seeds": ()}, "--seeds is empty"),
    ({"subsets": (1,)}, "--subset"),
    ({"methods": ("masking",), "values": {"mask_p": (1.5,)}}, "--mask-p in \\(0, 1\\).*got 1.5"),
    ({"methods": ("masking",), "values": {"mask_p": ()}}, "--mask-p is empty"),
    ({"methods": ("masking",), "settings": {"mask_delta": 1.0}}, "--mask-delta must be in"),
    ({"settings": {"ambient_weight": "heavy"}}, "--ambient-weight must be one of"),
])
def test_validate_sweep_refuses_bad_input(change: dict, message: str) -> None:
    with pytest.raises(DiffmemError, match=message):
        validate_sweep(_sweep_config("x.npz", **change))


def test_sweep_refuses_foreign_out_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DiffmemError, match="not a sweep"):
        run_sweep(_sweep_config(str(tmp_path / "data.npz")), tmp_path, progress=False, echo=lambda s: None)


def test_evaluate_run_remeasures_a_retrained_run(tmp_path: Path) -> None:
    from diffmem.sweep import evaluate_run
    from diffmem.train.loop import train

    data = str(write_npz(tmp_path / "data.npz", n=20))
    cfg = tiny_config(data, subset=12, steps=2, checkpoint_every=2)
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    with pytest.raises(DiffmemError, match="not finished"):
        evaluate_run(_unfinished(cfg, tmp_path), EVAL)
    first = evaluate_run(run, EVAL, cache_dir=tmp_path / "cache")
    stamp = (run / "result.json").stat().st_mtime_ns
    assert evaluate_run(run, EVAL, cache_dir=tmp_path / "cache") == first
    assert (run / "result.json").stat().st_mtime_ns == stamp  # measured once
    train(cfg, run, progress=False, overwrite=True)  # same config, same final checkpoint name
    evaluate_run(run, EVAL, cache_dir=tmp_path / "cache")
    assert (run / "result.json").stat().st_mtime_ns != stamp  # the stale result was not reused


def _unfinished(cfg, tmp_path: Path) -> Path:
    from diffmem.train.loop import train

    run = tmp_path / "unfinished"
    train(cfg, run, progress=False, stop_after=1)
    return run


@pytest.mark.slow
def test_parallel_jobs_match_sequential(request: pytest.FixtureRequest, swept, tmp_path: Path) -> None:
    """--jobs 2 (spawned processes) gives the same rows as the sequential sweep. Run with `pytest -m slow`."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("spawns two worker processes (~20 s); run with -m slow")
    sc, out, result = swept
    par = run_sweep(sc, tmp_path / "par", jobs=2, cache_dir=tmp_path / "cache", progress=False, echo=lambda s: None)
    assert sorted(par.trained) == sorted(result.trained)
    strip = ("run", "train_seconds", "sample_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in par.rows] == \
        [{k: v for k, v in r.items() if k not in strip} for r in result.rows]
