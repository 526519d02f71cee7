"""diffmem frontier: paths averaged by hand, the verdict on constructed paths, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import run_cli
from diffmem.report.frontier import aggregate, compare_paths, markdown, summary_rows, verdicts


def _path(role: str, pts: list[tuple[float, float]], label: str = "x", held: float = 0.01,
          se: float = 0.01) -> dict:
    return {"subset": 50, "slug": label, "variant": label, "role": role, "seeds": [0], "points": [
        {"step": 100 * (i + 1), "epoch": 10.0 * (i + 1), "seeds": 1, "quality": q, "quality_std": 0.0,
         "copies": c, "copies_std": 0.0, "copies_se": se, "heldout": held} for i, (q, c) in enumerate(pts)]}


# the control improves in quality and copies more as it trains
CONTROL = _path("control", [(8.0, 0.0), (4.0, 0.05), (2.0, 0.3), (1.5, 0.6), (1.4, 0.8)], "baseline")


def test_a_slower_clock_does_not_beat_its_control() -> None:
    """The control's own path, stopped early (a slowed or early-stopped baseline), is never better."""
    slow = _path("candidate", CONTROL["points"] and [(8.0, 0.0), (4.0, 0.05), (2.0, 0.3)], "slow")
    r = compare_paths(slow, CONTROL)
    assert r["verdict"] == "does not beat" and "never reaches" in r["why"]


def test_same_quality_a_third_of_the_copies_removes() -> None:
    cand = _path("candidate", [(8.0, 0.0), (3.0, 0.0), (1.9, 0.05), (1.5, 0.1), (1.45, 0.2)], "good")
    r = compare_paths(cand, CONTROL)
    assert r["verdict"] == "removes"
    # worst control point: (1.5, 0.6), excess 0.59; within 10% (FD <= 1.65) the candidate's least excess is
    # on the segment 1.9 -> 1.5 at FD 1.65: 0.05 + 0.05 * ln(1.9/1.65) / ln(1.9/1.5), minus held-out 0.01
    interp = 0.05 + 0.05 * math.log(1.9 / 1.65) / math.log(1.9 / 1.5)
    assert r["ratio"] == pytest.approx((interp - 0.01) / 0.59)


def test_paths_are_interpolated_between_checkpoints() -> None:
    """A candidate that jumps past the control's quality between two checkpoints is judged where its path
    crosses that quality, not only at its saved checkpoints."""
    ctrl = _path("control", [(5.0, 0.2)], "b", held=0.0)
    cand = _path("candidate", [(6.0, 0.0), (4.0, 0.3)], "a", held=0.0)
    r = compare_paths(cand, ctrl)
    expect = 0.3 * math.log(6.0 / 5.5) / math.log(6.0 / 4.0)
    assert r["candidate"]["quality"] == pytest.approx(5.5) and r["candidate"]["copies"] == pytest.approx(expect)
    assert r["verdict"] == "removes"  # 0.064 <= 0.2 / 3


def test_no_copying_beyond_unseen_images_removes() -> None:
    """Excess over the held-out rate: a candidate at the held-out level has nothing left to remove."""
    ctrl = _path("control", [(3.0, 0.04)], "b", held=0.01, se=0.005)
    cand = _path("candidate", [(3.0, 0.018)], "a", held=0.01, se=0.005)
    assert compare_paths(cand, ctrl)["verdict"] == "removes"


def test_less_but_not_a_third_reduces_and_within_noise_does_not_beat() -> None:
    half = _path("candidate", [(4.0, 0.02), (2.0, 0.15), (1.5, 0.3), (1.4, 0.4)], "half")
    assert compare_paths(half, CONTROL)["verdict"] == "reduces"
    near = _path("candidate", [(4.0, 0.05), (2.0, 0.29), (1.5, 0.59), (1.4, 0.79)], "near", se=0.02)
    assert compare_paths(near, CONTROL)["verdict"] == "does not beat"


