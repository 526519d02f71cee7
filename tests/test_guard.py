"""Guarded training and the release: what is kept, when training stops, resume after a kill, the certificate,
`--checkpoint release|latest|step-N`, and the refusals (diffmem.guard, diffmem.release, train/watch.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.safety import Calibration, safety_test
from diffmem.guard import Guard, GuardConfig, make_guard, release_run, trained_with, validate_guard
from diffmem.release import RELEASE_JSON, check_due, choose_release, read_release, release_sentence, stop_reason
from diffmem.train.checkpoint import checkpoint_steps, load_denoiser, resolve_checkpoint
from diffmem.train.loop import train
from diffmem.train.rundir import DONE, LOG

CAL = Calibration(0.5, 1747)


class ScheduledMonitor:
    """A monitor whose copies and quality at each step are given: {step: (copies of 400, quality)}."""

    def __init__(self, schedule: dict[int, tuple[int, float]], fail_once_at: int | None = None) -> None:
        self.schedule, self.fail_once_at, self.calls = schedule, fail_once_at, []

    def __call__(self, step: int, ema_model) -> dict:
        if step == self.fail_once_at:
            self.fail_once_at = None
            raise KeyboardInterrupt  # a kill between the checkpoint and its check
        self.calls.append(step)
        k, q = self.schedule[step]
        return {"features": "pixels", "n_samples": 400, "calibration": CAL.to_dict(),
                "safety": safety_test(k, 400, CAL).to_dict(), "quality": {"metric": "KID_test", "value": q}}


SCHEDULE = {2: (0, 5.0), 4: (3, 3.0), 6: (4, 4.0), 8: (60, 2.0), 10: (90, 1.5), 12: (120, 1.2)}


def _guarded(cfg, run: Path, monitor: ScheduledMonitor, echo=None, **gc) -> Path:
    guard = Guard(monitor, GuardConfig(**gc), run, cfg.checkpoint_every, echo=echo)
    return train(cfg, run, progress=False, monitor=guard, monitor_every=cfg.checkpoint_every, keep_checkpoints=1)


def _release(run: Path) -> dict:
    rec = json.loads((run / RELEASE_JSON).read_text())
    rec.pop("time")
    return rec


def test_guard_keeps_the_best_safe_checkpoint_and_stops_once_copying_set_in(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=12)
    lines: list[str] = []
    run = _guarded(cfg, tmp_path / "run", ScheduledMonitor(SCHEDULE), echo=lines.append)
    rec = _release(run)
    assert rec["released"]["step"] == 4  # safe and best quality among the safe checks (2, 4, 6)
    assert lines[:2] == ["step 2: 0.0% copies, safe, KID_test 5.00 (release so far: step 2)",
                         "step 4: 0.8% copies, safe, KID_test 3.00 (release so far: step 4)"]
    assert lines[3].startswith("step 8: 15.0% copies, NOT safe") and lines[3].endswith("(release so far: step 4)")
    assert len(lines) == 5
    assert rec["stopped"] and "steps 8, 10" in rec["stopped"] and rec["finished"]
    assert rec["last"]["step"] == 10 and not rec["last"]["safe"]
    assert [c["step"] for c in rec["checks"]] == [2, 4, 6, 8, 10]
    assert checkpoint_steps(run) == [4, 10]  # keep_checkpoints=1 plus the released one
    done = json.loads((run / DONE).read_text())
    assert done["step"] == 10 and done["stopped"] == rec["stopped"]
    assert load_denoiser(run, checkpoint="release")[2]["step"] == 4
    assert load_denoiser(run, checkpoint="latest")[2]["step"] == 10
    assert "Released: edm at step 4" in release_sentence(rec, "edm") and "stopped at step 10" in \
        release_sentence(rec, "edm")


def test_the_certificate_says_how_the_released_weights_were_trained(make_config, tmp_path: Path) -> None:
    """release.json's "trained": the training precisions logged up to the released step (a record without one
    predates --precision: fp32; a run resumed in another precision lists both once the release is past the
    change) and the diffmem version."""
    import diffmem

    cfg = make_config(steps=12)
    run = tmp_path / "run"
    guard = Guard(ScheduledMonitor(SCHEDULE), GuardConfig(), run, cfg.checkpoint_every)
    train(cfg, run, progress=False, monitor=guard, monitor_every=cfg.checkpoint_every, precision="bf16")
    assert _release(run)["trained"] == {"precision": ["bf16"], "diffmem": diffmem.__version__}
    old = tmp_path / "old"
    old.mkdir()
    recs = [{"step": 2, "loss": 1.0}, {"step": 2, "monitor": {}}, {"step": 4, "loss": 1.0, "precision": "bf16"},
            {"step": 6, "loss": 1.0, "precision": "fp32"}]
    (old / LOG).write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert trained_with(old, 2)["precision"] == ["fp32"]
    assert trained_with(old, 4)["precision"] == ["bf16", "fp32"]
    assert trained_with(old, None)["precision"] == trained_with(old, 6)["precision"] == ["bf16", "fp32"]
    (old / LOG).write_text(json.dumps(recs[2]) + "\n" + json.dumps(recs[3]) + "\n")
    assert trained_with(old, 4)["precision"] == ["bf16"]  # the fp32 steps after the release are not its


def test_the_release_page_audits_against_the_guards_own_reference(tmp_path: Path) -> None:
    """With more held-out images than the guard's reference (2000), the page's audit uses the same seeded
    subset, so its threshold and copy count are the certificate's, not a near miss from another reference."""
    from diffmem.report.release import write_release_report

    spec = str(write_npz(tmp_path / "big.npz", n=2100, res=8, channels=1, seed=3))
    cfg = tiny_config(spec, subset=20, steps=2)
    run = tmp_path / "run"
    guard = make_guard(cfg, GuardConfig(n_samples=200, quality_features="pixels", patience=0), run)
    train(cfg, run, progress=False, monitor=guard, monitor_every=cfg.checkpoint_every)
    released = read_release(run)["released"]
    assert released["safety"]["n_heldout"] == 2000 < 2080
    write_release_report(run)
    audit = json.loads((run / "release" / "audit" / "report.json").read_text())
    assert audit["calibrated_thresholds"]["heldout_p99"] == pytest.approx(released["threshold"], abs=1e-6)
    assert audit["fraction_above_calibrated"]["heldout_p99"] == pytest.approx(released["safety"]["copy_rate"])


