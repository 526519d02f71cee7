"""The bench scripts' own reporting: denoise_gap's image counts, weighting_tails' Hill k and spread."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_npz

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_denoise_gap_prints_how_many_images_of_each_set_it_averaged(tmp_path: Path, capsys) -> None:
    """A run on 4 of 12 images has 8 held-out ones: with --n 6 the table says 4 training against 6 held-out
    (it used to say "as many held-out images" while averaging unequal sets)."""
    from diffmem.train.loop import train

    data = write_npz(tmp_path / "d.npz", n=12)
    run = tmp_path / "run"
    train(tiny_config(str(data), subset=4, steps=2), run, progress=False)
    bench = _bench("denoise_gap")
    assert "as many held-out" not in bench.__doc__
    (n_train, n_held), rows = bench.gap(run, [0.5, 2.0], 6, 0)
    assert (n_train, n_held) == (4, 6) and len(rows) == 2 and all(tr > 0 and he > 0 for _, tr, he in rows)
    assert bench.main([str(run), "--sigmas", "0.5,2", "--n", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | images: train / held-out |")
    assert out[2].startswith("| run | 4 / 6 |")


def test_weighting_tails_reports_k_and_a_bootstrap_spread(capsys) -> None:
    """The Hill estimate's k is printed, with its bootstrap sd and the estimates at other k; the default tables
    are at sigma_n 1 (the frontier's) and 0.5. On Pareto(alpha = 2) draws the estimate and its spread are right:
    the bootstrap sd is near alpha / sqrt(k), the estimator's asymptotic sd (Hill 1975)."""
    bench = _bench("weighting_tails")
    rng = np.random.default_rng(0)
    pareto = torch.from_numpy(rng.pareto(2.0, 200_000) + 1.0)  # P(X > x) = x^-2, x >= 1
    k = 2000
    alpha, sd = (float(v) for v in bench.hill_cell(pareto, k, 30, 1).split(" ± "))
    assert alpha == pytest.approx(2.0, abs=4 * 2.0 / k**0.5)
    assert bench.hill_spread(pareto, k, 100, 1) == pytest.approx(2.0 / k**0.5, rel=0.15)
    assert sd == pytest.approx(bench.hill_spread(pareto, k, 30, 1), abs=0.005)
    assert bench.hill_cell(pareto[:50], 100, 5, 0) == "-"
    bench.optimum_table(1.0, 4000, 4.0, 0, 3)
    out = capsys.readouterr().out
    assert "sigma_n 1, 4000 draws, seed 0; Hill k = 10" in out and "loss tail index (k = 10)" in out
    assert "at k = 100 / 10^4" in out and out.count(" ± ") >= 3 * 3
    assert bench.parse_args([]).sigma_n == [1.0, 0.5]


def test_frontier_evidence_keeps_finished_runs_small_files_and_restores_them(tmp_path: Path) -> None:
    """keep: only finished runs, only their JSON and log (no checkpoints); restore: back into a new frontier
    folder, refusing one that already holds them."""
    bench = _bench("frontier_evidence")
    fr = tmp_path / "fr"
    for name, done in (("n50-edm-lr1-seed0", True), ("n50-edm-lr1-seed1", False)):
        run = fr / "runs" / name
        (run / "checkpoints" / "step-00000050").mkdir(parents=True)
        (run / "checkpoints" / "step-00000050" / "model.safetensors").write_bytes(b"x" * 100)
        (run / "log.jsonl").write_text('{"step": 50}\n')
        (run / "config.json").write_text("{}")
        if done:
            (run / "done.json").write_text('{"step": 50, "stopped": null}')
    (fr / "frontier.json").write_text('{"config": {}, "runs": null}')
    ev = tmp_path / "ev"
    assert bench.keep(fr, ev) == 1
    kept = ev / "runs" / "n50-edm-lr1-seed0"
    assert sorted(p.name for p in kept.iterdir()) == ["config.json", "done.json", "log.jsonl"]
    assert not (ev / "runs" / "n50-edm-lr1-seed1").exists() and (ev / "frontier.json").is_file()
    new = tmp_path / "new"
    assert bench.restore(ev, new) == 1
    assert (new / "runs" / "n50-edm-lr1-seed0" / "log.jsonl").read_text() == '{"step": 50}\n'
    assert (new / "frontier.json").is_file()
    with pytest.raises(SystemExit, match="already holds n50-edm-lr1-seed0"):
        bench.restore(ev, new)


def test_memoriser_quality_scores_copies_of_the_training_images_with_the_runs_guard(tmp_path: Path,
                                                                                  capsys) -> None:
    """The memoriser's "samples" are the run's own training images: scored in the guard's feature space
    they beat random noise images by far, the same seed gives the same figure, and the table has its row."""
    from diffmem.train.loop import train

    run = tmp_path / "run"
    train(tiny_config("builtin:digits", resolution=8, subset=10, steps=2), run, progress=False)
    (run / "release.json").write_text('{"released": {"step": 2, "quality": 0.5}, "settings": '
                                      '{"features": "pixels", "quality_features": "pixels", "quality_metric": "kid"}}')
    bench = _bench("memoriser_quality")
    metric, value = bench.memoriser_quality(run, 30, 0)
    assert metric.startswith("KID") and value == bench.memoriser_quality(run, 30, 0)[1]
    import json

    from diffmem.config import TrainConfig
    from diffmem.monitor import make_monitor
    from diffmem.train.loop import select_train_images

    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    selected = select_train_images(cfg)
    mon = make_monitor(cfg, n_samples=30, selected=selected, quality_features="pixels", quality_metric="kid")
    noise = np.random.default_rng(0).integers(0, 256, (30, *selected[0].images.shape[1:]), dtype=np.uint8)
    assert value < mon.quality_of(noise)["value"] / 2
    assert bench.main([str(run), "--n", "30"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith(f"| run | {metric} ")


def test_frontier_evidence_merge_of_a_frontier_split_by_seed_reports_as_the_whole(tmp_path: Path) -> None:
    """A kept frontier split into one part per seed and merged back gives the same runs, in the same order,
    and the same report as the whole; parts of another frontier, or a run given twice, are refused."""
    from diffmem.report.frontier import write_report

    bench = _bench("frontier_evidence")
    whole = json.loads((REPO / "docs" / "evidence" / "cifar16" / "frontier.json").read_text())
    seeds = sorted({r["seed"] for r in whole["runs"]})
    assert len(seeds) >= 2
    parts = []
    for s in reversed(seeds):  # given out of order: the merge puts them back
        part = {"config": {**whole["config"], "seeds": [s]}, "seconds": 1.0,
                "runs": [r for r in whole["runs"] if r["seed"] == s]}
        parts.append(tmp_path / f"seed{s}.json")
        parts[-1].write_text(json.dumps(part))
    merged = bench.merge(tmp_path / "merged", parts)
    assert [r["name"] for r in merged["runs"]] == [r["name"] for r in whole["runs"]]
    assert merged["config"] == {**whole["config"], "seeds": seeds} and merged["seconds"] == len(seeds)
    write_report(whole, tmp_path / "whole")
    assert (tmp_path / "merged" / "frontier.md").read_text() == (tmp_path / "whole" / "frontier.md").read_text()
    assert json.loads((tmp_path / "merged" / "frontier.json").read_text())["runs"] == merged["runs"]

    other = json.loads(parts[0].read_text())
    other["config"]["n_samples"] = 7
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="n_samples differ"):
        bench.merge(tmp_path / "bad", [parts[1], tmp_path / "other.json"])
    with pytest.raises(SystemExit, match="is in more than one"):
        bench.merge(tmp_path / "bad", [parts[0], parts[0]])
    assert not (tmp_path / "bad").exists()


def test_kept_evidence_runs_are_not_ignored_by_git() -> None:
    """bench/frontier_evidence.py keeps runs under docs/evidence/<name>/runs/: git must track them (a `runs/`
    ignore pattern once matched there too, and the kept runs of two frontiers never reached the repository)."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    kept = "/".join(("docs", "evidence", "any", "runs", "n300-edm-lr1-seed0", "log.jsonl"))  # not a citation
    r = subprocess.run(["git", "check-ignore", "-q", kept], cwd=REPO, capture_output=True)
    assert r.returncode == 1, f"git ignores {kept}"
    r = subprocess.run(["git", "check-ignore", "-q", "runs/cifar16/frontier.json"], cwd=REPO, capture_output=True)
    assert r.returncode == 0, "the working runs/ folder should stay ignored"


def test_a_suspended_frontier_run_restored_elsewhere_ends_as_if_never_stopped(tmp_path: Path, capsys,
                                                                                monkeypatch) -> None:
    """suspend keeps an unfinished run's newest checkpoints (not the older ones); restored into a new folder,
    the same command finishes it with the same checks, losses and release as a run that was never stopped;
    keep then drops the suspended copy."""
    import diffmem.train.loop as loop
    from conftest import run_cli

    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    bench = _bench("frontier_evidence")

    def args(out: Path) -> list[str]:
        return ["frontier", "--out", str(out), "--resolution", "8", "--subset", "30", "--seeds", "0", "--steps",
                "16", "--batch", "8", "--checkpoints", "8", "--check-every", "2", "--n-samples", "50",
                "--sample-steps", "2", "--channels", "8,16", "--layers-per-block", "1", "--lr-factors", "1",
                "--weightings", "plain", "--sigma-n", "1", "--device", "cpu", "--patience", "0"]

    assert run_cli(args(tmp_path / "whole"), capsys)[0] == 0
    real, saves = loop.save_checkpoint, []

    def killed_after_five(*a, **k):  # a machine lost right after the checkpoint at step 10
        out = real(*a, **k)
        saves.append(a[1])
        if len(saves) == 5:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_five)
    assert run_cli(args(tmp_path / "cut"), capsys)[0] == 130
    monkeypatch.setattr(loop, "save_checkpoint", real)
    ev = tmp_path / "ev"
    assert bench.suspend(tmp_path / "cut", ev) == 1
    name = "n30-edm-lr1-seed0"
    kept = ev / "resume" / name / "checkpoints"
    assert sorted(p.name for p in kept.glob("step-*")) == ["step-00000008", "step-00000010"]  # released at 8
    assert not (kept / "step-00000008" / "state.pt").exists()  # the release keeps only its EMA weights
    assert (kept / "step-00000010" / "state.pt").is_file() and (kept / "LATEST").read_text().strip() == "step-00000010"

    new = tmp_path / "new"
    assert bench.restore(ev, new) == 1
    assert run_cli(args(new), capsys)[0] == 0

    def log(out: Path) -> list[dict]:
        recs = [json.loads(line) for line in (out / "runs" / name / "log.jsonl").read_text().splitlines()]
        return [{"step": r["step"], "loss": r.get("loss"), "monitor": {k: r["monitor"].get(k) for k in
                 ("safety", "quality")} if "monitor" in r else None} for r in recs if "loss" in r or "monitor" in r]

    def release(out: Path) -> dict:
        rec = json.loads((out / "runs" / name / "release.json").read_text())
        return {k: rec[k] for k in ("released", "stopped", "finished")}

    assert log(new) == log(tmp_path / "whole") and release(new) == release(tmp_path / "whole")
    assert bench.keep(new, ev) == 2 and not (ev / "resume" / name).exists()


def test_contradiction_power_matches_a_monte_carlo_of_the_rule() -> None:
    """The closed form of the pre-registered check's error and power against draws of the rule itself."""
    bench = _bench("contradiction_check")
    rng = np.random.default_rng(0)
    for change, sd in ((0.0, 0.10), (np.log(1.2), 0.10), (np.log(0.8), 0.15)):
        d = rng.normal(change, sd, size=(100_000, 2))
        mc = np.mean([bench.contradicts("no difference shown", np.exp(row)) for row in d])
        p = bench.contradiction_power(change, sd)
        assert abs(mc - p) < 4 * np.sqrt(p * (1 - p) / len(d)) + 1e-4, (change, sd, mc, p)
    assert bench.contradiction_power(0.0, 0.10) == pytest.approx(0.009, abs=0.001)  # as pre-registered
    assert bench.contradiction_power(np.log(1.2), 0.10) == pytest.approx(0.44, abs=0.01)


def test_contradiction_check_applies_the_pre_registered_rule_against_the_checks_best_control() -> None:
    bench = _bench("contradiction_check")
    assert bench.contradicts("worse", [0.9, 0.95]) and not bench.contradicts("worse", [0.9, 1.01])
    assert bench.contradicts("better", [1.01, 1.2]) and not bench.contradicts("better", [0.99, 1.2])
    assert bench.contradicts("no difference shown", [1.16, 1.3]) and bench.contradicts("no difference shown", [0.8, 0.84])
    assert not bench.contradicts("no difference shown", [1.16, 1.14]) and not bench.contradicts("no difference shown",
                                                                                                 [0.8, 1.2])
    verdict_data = json.loads((REPO / "docs" / "evidence" / "cifar16" / "frontier.json").read_text())
    s1, s27 = "Algorithm 1, plain, sigma_n 1", "Algorithm 1, plain, sigma_n 2.7"

    def run(variant: str, role: str, seed: int, q: float | None) -> dict:
        return {"variant": variant, "role": role, "seed": seed, "subset": 300, "qstar": {"qstar": q}}

    # lr x1/2 has the lower mean ln q* (0.9, 1.2 against 1.0, 1.0), so it is the best control though it loses
    # on seed 1; sigma_n 1 beats it on both seeds (worse at 16x16: contradicted), sigma_n 2.7 is +20% and -10%
    q = {"baseline, lr x1": (1.0, 1.0), "baseline, lr x0.5": (0.9, 1.08), s1: (0.85, 1.0), s27: (1.08, 0.972)}
    runs = [run(v, "candidate" if v.startswith("Algorithm") else "control", s, q[v][s]) for v in q for s in (0, 1)]
    data = {"config": {"seeds": [0, 1]}, "runs": runs}
    rows = {r["candidate"]: r for r in bench.check(verdict_data, data)}
    assert rows[s1]["best_control"] == "baseline, lr x0.5" and rows[s1]["verdict"] == "worse"
    assert rows[s1]["outcome"] == "contradicted" and rows[s1]["ratios"] == pytest.approx([0.85 / 0.9, 1.0 / 1.08])
    assert rows[s27]["verdict"] == "no difference shown" and rows[s27]["outcome"] == "not contradicted"
    runs[-1]["qstar"] = {"qstar": None}  # a run without q* yet: the best control is not known
    assert {r["outcome"] for r in bench.check(verdict_data, data)} == {"incomplete"}