def test_no_copying_in_the_control_gives_no_verdict() -> None:
    flat = _path("control", [(3.0, 0.01), (2.0, 0.012)], "flat")
    cand = _path("candidate", [(2.0, 0.0)], "c")
    assert compare_paths(cand, flat)["verdict"] == "no copying to remove"
    rows = verdicts([flat, cand])
    assert rows[0]["passes"] is False  # nothing was removed against any control


def test_aggregate_means_and_standard_errors_by_hand() -> None:
    runs = []
    for seed, (q, c) in enumerate([(2.0, 0.2), (4.0, 0.4)]):
        runs.append({"subset": 50, "slug": "a", "variant": "A", "role": "control", "seed": seed,
                     "loss_std": 0.1 * (seed + 1), "update_rms": None, "loss": 1.0,
                     "path": [{"step": 10, "epoch": 1.0, "quality": q, "copies": c, "heldout_copies": 0.01,
                               "n": 100}]})
    (agg,) = aggregate(runs)
    (p,) = agg["points"]
    assert p["quality"] == pytest.approx(3.0) and p["copies"] == pytest.approx(0.3)
    assert p["copies_std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.2, 0.4
    binom = math.sqrt(0.3 * 0.7 / 200)
    seed_se = math.sqrt(0.02) / math.sqrt(2)
    assert p["copies_se"] == pytest.approx(max(binom, seed_se))
    assert agg["loss_std"] == pytest.approx(0.15) and agg["update_rms"] is None


def _summary_path(variant: str, role: str, pts: list[tuple[int, float, float]]) -> dict:
    return {"subset": 50, "slug": variant, "variant": variant, "role": role, "seeds": [0, 1], "loss": None,
            "loss_std": None, "update_rms": None,
            "points": [{"step": st, "epoch": st / 10, "seeds": 2, "quality": q, "quality_std": 0.1, "copies": c,
                        "copies_std": 0.01, "heldout": 0.01} for st, q, c in pts]}


def test_summary_rows_by_hand() -> None:
    """Reference: the first control's last quality (2.1, not its best 2.0); the bound is 1.1 x 2.1 = 2.31."""
    base = _summary_path("base", "control", [(100, 5.0, 0.1), (200, 2.5, 0.5), (300, 2.0, 0.8), (400, 2.1, 0.85)])
    slow = _summary_path("slow", "control", [(100, 8.0, 0.0), (200, 4.0, 0.2), (300, 3.0, 0.4)])
    cand = _summary_path("cand", "candidate", [(100, 6.0, 0.0), (200, 2.1, 0.3), (300, 2.15, 0.35), (400, 1.9, 0.6)])
    bound, rows = summary_rows([base, slow, cand], tolerance=0.1)
    assert bound == pytest.approx(2.31)
    by = {r["variant"]: r for r in rows}
    assert by["base"]["least"]["step"] == 300 and by["slow"]["least"] is None  # never as good as 2.31
    assert by["cand"]["least"]["step"] == 200  # fewest copies among steps 200, 300, 400 (FD <= 2.31)
    assert by["cand"]["best"]["step"] == 400 and by["cand"]["final"]["step"] == 400
    md = markdown([base, slow, cand], [], tolerance=0.1)
    assert "| cand | 2 | 1.90 ± 0.10 | 0.600 ± 0.010 | 1.90 (400) | 0.600 | 0.300 ± 0.010 (FD 2.10, step 200) |" in md
    assert "| slow | 2 |" in md and "never reached" in md and "FD <= 2.31" in md
    kid = markdown([base, slow, cand], [], tolerance=0.1, quality="KID")  # a frontier measured in KID says so
    assert "(KID 2.10, step 200)" in kid and "quality (KID, lower is better)" in kid and "FD" not in kid


def _tiny_args(out: Path, steps: str, weighting: str) -> list[str]:
    """A two-run frontier (baseline at lr x1, one weighting) small enough for a test."""
    return ["frontier", "--out", str(out), "--resolution", "8", "--subset", "30", "--seeds", "0", "--steps", steps,
            "--batch", "8", "--checkpoints", "2", "--n-samples", "50", "--sample-steps", "2", "--channels", "8,16",
            "--layers-per-block", "1", "--lr-factors", "1", "--weightings", weighting, "--device", "cpu",
            "--patience", "0"]


def test_frontier_command_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fr"
    args = _tiny_args(out, steps="8", weighting="capped")
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    data = json.loads((out / "frontier.json").read_text())
    assert [r["slug"] for r in data["runs"]] == ["edm-lr1", "ambient-capped4-sn1"]
    for r in data["runs"]:
        assert [p["step"] for p in r["path"]] == [4, 8]
        assert all(p["quality"] > 0 and 0 <= p["copies"] <= 1 and p["n"] == 50 for p in r["path"])
        assert r["update_rms"] is not None and r["update_rms"] > 0
    md = (out / "frontier.md").read_text()
    assert "Algorithm 1, capped 4, sigma_n 1" in md and "baseline, lr x1" in md
    assert all(0 < r["seconds"] <= data["seconds"] for r in data["runs"])  # each run's wall time, from its log
    assert "Run time (from the runs' logs, one process each): 2 runs, " in md
    assert (out / "frontier.png").stat().st_size > 0
    # while it trains, each run says it starts and prints a line per check
    base = data["runs"][0]
    assert "[frontier] n30-edm-lr1-seed0 starts" in stdout
    for p in base["path"]:
        assert f"[frontier] n30-edm-lr1-seed0 step {p['step']}: {100 * p['copies']:.1f}% copies, " in stdout
    # a second call resumes: finished runs are not trained again
    mtime = (out / "runs" / "n30-edm-lr1-seed0" / "log.jsonl").stat().st_mtime_ns
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "[frontier] 1/2 n30-edm-lr1-seed0: finished earlier, kept as it is" in stdout
    assert (out / "runs" / "n30-edm-lr1-seed0" / "log.jsonl").stat().st_mtime_ns == mtime
    # --report-only with a seed that never ran reports the finished runs only
    code, stdout, err = run_cli([*args[:8], "0,5", *args[9:], "--report-only"], capsys)
    assert code == 0, err
    assert len(json.loads((out / "frontier.json").read_text())["runs"]) == 2
    assert not (out / "runs" / "n30-edm-lr1-seed5").exists()


def test_a_bf16_frontier_trains_in_bf16_and_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    """--precision reaches every run's training (its losses differ from fp32's), and the configuration and
    every training record of the log name it."""
    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        code, _, err = run_cli([*_tiny_args(out, steps="4", weighting="plain"), "--precision", precision], capsys)
        assert code == 0, err
        assert json.loads((out / "frontier.json").read_text())["config"]["precision"] == precision
        recs = [json.loads(line) for line in (out / "runs" / "n30-edm-lr1-seed0" / "log.jsonl").read_text().splitlines()]
        train_recs = [r for r in recs if "loss" in r]
        assert train_recs and all(r.get("precision", "fp32") == precision for r in train_recs)
        losses[precision] = [r["loss"] for r in train_recs]
    assert losses["fp32"] != losses["bf16"]
    assert losses["fp32"] == pytest.approx(losses["bf16"], rel=0.05)


@pytest.mark.parametrize("extra, flag", [(["--checkpoints", "1"], "--checkpoints"),
                                         (["--weightings", "heavy"], "--weightings"),
                                         (["--weight-cap", "0"], "--weight-cap"),
                                         (["--lr-factors", "0"], "--lr-factors"),
                                         (["--n-samples", "3"], "--n-samples"),
                                         (["--precision", "fp8"], "--precision")])
def test_frontier_bad_input(tmp_path: Path, capsys, extra, flag) -> None:
    code, out, err = run_cli(["frontier", "--out", str(tmp_path / "fr"), "--resolution", "8", *extra], capsys)
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fr").exists()


def test_an_interrupted_frontier_resumes(tmp_path: Path, capsys, monkeypatch) -> None:
    """Killed during its first run (before any result was written), the same command continues."""
    import diffmem.sweep.frontier as frontier

    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fr"
    args = _tiny_args(out, steps="4", weighting="plain")
    real = frontier._train_one

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(frontier, "_train_one", killed)
    assert run_cli(args, capsys)[0] == 130  # Ctrl-C: "aborted"
    assert (out / "frontier.json").is_file()
    monkeypatch.setattr(frontier, "_train_one", real)
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "frontier.json").read_text())["runs"]


