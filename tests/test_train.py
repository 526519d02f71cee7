"""Tests for diffmem.train: fixed corruptions, batches, resume, run directories, checkpoint safety."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_config, write_npz
from diffmem.data.corruption import draw_masks, draw_noisy_copies
from diffmem.errors import DiffmemError
from diffmem.train import rundir
from diffmem.train.checkpoint import (
    EMA_FILE,
    MODEL,
    STATE,
    latest_checkpoint,
    load_state,
    load_weights,
    save_checkpoint,
)
from diffmem.train.stack import EMA, ema_beta
from diffmem.diffusion.methods import build_method
from diffmem.train.loop import draw_batch, load_train_data, train

def _weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    return load_weights(ckpt / name)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------
# the fixed noisy copies (Algorithm 1, line 1)


def test_noisy_copies_are_seeded_by_the_run_not_global_state() -> None:
    x0 = torch.rand((5, 1, 8, 8)) * 2 - 1
    torch.manual_seed(1)
    a = draw_noisy_copies(x0, 0.5, seed=3)
    torch.manual_seed(2)  # global state does not matter
    b = draw_noisy_copies(x0, 0.5, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, draw_noisy_copies(x0, 0.5, seed=4))
    z = (a - x0) / 0.5
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.15  # y = x0 + sigma_n z, z ~ N(0, I)
    m = draw_masks((200, 1, 8, 8), 0.3, seed=0)
    assert set(m.unique().tolist()) == {0.0, 1.0} and abs(float(1 - m.mean()) - 0.3) < 0.02
    assert torch.equal(m, draw_masks((200, 1, 8, 8), 0.3, seed=0))


@pytest.mark.parametrize("xflip", [False, True])
def test_batches_take_rows_of_the_fixed_copies(make_config, tmp_path: Path, xflip: bool) -> None:
    cfg = make_config(name="ambient", sigma_n=0.5, batch=16, xflip=xflip)
    (tmp_path / "run").mkdir()
    data = load_train_data(cfg, tmp_path / "run", resuming=False)
    assert data.fixed["y"] is not None and data.fixed["y"].shape == data.x0.shape
    y_before = data.fixed["y"].clone()
    g = torch.Generator().manual_seed(0)
    flipped = 0
    for _ in range(6):  # several "epochs" worth of batches
        batch = draw_batch(data, cfg, build_method(cfg), g, torch.device("cpu"))
        for x0_row, y_row in zip(batch.x0, batch.fixed["y"]):
            # the image is row j of the data (maybe flipped); its copy must be row j of y, flipped alike
            hits = [(j, False) for j in range(len(data.x0)) if torch.equal(x0_row, data.x0[j])]
            hits += [(j, True) for j in range(len(data.x0)) if torch.equal(x0_row, data.x0[j].flip(-1))]
            assert len(hits) == 1
            j, flip = hits[0]
            flipped += flip
            assert torch.equal(y_row, data.fixed["y"][j].flip(-1) if flip else data.fixed["y"][j])
    assert torch.equal(data.fixed["y"], y_before)  # the copies themselves never change
    assert (flipped > 0) == xflip


def test_noisy_copies_same_for_same_seed_and_kept_on_resume(make_config, tmp_path: Path) -> None:
    cfg = make_config(name="ambient", sigma_n=0.5, steps=4)
    train(cfg, tmp_path / "a", progress=False, stop_after=2)
    saved = load_file(str(tmp_path / "a" / rundir.CORRUPTION))["y"]
    raw = (tmp_path / "a" / rundir.CORRUPTION).read_bytes()
    # the copies on disk are the run's y: x0 plus sigma_n times the run-seeded noise
    data = load_train_data(cfg, tmp_path / "a", resuming=True)
    assert torch.equal(data.fixed["y"], saved)
    torch.testing.assert_close((saved - data.x0) / 0.5, draw_noisy_copies(data.x0, 1.0, cfg.seed) - data.x0)
    train(cfg, tmp_path / "a", progress=False)  # resume to the end
    assert (tmp_path / "a" / rundir.CORRUPTION).read_bytes() == raw  # reloaded, not redrawn or rewritten
    # a resumed run takes its copies from the file (so they survive any change of how they are drawn)
    save_file({"y": saved + 1.0}, str(tmp_path / "a" / rundir.CORRUPTION))
    assert torch.equal(load_train_data(cfg, tmp_path / "a", resuming=True).fixed["y"], saved + 1.0)
    # two runs with the same seed draw the same copies; another seed draws others
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    same = load_train_data(cfg, tmp_path / "b", resuming=False).fixed["y"]
    other = load_train_data(make_config(name="ambient", sigma_n=0.5, seed=1), tmp_path / "c", resuming=False).fixed["y"]
    assert torch.equal(same, saved)
    assert not torch.allclose(other, saved)


# ---------------------------------------------------------------------------------------------------
# resume


@pytest.mark.parametrize("method", [{"name": "ambient", "sigma_n": 0.5}, {"name": "edm", "xflip": True}])
def test_resume_gives_identical_weights(make_config, tmp_path: Path, method: dict) -> None:
    n = 2
    cfg = make_config(steps=2 * n, checkpoint_every=n, **method)  # checkpoint_every divides N
    train(cfg, tmp_path / "once", progress=False)
    train(cfg, tmp_path / "twice", progress=False, stop_after=n)
    assert not (tmp_path / "twice" / rundir.DONE).exists()
    assert latest_checkpoint(tmp_path / "twice").name == f"step-{n:08d}"
    train(cfg, tmp_path / "twice", progress=False)  # the same command again resumes
    assert latest_checkpoint(tmp_path / "twice").name == f"step-{2 * n:08d}"
    assert (tmp_path / "twice" / rundir.DONE).is_file()
    for name in (MODEL, EMA_FILE):
        _assert_same_weights(_weights(tmp_path / "once", name), _weights(tmp_path / "twice", name))
    # the EMA really is another set of weights, and training really moved the model
    model, ema = _weights(tmp_path / "once", MODEL), _weights(tmp_path / "once", EMA_FILE)
    assert any(not torch.equal(model[k], ema[k]) for k in model)
    steps = [json.loads(line)["step"] for line in (tmp_path / "twice" / rundir.LOG).read_text().splitlines()]
    assert steps == list(range(1, 2 * n + 1))  # log_every=1: one record per step, none repeated
    state = load_state(latest_checkpoint(tmp_path / "twice") / STATE)
    assert int(state["step"]) == 2 * n


def test_ema_update_and_beta() -> None:
    assert ema_beta(64, 5.0, None) == pytest.approx(0.5 ** (64 / 5000))
    assert ema_beta(64, 5.0, 0.9) == 0.9
    model = torch.nn.Linear(2, 2)
    ema = EMA(model)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 0.75)
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, 0.75 * before[k] + 0.25 * model.state_dict()[k])
    assert not any(p.requires_grad for p in ema.model.parameters())


# ---------------------------------------------------------------------------------------------------
# run directory rules


def test_finished_run_is_not_retrained_without_overwrite(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=2)
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    before = _snapshot(out)
    with pytest.raises(DiffmemError, match="--overwrite"):
        train(cfg, out, progress=False)
    assert _snapshot(out) == before


def test_other_config_in_same_out_is_refused_and_overwrite_replaces(make_config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(make_config(steps=2), out, progress=False, stop_after=1)  # unfinished: would otherwise resume
    before = _snapshot(out)
    other = make_config(steps=2, lr=3e-3)
    with pytest.raises(DiffmemError) as err:
        train(other, out, progress=False)
    assert "optim.lr" in str(err.value) and "--overwrite" in str(err.value)
    assert _snapshot(out) == before
    train(other, out, progress=False, overwrite=True)
    assert rundir.read_json(out / rundir.CONFIG)["optim"]["lr"] == 3e-3
    assert (out / rundir.DONE).is_file()
    steps = [json.loads(line)["step"] for line in (out / rundir.LOG).read_text().splitlines()]
    assert steps == [1, 2]  # a fresh log, not the old one continued


def test_non_run_folder_is_refused_and_untouched(make_config, tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    (out / "sub").mkdir()
    (out / "sub" / "notes.txt").write_text("keep me")
    before = _snapshot(out)
    for overwrite in (False, True):
        with pytest.raises(DiffmemError, match="not a diffmem run"):
            train(make_config(steps=2), out, progress=False, overwrite=overwrite)
        assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["holiday.jpg", "sub"]
    with pytest.raises(DiffmemError, match="no run to resume"):
        train(make_config(steps=2), tmp_path / "empty", progress=False, resume=True)


def test_bad_data_does_not_touch_an_existing_run(make_config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(make_config(steps=2), out, progress=False)
    before = _snapshot(out)
    bad = tiny_config(str(tmp_path / "missing.npz"), steps=2)
    with pytest.raises(DiffmemError, match="missing.npz"):
        train(bad, out, progress=False, overwrite=True)  # even --overwrite keeps the run when the input is bad
    assert _snapshot(out) == before
    with pytest.raises(DiffmemError, match="--subset"):
        train(make_config(steps=2, subset=50), out, progress=False, overwrite=True)
    assert _snapshot(out) == before
    nolabels = tiny_config(str(write_npz(tmp_path / "nolabels.npz", labels=False)), steps=2, cond=True, num_classes=3)
    with pytest.raises(DiffmemError, match="--cond"):
        train(nolabels, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------------
# checkpoint safety


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickled_code_in_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "state.pt"
    torch.save({"step": torch.tensor(3), "payload": _Evil(marker)}, path)
    assert b"exec" in path.read_bytes() or b"builtins" in path.read_bytes()
    with pytest.raises(DiffmemError, match="safely"):
        load_state(path)
    assert not marker.exists()
    # a plain pickle with a __reduce__ payload is refused the same way
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump(_Evil(marker), f, protocol=2)
    with pytest.raises(DiffmemError):
        load_state(tmp_path / "plain.pt")
    assert not marker.exists()
    # the legitimate content of a state file loads
    torch.save({"step": torch.tensor(3), "generator": torch.Generator().get_state(), "betas": (0.9, 0.99)}, path)
    assert int(load_state(path)["step"]) == 3


def test_corrupt_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(DiffmemError, match="model.safetensors"):
        load_weights(tmp_path / "model.safetensors")
    with pytest.raises(DiffmemError, match="does not exist"):
        load_weights(tmp_path / "nothing.safetensors")


def _files(model: torch.nn.Module, ema: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {MODEL: model.state_dict(), EMA_FILE: ema.state_dict()}


def test_interrupted_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    state = {"step": torch.tensor(2)}
    first = save_checkpoint(tmp_path, 2, _files(model, ema), state, {"resolution": 8, "channels": 1})
    assert latest_checkpoint(tmp_path) == first
    assert (tmp_path / rundir.CHECKPOINTS / rundir.LATEST).read_text().strip() == "step-00000002"

    def crash(*args, **kwargs):  # the process dies while writing the training state
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, _files(model, ema), {"step": torch.tensor(4)}, {"resolution": 8, "channels": 1})
    monkeypatch.undo()
    leftover = tmp_path / rundir.CHECKPOINTS / "step-00000004.tmp"
    assert leftover.is_dir() and (leftover / MODEL).is_file()  # half written, under the temporary name
    assert not (tmp_path / rundir.CHECKPOINTS / "step-00000004").exists()
    assert latest_checkpoint(tmp_path) == first  # LATEST was not moved to the incomplete folder
    assert not torch.equal(load_weights(first / MODEL)["weight"], model.weight.detach())
    # the next save succeeds, cleans the leftover, and pruning keeps the newest complete folders
    for step in (4, 6, 8):
        save_checkpoint(tmp_path, step, _files(model, ema), {"step": torch.tensor(step)}, {"resolution": 8, "channels": 1})
    names = sorted(p.name for p in (tmp_path / rundir.CHECKPOINTS).iterdir())
    assert names == ["LATEST", "step-00000006", "step-00000008"]
    assert latest_checkpoint(tmp_path).name == "step-00000008"


def test_resume_ignores_a_leftover_tmp_folder(make_config, tmp_path: Path) -> None:
    cfg = make_config(steps=4, checkpoint_every=2)
    out = tmp_path / "run"
    train(cfg, out, progress=False, stop_after=3)  # killed after step 3; the checkpoint is from step 2
    junk = out / rundir.CHECKPOINTS / "step-00000003.tmp"
    junk.mkdir()
    (junk / MODEL).write_bytes(b"half a file")
    with open(out / rundir.LOG, "a") as f:
        f.write('{"step": 3, "lo')  # and died in the middle of a log line
    assert latest_checkpoint(out).name == "step-00000002"
    train(cfg, out, progress=False)
    assert latest_checkpoint(out).name == "step-00000004"
    # step 3 was redone from the step-2 checkpoint; the log has each step once, in order
    steps = [json.loads(line)["step"] for line in (out / rundir.LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    train(cfg, tmp_path / "straight", progress=False)
    _assert_same_weights(_weights(out, MODEL), _weights(tmp_path / "straight", MODEL))
    # a LATEST that names a missing folder is reported, not silently restarted
    (out / rundir.CHECKPOINTS / rundir.LATEST).write_text("step-00000099\n")
    with pytest.raises(DiffmemError, match="incomplete"):
        latest_checkpoint(out)


def test_a_run_an_older_diffmem_started_resumes(make_config, tmp_path: Path) -> None:
    """config.json written before method.weight_cap existed: the missing field takes its default (the
    older behaviour), so the same command resumes; a real difference is still refused."""
    cfg = make_config(name="ambient", sigma_n=0.5, steps=4)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=2)
    stored = json.loads((run / rundir.CONFIG).read_text())
    del stored["method"]["weight_cap"]
    (run / rundir.CONFIG).write_text(json.dumps(stored))
    with pytest.raises(DiffmemError, match=r"another configuration \(method.sigma_n: 0.5 -> 0.25\)"):
        train(make_config(name="ambient", sigma_n=0.25, steps=4), run, progress=False)
    train(cfg, run, progress=False, resume=True)
    assert (run / rundir.DONE).is_file() and latest_checkpoint(run).name.endswith("4")