def test_a_run_with_no_safe_check_gets_a_page_that_says_so(make_config, tmp_path: Path) -> None:
    from diffmem.report.release import write_release_report

    cfg = make_config(steps=4)
    run = _guarded(cfg, tmp_path / "run", ScheduledMonitor({2: (90, 1.0), 4: (120, 0.5)}), patience=0)
    page = write_release_report(run).read_text()
    assert "Not released: no checked checkpoint of edm was safe" in page and ">released</td>" not in page
    assert "nothing is released: check earlier" in page and "What it certifies" not in page
    assert not (run / "release" / "audit").exists() and (run / "release" / "paths.png").is_file()


def test_without_a_stopping_rule_the_run_goes_to_its_end(make_config, tmp_path: Path) -> None:
    run = _guarded(make_config(steps=12), tmp_path / "run", ScheduledMonitor(SCHEDULE), patience=0)
    rec = _release(run)
    assert rec["stopped"] is None and rec["last"]["step"] == 12 and rec["released"]["step"] == 4


def test_a_kill_between_checkpoint_and_check_resumes_to_the_same_release(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=12)
    whole = _guarded(cfg, tmp_path / "whole", ScheduledMonitor(SCHEDULE))
    mon = ScheduledMonitor(SCHEDULE, fail_once_at=6)
    with pytest.raises(KeyboardInterrupt):
        _guarded(cfg, tmp_path / "killed", mon)
    assert checkpoint_steps(tmp_path / "killed")[-1] == 6  # checkpoint 6 was written, its check was not
    _guarded(cfg, tmp_path / "killed", mon)
    assert mon.calls == [2, 4, 6, 8, 10]  # the missing check ran first on resume, nothing twice
    assert _release(tmp_path / "killed") == _release(whole)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / LOG).read_text().splitlines()
             if "monitor" in line]
    assert steps == [2, 4, 6, 8, 10]