def test_a_frontier_folder_refuses_a_command_with_other_settings(tmp_path: Path, capsys, monkeypatch) -> None:
    """Other guard or training flags on a frontier's folder would mix two instruments: one line naming the
    setting, exit 2, nothing trained and frontier.json untouched. Other seeds or variants are another part of
    the same frontier; a frontier.json from before a setting existed counts it as its default."""
    import diffmem.sweep.frontier as frontier

    def killed(*a, **k):  # reaching a run's training means the command was accepted
        raise KeyboardInterrupt

    monkeypatch.setattr(frontier, "_train_one", killed)
    out = tmp_path / "fr"
    args = _tiny_args(out, steps="4", weighting="plain")
    assert run_cli(args, capsys)[0] == 130
    written = (out / "frontier.json").read_text()

    def given(flag: str, value: str) -> list[str]:
        i = args.index(flag) + 1 if flag in args else None
        return args[:i] + [value] + args[i + 1:] if i else args + [flag, value]

    for flag, value, needle in (("--n-samples", "60", "n_samples: 50 -> 60"),
                                ("--sample-precision", "bf16", "sample_precision: 'fp32' -> 'bf16'"),
                                ("--steps", "6", "base.optim.steps: 4 -> 6")):
        code, _, err = run_cli(given(flag, value), capsys)
        assert code == 2 and needle in err and "--out" in err and len(err.strip().splitlines()) == 1, err
        assert (out / "frontier.json").read_text() == written
    for flag, value in (("--seeds", "1"), ("--lr-factors", "0.5"), ("--sigma-n", "2")):
        assert run_cli(given(flag, value), capsys)[0] == 130, flag
    old = json.loads(written)
    del old["config"]["sample_precision"]  # written before the setting existed
    (out / "frontier.json").write_text(json.dumps(old))
    assert run_cli(args, capsys)[0] == 130
    assert run_cli(given("--sample-precision", "bf16"), capsys)[0] == 2


