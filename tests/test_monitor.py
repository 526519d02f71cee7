"""Tests for diffmem.monitor: records at the right steps, unchanged training, monitor.png, the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.monitor import CALIBRATED_KEY, make_monitor, monitor_records, plot_copy_curves, plot_monitor
from diffmem.train.checkpoint import EMA_FILE, latest_checkpoint, load_weights
from diffmem.train.loop import train


@pytest.fixture
def data(tmp_path: Path) -> str:
    return str(write_npz(tmp_path / "data.npz", n=20))


def _monitor(cfg, tmp_path: Path):
    return make_monitor(cfg, n_samples=6, sample_steps=2, cache_dir=tmp_path / "cache")


def test_monitor_logs_at_the_right_steps(data: str, tmp_path: Path) -> None:
    cfg = tiny_config(data, subset=12, steps=5, checkpoint_every=5)
    calls = []
    mon = _monitor(cfg, tmp_path)

    def spy(step: int, model: torch.nn.Module) -> dict:
        calls.append(step)
        return mon(step, model)

    train(cfg, tmp_path / "run", progress=False, monitor=spy, monitor_every=2)
    assert calls == [2, 4, 5]  # every 2 steps and at the end
    records = monitor_records(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4, 5]
    m = records[-1]["monitor"]
    assert m["n_samples"] == 6 and m["features"] == "pixels"
    assert m["epoch"] == pytest.approx(5 * 4 / 12)
    assert set(m["fraction_above"]) == {"0.9", "0.95", "0.98", "0.99"}
    assert all(0 <= v <= 1 for v in m["fraction_above"].values())
    assert set(m["calibrated_thresholds"]) == {CALIBRATED_KEY} and m["heldout"]["n"] == 8
    assert 0 <= m["fraction_above_calibrated"][CALIBRATED_KEY] <= 1
    assert set(m["similarity"]) >= {"mean", "median", "p95", "max"}
    png = plot_monitor(tmp_path / "run")
    assert png == tmp_path / "run" / "monitor.png" and png.read_bytes()[:4] == b"\x89PNG"


def test_monitor_does_not_change_training(data: str, tmp_path: Path) -> None:
    cfg = tiny_config(data, subset=12, steps=4, name="ambient", sigma_n=0.5, dropout=0.1)
    train(cfg, tmp_path / "plain", progress=False)
    train(cfg, tmp_path / "watched", progress=False, monitor=_monitor(cfg, tmp_path), monitor_every=1)
    a = load_weights(latest_checkpoint(tmp_path / "plain") / EMA_FILE)
    b = load_weights(latest_checkpoint(tmp_path / "watched") / EMA_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(monitor_records(tmp_path / "watched")) == 4


def test_monitor_samples_are_fixed(data: str, tmp_path: Path) -> None:
    cfg = tiny_config(data, subset=12)
    mon = _monitor(cfg, tmp_path)
    from diffmem.models.denoiser import build_denoiser

    torch.manual_seed(0)
    net = build_denoiser(cfg, 8, 1).eval()
    first, second = mon(1, net), mon(2, net)
    assert first["similarity"] == second["similarity"]  # same model, same seeds -> same statistics


def test_monitor_records_dedupe_and_refuse(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    recs = [{"step": 1, "loss": 1.0}, {"step": 2, "monitor": {"a": 1}}, {"step": 2, "monitor": {"a": 2}}]
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n{broken")
    assert monitor_records(log) == [{"step": 2, "monitor": {"a": 2}}]
    with pytest.raises(DiffmemError, match="--monitor-every"):
        monitor_records(tmp_path / "missing")


def test_copy_curves_for_several_runs(data: str, tmp_path: Path) -> None:
    for name, method in (("edm", "edm"), ("ambient", "ambient")):
        cfg = tiny_config(data, subset=12, steps=2, name=method, sigma_n=0.5 if method == "ambient" else 0.0)
        train(cfg, tmp_path / name, progress=False, monitor=_monitor(cfg, tmp_path), monitor_every=1)
    (tmp_path / "empty").mkdir()
    out = plot_copy_curves({"baseline": tmp_path / "edm", "ambient": tmp_path / "ambient",
                            "none": tmp_path / "empty"}, tmp_path / "curves.png")
    assert out is not None and out.is_file()
    assert plot_copy_curves({"none": tmp_path / "empty"}, tmp_path / "x.png") is None


def test_train_cli_monitor_flags(data: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from diffmem.cli import main

    out = tmp_path / "run"
    main(["train", "--data", data, "--resolution", "8", "--subset", "12", "--channels", "8,16",
          "--layers-per-block", "1", "--steps", "3", "--batch", "4", "--monitor-every", "2", "--monitor-samples", "4",
          "--device", "cpu", "--quiet", "--out", str(out)])
    assert [r["step"] for r in monitor_records(out)] == [2, 3]
    assert (out / "monitor.png").is_file()
    assert "copy monitor at step 3" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--monitor-every", "-1"], "--monitor-every must be >= 0"),
    (["--monitor-every", "2", "--monitor-samples", "1"], "--monitor-samples must be at least 2"),
])
def test_train_cli_refuses_bad_monitor_flags(data: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                             flags: list[str], message: str) -> None:
    from diffmem.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", data, "--resolution", "8", "--out", str(tmp_path / "run"), *flags])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_monitor_without_heldout_images(data: str, tmp_path: Path) -> None:
    from diffmem.data.datasets import load_images
    from diffmem.models.denoiser import build_denoiser
    from diffmem.monitor import CopyMonitor

    cfg = tiny_config(data)
    mon = CopyMonitor(cfg, load_images(data, 8), None, n_samples=4, sample_steps=2, thresholds=(0.5, 0.9))
    torch.manual_seed(0)
    rec = mon(3, build_denoiser(cfg, 8, 1).eval())
    assert rec["calibrated_thresholds"] is None and rec["heldout"] is None
    assert set(rec["fraction_above"]) == {"0.5", "0.9"} and rec["epoch"] == pytest.approx(3 * 4 / 20)
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"step": 3, "monitor": rec}) + "\n")
    assert plot_monitor(tmp_path / "run").is_file()