def test_the_check_a_resume_makes_first_is_not_counted_as_training(make_config, tmp_path: Path) -> None:
    """images/s times training alone, so the window after the check a resume runs first (here slowed to 1 s)
    is as fast as the others: each logged window's images / its images/s stays far below that second."""
    import time

    class SlowAt(ScheduledMonitor):
        def __call__(self, step: int, ema_model) -> dict:
            if step == 6 and self.fail_once_at is None:
                time.sleep(1.0)
            return super().__call__(step, ema_model)

    cfg = make_config(steps=12)
    mon = SlowAt(SCHEDULE, fail_once_at=6)
    with pytest.raises(KeyboardInterrupt):
        _guarded(cfg, tmp_path / "run", mon)
    _guarded(cfg, tmp_path / "run", mon)
    recs = [json.loads(line) for line in (tmp_path / "run" / LOG).read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    windows = [(b["kimg"] - a["kimg"]) * 1000 / b["images_per_s"] for a, b in zip(train, train[1:])]
    assert max(windows) < 0.5, windows


def test_sparse_checks_become_dense_where_copying_sets_in() -> None:
    safe = {"safety": {"p_value": 0.9}}
    hint = {"safety": {"p_value": 0.2}}
    assert [s for s in range(1, 13) if check_due(s, 1, 4, [safe])] == [4, 8, 12]
    assert [s for s in range(1, 13) if check_due(s, 1, 4, [hint])] == list(range(1, 13))
    assert all(check_due(s, 1, 1, [safe]) for s in range(1, 5))


def test_dense_checks_in_a_run(make_config, tmp_path: Path) -> None:
    schedule = {s: (0, 10.0 - s) for s in range(1, 13)}
    schedule.update({4: (8, 6.0), 5: (40, 5.0), 6: (60, 4.0)})  # a hint at 4 (p < 0.5), unsafe at 5 and 6
    cfg = make_config(steps=12, checkpoint_every=1)
    mon = ScheduledMonitor(schedule)
    _guarded(cfg, tmp_path / "run", mon, every=4)
    # every 4th checkpoint; the hint at 4 goes back to 1-3 (kept for it), then each one; stopped after 6
    assert mon.calls == [4, 1, 2, 3, 5, 6]


def test_an_unsafe_check_goes_back_to_the_checkpoints_it_skipped(make_config, tmp_path: Path) -> None:
    schedule = {s: (0 if s < 6 else 60, 10.0 - s) for s in range(1, 13)}
    cfg = make_config(steps=12, checkpoint_every=1)
    mon = ScheduledMonitor(schedule)
    run = _guarded(cfg, tmp_path / "run", mon, every=4)
    assert mon.calls == [4, 8, 5, 6, 7]  # 8 is unsafe: back to 5, 6, 7; 6 and 7 unsafe too, so it stops at 8
    rec = _release(run)
    assert rec["released"]["step"] == 5 and [c["step"] for c in rec["checks"]] == [4, 5, 6, 7, 8]
    assert json.loads((run / DONE).read_text())["step"] == 8
    logged = sorted(json.loads(line)["step"] for line in (run / LOG).read_text().splitlines() if "monitor" in line)
    assert logged == [4, 5, 6, 7, 8]
    assert 5 in checkpoint_steps(run)  # the released one is kept


def test_choose_release_and_stop_reason_edge_cases() -> None:
    c = lambda step, safe, q: {"step": step, "safe": safe, "quality": q}  # noqa: E731
    assert choose_release([c(1, False, 1.0)]) is None
    assert choose_release([c(1, True, 2.0), c(2, True, 2.0)])["step"] == 1  # a tie: the earlier
    assert choose_release([c(1, True, None), c(2, True, None)])["step"] == 2  # no quality: the latest safe
    assert stop_reason([c(1, False, 1.0)], 2) is None and stop_reason([c(1, False, 1.0)] * 2, 0) is None
    assert stop_reason([c(1, True, 1.0), c(2, False, 1.0), c(3, False, 1.0)], 2)


def test_validate_guard_refuses_what_cannot_work(make_config) -> None:
    cfg = make_config(steps=12)
    with pytest.raises(DiffmemError, match="--guard-patience 6 cannot be met"):
        validate_guard(GuardConfig(patience=6), cfg)
    with pytest.raises(DiffmemError, match="802 held-out images"):
        validate_guard(GuardConfig(), cfg, n_heldout=30)
    with pytest.raises(DiffmemError, match="--guard-samples"):
        validate_guard(GuardConfig(n_samples=10), cfg)
    with pytest.raises(DiffmemError, match="--guard-level"):
        validate_guard(GuardConfig(level=0.7), cfg)
    with pytest.raises(DiffmemError, match="--guard-every"):
        validate_guard(GuardConfig(every=0), cfg)
    validate_guard(GuardConfig(), cfg, n_heldout=802)


def test_checkpoint_names_are_resolved_or_refused_listing_what_exists(make_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_config(steps=4), run, progress=False)
    assert resolve_checkpoint(run, "latest").name == "step-00000004"
    assert resolve_checkpoint(run, "step-2").name == "step-00000002"
    with pytest.raises(DiffmemError, match="no checkpoint at step 3; it has step-2, step-4"):
        resolve_checkpoint(run, "step-3")
    with pytest.raises(DiffmemError, match="has no release"):
        resolve_checkpoint(run, "release")
    with pytest.raises(DiffmemError, match="release, latest or step-N"):
        resolve_checkpoint(run, "best")
    (run / RELEASE_JSON).write_text(json.dumps({"released": None}))
    with pytest.raises(DiffmemError, match="no safe checkpoint"):
        resolve_checkpoint(run, "release")


@pytest.fixture
def big_data(tmp_path: Path) -> str:
    """850 random 8x8 images: a subset of 20 leaves 830 held out, enough for the guard's p99."""
    return str(write_npz(tmp_path / "big.npz", n=850))


def test_a_real_guard_releases_and_sample_release_draws_the_released_samples(big_data: str, tmp_path: Path) -> None:
    import diffmem

    cfg = tiny_config(big_data, subset=20, steps=4)
    run = tmp_path / "run"
    guard = make_guard(cfg, GuardConfig(n_samples=50, quality_features="pixels", patience=0), run)
    train(cfg, run, progress=False, monitor=guard, monitor_every=cfg.checkpoint_every)
    rec = read_release(run)
    assert rec["released"] is not None and rec["settings"]["quality_features"] == "pixels"
    s = rec["released"]["safety"]
    assert s["n"] == 50 and s["n_heldout"] == 830 and 0 <= s["excess_high"] <= 1
    released = np.load(run / "release" / "released.npz")["images"]
    again = diffmem.sample(run, 50, seed=0, checkpoint="release")
    assert np.array_equal(released, again)
    assert rec["released"]["quality_metric"] == "KID_pixels"


def test_release_afterwards_refuses_pruned_runs_unless_allowed(big_data: str, tmp_path: Path) -> None:
    cfg = tiny_config(big_data, subset=20, steps=8)
    pruned, kept = tmp_path / "pruned", tmp_path / "kept"
    train(cfg, pruned, progress=False)
    with pytest.raises(DiffmemError, match="--keep-checkpoints all"):
        release_run(pruned, GuardConfig(n_samples=50, quality_features="pixels"))
    assert not (pruned / RELEASE_JSON).exists()
    rec = release_run(pruned, GuardConfig(n_samples=50, quality_features="pixels"), allow_pruned=True)
    assert [c["step"] for c in rec["checks"]] == [6, 8]
    train(cfg, kept, progress=False, keep_checkpoints=0)
    rec = release_run(kept, GuardConfig(n_samples=50, quality_features="pixels"))
    assert [c["step"] for c in rec["checks"]] == [2, 4, 6, 8] and rec["finished"]


def test_cli_refusals_are_one_line(big_data: str, tmp_path: Path, capsys) -> None:
    base = ["train", "--data", big_data, "--resolution", "8", "--channels", "8,16", "--layers-per-block", "1",
            "--steps", "8", "--checkpoint-every", "2", "--batch", "4", "--quiet"]
    code, _, err = run_cli(base + ["--subset", "100", "--guard", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "802 held-out images" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(base + ["--subset", "20", "--guard", "--guard-patience", "5", "--out",
                                   str(tmp_path / "b")], capsys)
    assert code == 2 and "cannot be met" in err and not (tmp_path / "b").exists()
    code, _, err = run_cli(base + ["--subset", "20", "--keep-checkpoints", "none", "--out", str(tmp_path / "c")],
                           capsys)
    assert code == 2 and "--keep-checkpoints" in err
    code, out, err = run_cli(base + ["--subset", "20", "--out", str(tmp_path / "d")], capsys)
    assert code == 0
    code, out, err = run_cli(base + ["--subset", "20", "--guard", "--guard-samples", "50", "--guard-patience", "0",
                                     "--guard-quality", "pixels", "--out", str(tmp_path / "e")], capsys)
    assert code == 0, err
    assert "Released: edm at step" in out and "the guard's checks took" in out and "--checkpoint release" in out
    assert "[guard]" not in out  # --quiet
    run_e = str(tmp_path / "e")
    page = (tmp_path / "e" / "release" / "report.html").read_text()
    rec = read_release(tmp_path / "e")
    assert release_sentence(rec, "edm") in page and "to show: " in out
    assert all(f'<td data-label="step">{c["step"]}</td>' in page for c in rec["checks"])
    assert page.count(">released</td>") == 1
    assert (tmp_path / "e" / "release" / "audit" / "nearest.csv").is_file()
    for extra, warned in (([], False), (["--steps", "5", "--churn", "1"], True)):
        code, out, err = run_cli(["sample", "--run", run_e, "--checkpoint", "release", "--n", "4", "--quiet",
                                  "--out", str(tmp_path / f"s{len(extra)}.npz"), *extra], capsys)
        assert code == 0 and ("warning: the certificate covers samples drawn as the guard drew them" in err) == warned
    assert "--steps 5 (the guard's: 18); --churn 1.0 (the guard's: 0.0)" in err and "diffmem audit --samples" in err
    code, out, err = run_cli(base[:-1] + ["--subset", "20", "--guard", "--guard-samples", "50", "--guard-patience",
                                          "0", "--guard-quality", "pixels", "--steps", "4", "--out",
                                          str(tmp_path / "f")], capsys)
    assert code == 0, err
    assert "[guard] step 2: " in out and "[guard] step 4: " in out and "(release so far: step " in out
    code, out, err = run_cli(["audit", "--run", run_e, "--checkpoint", "release", "--n-samples", "20", "--out",
                              str(tmp_path / "audit"), "--quiet", "--no-cache"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "audit" / "report.json").read_text())["n_samples"] == 20
    code, out, err = run_cli(["fid", "--run", run_e, "--checkpoint", "latest", "--n-samples", "20", "--ref", big_data,
                              "--features", "pixels", "--quiet", "--no-cache"], capsys)
    assert code == 0 and out.startswith("FD_pixels: "), err
    for args, needle in ((["audit", "--checkpoint", "release", "--train", big_data], "give --run RUN too"),
                         (["audit", "--run", run_e, "--samples", "x.npz", "--checkpoint", "release"], "not both"),
                         (["audit", "--run", run_e], "give --samples, or --run RUN with --checkpoint"),
                         (["fid", "--run", run_e, "--checkpoint", "step-1", "--ref", big_data], "no checkpoint at step 1")):
        code, _, err = run_cli(args + ["--out", str(tmp_path / "never")] if args[0] == "audit" else args, capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = run_cli(["sample", "--run", str(tmp_path / "d"), "--checkpoint", "step-3", "--n", "4",
                            "--out", str(tmp_path / "s.npz")], capsys)
    assert code == 2 and "step-6, step-8" in err and not (tmp_path / "s.npz").exists()
    code, _, err = run_cli(["release", "--run", str(tmp_path / "d"), "--report-only"], capsys)
    assert code == 2 and "has no release" in err and not (tmp_path / "d" / "release").exists()
    (tmp_path / "e" / "release" / "report.html").unlink()
    code, out, err = run_cli(["release", "--run", run_e, "--report-only"], capsys)
    assert code == 0 and (tmp_path / "e" / "release" / "report.html").read_text() == page, err
    code, _, err = run_cli(["release", "--run", run_e, "--report-only", "--samples", "50", "--metric", "fd"], capsys)
    assert code == 2 and "--samples, --metric would be ignored" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["release", "--run", str(tmp_path / "d"), "--samples", "50"], capsys)
    assert code == 2 and "--allow-pruned" in err and not (tmp_path / "d" / RELEASE_JSON).exists()
    code, out, _ = run_cli(["release", "--run", str(tmp_path / "d"), "--samples", "50", "--allow-pruned"], capsys)
    assert code == 0 and "Released: edm at step" in out and (tmp_path / "d" / RELEASE_JSON).is_file()
    assert out.count("[release] step ") == 2 and "[release] step 6: " in out and "[release] step 8: " in out


def test_a_page_that_cannot_be_written_does_not_fail_the_trained_run(big_data: str, tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    import diffmem.report.release as page

    def fail(run, device="cpu"):
        raise DiffmemError("features dinov2:/gone cannot be loaded")

    monkeypatch.setattr(page, "write_release_report", fail)
    code, out, err = run_cli(["train", "--data", big_data, "--resolution", "8", "--channels", "8,16",
                              "--layers-per-block", "1", "--steps", "4", "--checkpoint-every", "2", "--batch", "4",
                              "--quiet", "--subset", "20", "--guard", "--guard-samples", "50", "--guard-patience", "0",
                              "--guard-quality", "pixels", "--out", str(tmp_path / "run")], capsys)
    assert code == 0 and "warning: the release page was not written (features dinov2:/gone" in err
    assert "--report-only" in err and "certificate: " in out and (tmp_path / "run" / RELEASE_JSON).is_file()


def test_a_guarded_run_resumes_only_with_the_same_guard(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=12)
    with pytest.raises(KeyboardInterrupt):
        _guarded(cfg, tmp_path / "run", ScheduledMonitor(SCHEDULE, fail_once_at=6))
    with pytest.raises(DiffmemError, match="other settings .*n_samples: 400 -> 100"):
        _guarded(cfg, tmp_path / "run", ScheduledMonitor(SCHEDULE), n_samples=100)
    _guarded(cfg, tmp_path / "run", ScheduledMonitor(SCHEDULE))  # the same settings resume
    assert _release(tmp_path / "run")["released"]["step"] == 4


def test_a_run_guarded_by_an_older_diffmem_resumes_and_a_lost_release_json_still_guards(make_config,
                                                                                        tmp_path: Path) -> None:
    cfg = make_config(steps=12)
    for name in ("old", "lost"):
        with pytest.raises(KeyboardInterrupt):
            _guarded(cfg, tmp_path / name, ScheduledMonitor(SCHEDULE, fail_once_at=6))
    # a certificate written before GuardConfig had sample_precision: the setting was fp32 then
    rec = json.loads((tmp_path / "old" / RELEASE_JSON).read_text())
    del rec["settings"]["sample_precision"]
    (tmp_path / "old" / RELEASE_JSON).write_text(json.dumps(rec))
    with pytest.raises(DiffmemError, match="sample_precision: 'fp32' -> 'bf16'"):
        _guarded(cfg, tmp_path / "old", ScheduledMonitor(SCHEDULE), sample_precision="bf16")
    _guarded(cfg, tmp_path / "old", ScheduledMonitor(SCHEDULE))
    assert _release(tmp_path / "old")["released"]["step"] == 4
    # without release.json, the checks' own records still say how many samples they drew
    (tmp_path / "lost" / RELEASE_JSON).unlink()
    with pytest.raises(DiffmemError, match="other settings .*n_samples: 400 -> 100"):
        _guarded(cfg, tmp_path / "lost", ScheduledMonitor(SCHEDULE), n_samples=100)
    _guarded(cfg, tmp_path / "lost", ScheduledMonitor(SCHEDULE))
    assert _release(tmp_path / "lost")["released"]["step"] == 4


def test_overwrite_clears_the_release_with_the_run(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=12)
    run = _guarded(cfg, tmp_path / "run", ScheduledMonitor(SCHEDULE))
    (run / "release").mkdir(exist_ok=True)
    assert (run / RELEASE_JSON).is_file()
    train(cfg, run, progress=False, overwrite=True)
    assert not (run / RELEASE_JSON).exists() and not (run / "release").exists()