def test_qstar_plot_draws_each_comparison_and_is_skipped_without_qstar(tmp_path: Path) -> None:
    """One row per (candidate, control) with q*; no picture when no run has a q*."""
    from diffmem.report.frontier import plot_qstar, qstar_verdicts_of

    runs = [{"subset": 50, "variant": v, "role": role, "seed": s,
             "qstar": {"qstar": q * (1 + 0.01 * s), "step": 100, "safe_found": True}}
            for v, role, q in (("base", "control", 0.30), ("slow", "control", 0.36), ("cand", "candidate", 0.27))
            for s in range(4)]
    path = plot_qstar(qstar_verdicts_of(runs), tmp_path / "qstar.png")
    assert path is not None and path.stat().st_size > 1000
    assert plot_qstar(qstar_verdicts_of([{**r, "qstar": None} for r in runs]), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_a_runs_seconds_come_from_its_own_log_and_leave_out_a_pause(tmp_path: Path) -> None:
    """Training seconds (steps x batch / logged images/s) plus every check's seconds, so a report written later
    keeps what the run cost; a pause between sessions (the clock jumps a day at the resume) is not counted.
    A log without a timed record has none."""
    from diffmem.sweep.frontier import _log_means

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"optim": {"batch": 10}}))
    recs = [{"step": 50, "kimg": 0.5, "loss": 1.0, "images_per_s": 50.0, "time": 1000.0},
            {"step": 100, "monitor": {"seconds": 7.0}},
            {"step": 150, "kimg": 1.5, "loss": 0.5, "images_per_s": 25.0, "time": 1000.0 + 86400},
            {"step": 150, "monitor": {"seconds": 5.5}}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    means = _log_means(run)
    # 50 steps x 10 images at 50 img/s, then 100 steps x 10 at 25 img/s, then the two checks
    assert means["seconds"] == pytest.approx(10 + 40 + 7 + 5.5) and means["loss"] == pytest.approx(0.75)
    (run / "log.jsonl").write_text(json.dumps(recs[1]) + "\n")
    assert _log_means(run)["seconds"] is None


def test_time_left_to_the_cap_is_the_steps_left_at_the_recent_pace_plus_the_checks_left() -> None:
    """Brute force: 1000 steps of 10 images, logged at 20 img/s except the last window, slowed by a resume (2 img/s,
    which the median of the last 10 ignores); checks at 200 and 400 (gap 200) of 30 s and 50 s. At step 500,
    500 steps are left (250 s), and the checks at 600, 800 and 1000 (3 x 40 s)."""
    from diffmem.sweep.status import time_left

    recs = [{"step": s, "loss": 1.0, "images_per_s": 2.0 if s == 500 else 20.0} for s in range(50, 501, 50)]
    recs[3:3] = [{"step": 200, "monitor": {"seconds": 30.0}}]
    recs[8:8] = [{"step": 400, "monitor": {"seconds": 50.0}}]
    assert time_left(recs, [200, 400], 1000, 10) == pytest.approx(250 + 3 * 40)
    assert time_left(recs, [], 1000, 10) == pytest.approx(250)  # no check yet: training alone
    assert time_left(recs, [200, 400], 500, 10) == 0
    assert time_left([r for r in recs if "monitor" in r], [200, 400], 1000, 10) is None
    assert time_left(recs, [200, 400], None, 10) is None


def test_status_tells_where_each_run_stands_without_taking_the_lock(tmp_path: Path, capsys, monkeypatch) -> None:
    """--status reads the folder alone: finished runs with their release, an unfinished one, one whose
    trainer is alive (its lock names this process), and it answers while the frontier's lock is held."""
    import os

    from diffmem.lock import lock_path, locked
    from diffmem.release import choose_release
    from diffmem.sweep.frontier import run_checks
    from diffmem.sweep.status import frontier_status

    monkeypatch.setenv("DIFFMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fr"
    assert run_cli(_tiny_args(out, steps="8", weighting="plain"), capsys)[0] == 0
    base, cand = out / "runs" / "n30-edm-lr1-seed0", out / "runs" / "n30-ambient-plain-sn1-seed0"
    st = {r["name"]: r for r in frontier_status(out)["runs"]}
    assert st[base.name]["state"] == "finished" and st[base.name]["step"] == st[base.name]["steps"] == 8
    best = choose_release(run_checks(base))
    assert st[base.name]["release"] == {"step": best["step"], "quality": best["quality"]}
    assert st[base.name]["checks"] == len(run_checks(base)) >= 2
    (cand / "done.json").unlink()
    assert {r["name"]: r["state"] for r in frontier_status(out)["runs"]}[cand.name] == "unfinished"
    lock_path(cand).write_text(json.dumps({"pid": os.getpid(), "time": 0}))
    assert {r["name"]: r["state"] for r in frontier_status(out)["runs"]}[cand.name] == "training"
    lock_path(cand).unlink()
    with locked(out):
        code, text, err = run_cli(["frontier", "--out", str(out), "--status"], capsys)
    assert code == 0, err
    assert "2 run folders, 1 finished, of 2 planned" in text and f"| {cand.name} | unfinished | 8/8 |" in text
    assert text.count("| ~0 min |") == 1 and "to the cap:" in text  # only the unfinished run has time left
    code, _, err = run_cli(["frontier", "--out", str(tmp_path / "none"), "--status"], capsys)
    assert code == 2 and "not a frontier folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()
