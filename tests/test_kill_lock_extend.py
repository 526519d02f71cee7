"""Kills at start-up, during checkpoint writing and during sampling leave outputs that the same command
resumes or that are complete-or-absent; a second process is refused; a finished run extends bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, single_thread, tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.lock import lock_path, locked
from diffmem.train import loop, rundir

STEPS = 6
NET = ["--channels", "8,16", "--layers-per-block", "1", "--device", "cpu", "--quiet"]

# Runs `diffmem ARGS` after wrapping MODULE.NAME so that its N-th call kills the process with SIGKILL:
# a real kill -9 at a chosen point instead of at a random moment.
KILLER = textwrap.dedent("""
    import importlib, os, signal, sys
    module, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    target = importlib.import_module(module)
    real, calls = getattr(target, name), [0]
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(target, name, wrapped)
    from diffmem.cli import main
    main(sys.argv[4:])
""")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train_args(data: Path, out: Path, steps: int = STEPS) -> list[str]:
    return ["train", "--data", str(data), "--resolution", "8", "--batch", "4", "--steps", str(steps),
            "--checkpoint-every", "2", "--log-every", "1", "--method", "ambient", "--sigma-n", "0.5", *NET,
            "--out", str(out)]


def _killed(args: list[str], module: str, name: str, n: int) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, module, name, str(n), *args], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _same_final_state(a: Path, b: Path, steps: int = STEPS) -> None:
    """Bitwise-equal weights, EMA, optimizer and RNG state at the last step, and each step logged once."""
    name = f"step-{steps:08d}"
    for f in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / "checkpoints" / name / f)), load_file(str(b / "checkpoints" / name / f))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    sa = torch.load(a / "checkpoints" / name / "state.pt", weights_only=True)
    sb = torch.load(b / "checkpoints" / name / "state.pt", weights_only=True)
    assert torch.equal(sa["generator"], sb["generator"]) and torch.equal(sa["torch_rng"], sb["torch_rng"])
    for k, state in sa["optimizer"]["state"].items():
        assert all(torch.equal(v, sb["optimizer"]["state"][k][n]) for n, v in state.items())
    if (a / "corruption.safetensors").exists():
        assert (a / "corruption.safetensors").read_bytes() == (b / "corruption.safetensors").read_bytes()
    logged = [json.loads(line)["step"] for line in (b / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, an uninterrupted run of STEPS steps on it), on one torch thread like every run it is compared
    with (a module-scoped fixture runs before the per-test single-thread fixture)."""
    root = tmp_path_factory.mktemp("straight")
    data = write_npz(root / "data.npz")
    from diffmem.cli import main

    with single_thread():
        main(_train_args(data, root / "run"))
    return data, root / "run"


# ---------------------------------------------------------------------------------------------------
# kills


@pytest.mark.parametrize("partial", [("subset.json",), ("subset.json", "corruption.safetensors.tmp"),
                                     ("config.json.tmp", "subset.json"), ("config.json",)])
def test_start_killed_at_any_file_resumes_with_the_same_command(straight, tmp_path: Path, partial, capsys) -> None:
    """What a kill during start-up can leave (older versions wrote subset.json before config.json)."""
    data, done = straight
    out = tmp_path / "run"
    out.mkdir()
    for name in partial:
        source = done / name.removesuffix(".tmp")
        (out / name).write_bytes(source.read_bytes()[: None if name.endswith(".json") else 100])
    code, _, err = run_cli(_train_args(data, out), capsys)
    assert code == 0, err
    _same_final_state(done, out)


def test_real_kill_at_start_up_resumes(straight, tmp_path: Path) -> None:
    data, done = straight
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "diffmem", *_train_args(data, out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "config.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoints" / "LATEST").exists(), "killed too late to test start-up"
    subprocess.run([sys.executable, "-m", "diffmem", *_train_args(data, out)], env=_env(), check=True,
                   capture_output=True, timeout=300)
    _same_final_state(done, out)


def test_kill_while_writing_a_checkpoint_resumes(straight, tmp_path: Path, capsys) -> None:
    data, done = straight
    out = tmp_path / "run"
    # save_file is called twice per checkpoint (weights, EMA): call 4 is the EMA of the step-4 checkpoint
    _killed(_train_args(data, out), "diffmem.train.checkpoint", "save_file", 4)
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "step-00000002"
    assert (out / "checkpoints" / "step-00000004.tmp").is_dir() and not (out / "done.json").exists()
    code, _, err = run_cli(_train_args(data, out), capsys)
    assert code == 0, err
    _same_final_state(done, out)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kill_at", [("diffmem.data.io", "_to_pil", 3), ("os", "replace", 2)])
def test_kill_while_sample_overwrites_a_png_folder(straight, tmp_path: Path, capsys, kill_at) -> None:
    """The folder is the old complete set or absent, never a mix; the same command then completes it."""
    _, run = straight
    out = tmp_path / "pngs"
    base = ["sample", "--run", str(run), "--steps", "2", "--device", "cpu", "--quiet", "--no-grid"]
    assert run_cli([*base, "--n", "4", "--out", str(out)], capsys)[0] == 0
    old = _pngs(out)
    again = [*base, "--n", "6", "--seed", "1", "--out", str(out), "--overwrite"]
    _killed(again, *kill_at)
    if kill_at[1] == "replace":  # between the two renames: absent, the old set kept aside
        assert not out.exists()
    else:
        assert _pngs(out) == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pngs.")]  # the killed run's temporary
    assert run_cli(again, capsys)[0] == 0
    assert run_cli([*base, "--n", "6", "--seed", "1", "--out", str(tmp_path / "fresh")], capsys)[0] == 0
    assert _pngs(out) == _pngs(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "pngs"]  # the re-run removed the leftovers


DECOYS = (".s.npz.abc.tmp.npz", "s.npz.tmp", ".other.npz.abcdefgh.tmp.npz", ".s.npz.abcdefgh.tmp.npz.keep",
          ".s.npz.ABCDEFGH.tmp.npz")  # names that are not our temporaries of s.npz: never removed


@pytest.mark.parametrize("command", ["sample", "fid"])
def test_a_killed_write_leaves_a_temporary_the_next_run_removes(straight, tmp_path: Path, capsys,
                                                                command: str) -> None:
    """kill -9 just before the rename of `sample --out s.npz` (a complete-looking hidden .npz) or of
    `fid --save-stats s.npz`; the same command then succeeds and removes it, and only it."""
    data, run = straight
    out = tmp_path / "s.npz"
    args = {"sample": ["sample", "--run", str(run), "--n", "2", "--steps", "2", "--device", "cpu", "--quiet",
                       "--no-grid", "--out", str(out)],
            "fid": ["fid", "--features", "pixels", "--ref", str(data), "--no-cache", "--device", "cpu", "--quiet",
                    "--save-stats", str(out)]}[command]
    for name in DECOYS:
        (tmp_path / name).write_text("not ours")
    _killed(args, "os", "replace", 1)
    left = [p.name for p in tmp_path.iterdir() if p.name not in (*DECOYS, ".s.npz.lock")]
    assert len(left) == 1 and left[0].startswith(".s.npz.") and left[0].endswith(".tmp.npz"), left
    assert np.load(tmp_path / left[0]).files  # complete-looking: numpy reads it
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*DECOYS, "s.npz"])


def test_a_kill_while_writing_the_grid_leaves_a_temporary_the_next_sample_removes(straight, tmp_path: Path,
                                                                                    capsys) -> None:
    """kill -9 just before the rename of the contact sheet (s_grid.png, written after s.npz): the same command
    with --overwrite succeeds and leaves no hidden temporary of the grid beside it."""
    _, run = straight
    out = tmp_path / "s.npz"
    args = ["sample", "--run", str(run), "--n", "2", "--steps", "2", "--device", "cpu", "--quiet", "--grid",
            "--out", str(out)]
    _killed(args, "os", "replace", 2)
    assert any(p.name.startswith(".s_grid.png.") for p in tmp_path.iterdir())
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".s.npz.lock") == ["s.npz", "s_grid.png"]


def test_clean_leftovers_removes_only_our_names_and_restores_a_folder_moved_aside(tmp_path: Path) -> None:
    from diffmem.utils.atomic import clean_leftovers

    for name in DECOYS:
        (tmp_path / name).write_text("not ours")
    (tmp_path / ".s.npz.a1b2c3d_.tmp.npz").write_bytes(b"half")
    (tmp_path / ".pngs.zzzzzzzz.tmp").mkdir()
    (tmp_path / ".pngs.yyyyyyyy.old").mkdir()
    (tmp_path / ".pngs.yyyyyyyy.old" / "000000.png").write_bytes(b"the previous set")
    assert [p.name for p in clean_leftovers(tmp_path / "s.npz")] == [".s.npz.a1b2c3d_.tmp.npz"]
    clean_leftovers(tmp_path / "pngs")  # pngs absent: the folder moved aside before a kill comes back
    assert (tmp_path / "pngs" / "000000.png").read_bytes() == b"the previous set"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*DECOYS, "pngs"])
    (tmp_path / ".pngs.xxxxxxxx.old").mkdir()  # pngs present: a swap killed before it deleted the old set
    clean_leftovers(tmp_path / "pngs")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*DECOYS, "pngs"])


# ---------------------------------------------------------------------------------------------------
# a second process


def test_second_train_on_the_same_run_is_refused(straight, tmp_path: Path, capsys) -> None:
    data, _ = straight
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "diffmem", *_train_args(data, out, steps=100_000)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "LATEST").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        config = (out / "config.json").read_bytes()
        code, _, err = run_cli(_train_args(data, out, steps=100_000), capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{out} is in use by process {first.pid} (started " in err
        assert first.poll() is None and (out / "config.json").read_bytes() == config
        code, _, err = run_cli(_train_args(data, out, steps=100_000) + ["--overwrite"], capsys)
        assert code == 2 and "in use" in err and (out / "config.json").read_bytes() == config
    finally:
        first.kill()
        first.wait()


HOLDER = "import sys, time\nfrom diffmem.lock import locked\nwith locked(sys.argv[1]):\n" \
         "    print('held', flush=True)\n    time.sleep(600)\n"


def test_a_lock_left_by_a_killed_process_is_taken_over(straight, tmp_path: Path, capsys) -> None:
    _, run = straight
    out = tmp_path / "s.npz"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["sample", "--run", str(run), "--n", "2", "--steps", "2", "--device", "cpu", "--quiet", "--out", str(out)]
        code, _, err = run_cli(args, capsys)
        assert code == 2 and f"in use by process {holder.pid}" in err and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(out).exists()  # the killed holder left its lock file behind
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert out.is_file() and not lock_path(out).exists()


def test_lock_in_process(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with locked(target):
        with pytest.raises(DiffmemError, match=f"in use by process {os.getpid()}"):
            with locked(target):
                pass
    assert list(tmp_path.iterdir()) == []  # released: no lock file, nothing created
    with locked(target):  # free again
        pass


# ---------------------------------------------------------------------------------------------------
# extending a finished run


def test_30_plus_10_steps_equal_40_steps_bitwise(tmp_path: Path, npz_data: str) -> None:
    def cfg(steps: int):
        return tiny_config(npz_data, name="ambient", sigma_n=0.5, steps=steps, checkpoint_every=7, log_every=1)

    loop.train(cfg(40), tmp_path / "straight", progress=False)
    out = tmp_path / "extended"
    loop.train(cfg(30), out, progress=False)
    (out / "samples.npz").write_bytes(b"evaluation of the 30-step weights")
    loop.train(cfg(40), out, progress=False)
    _same_final_state(tmp_path / "straight", out, steps=40)
    saved = json.loads((out / "config.json").read_text())
    assert [(e["from_steps"], e["to_steps"]) for e in saved["extensions"]] == [(30, 40)]
    assert {k: v for k, v in saved.items() if k != "extensions"} == \
        json.loads((tmp_path / "straight" / "config.json").read_text())
    assert json.loads((out / "done.json").read_text())["step"] == 40
    assert not (out / "samples.npz").exists()  # stale: made from the old weights
    with pytest.raises(DiffmemError, match="already finished"):
        loop.train(cfg(40), out, progress=False)
    with pytest.raises(DiffmemError, match="cannot be shortened"):
        loop.train(cfg(30), out, progress=False)
    other = tiny_config(npz_data, name="ambient", sigma_n=0.5, steps=50, checkpoint_every=7, log_every=1, lr=2e-3)
    with pytest.raises(DiffmemError, match="another configuration"):
        loop.train(other, out, progress=False)


@pytest.mark.parametrize("after_write", [False, True])
def test_extension_killed_midway_extends_again(tmp_path: Path, npz_data: str, monkeypatch: pytest.MonkeyPatch,
                                               after_write: bool) -> None:
    def cfg(steps: int):
        return tiny_config(npz_data, steps=steps, checkpoint_every=2)

    out = tmp_path / "run"
    loop.train(cfg(4), out, progress=False)
    real = rundir.write_json_atomic

    def dies_at_config(path, obj):
        if Path(path).name == "config.json":
            if after_write:
                real(path, obj)
            raise KeyboardInterrupt  # a kill just before / just after config.json gets the new length
        real(path, obj)

    monkeypatch.setattr(rundir, "write_json_atomic", dies_at_config)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg(6), out, progress=False)
    monkeypatch.setattr(rundir, "write_json_atomic", real)
    loop.train(cfg(6), out, progress=False)
    loop.train(cfg(6), tmp_path / "six", progress=False)
    _same_final_state(tmp_path / "six", out, steps=6)


def test_cli_extends_by_kimg(straight, tmp_path: Path, capsys) -> None:
    data, _ = straight
    out = tmp_path / "run"
    assert run_cli(_train_args(data, out, steps=3), capsys)[0] == 0
    args = [a for a in _train_args(data, out) if a not in ("--steps", str(STEPS))]
    code, stdout, err = run_cli([*args, "--kimg", "0.024"], capsys)  # 24 images at batch 4: 6 steps
    assert code == 0, err
    assert json.loads((out / "done.json").read_text())["step"] == 6
    assert np.array_equal([json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()],
                          range(1, 7))


@pytest.mark.parametrize("command", ["demo", "sweep", "fid", "fid-stats", "audit", "t2i-sample"])
def test_every_writing_command_takes_the_lock_of_its_output(straight, tmp_path: Path, capsys, command: str) -> None:
    data, run = straight
    out = tmp_path / ("fid.json" if command == "fid" else "stats.npz" if command == "fid-stats" else "out")
    fid = ["fid", "--features", "pixels", "--ref", str(data), "--no-cache", "--device", "cpu", "--quiet"]
    args = {"demo": ["demo", "--steps", "2", "--batch", "4", "--n-samples", "50", "--device", "cpu", "--quiet"],
            "sweep": ["sweep", "--steps", "2", "--batch", "4", "--subset", "20", "--sigma-n", "0.5", "--device", "cpu",
                      "--quiet"],
            "fid": [*fid, "--samples", str(data)],
            "fid-stats": [*fid, "--save-stats", str(out)],
            "audit": ["audit", "--features", "pixels", "--samples", str(data), "--train", str(data), "--no-cache",
                      "--device", "cpu", "--quiet"],
            "t2i-sample": ["t2i", "sample", "--run", str(tmp_path / "no-run"), "--device", "cpu", "--quiet"]}[command]
    with locked(out):
        code, _, err = run_cli(args if command == "fid-stats" else [*args, "--out", str(out)], capsys)
    assert code == 2 and f"{out} is in use by process {os.getpid()}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before writing anything


def test_second_audit_into_one_out_is_refused(straight, tmp_path: Path, capsys) -> None:
    """The issue's two audits into one --out: while another process audits into it, a second is refused,
    naming that process, and the first one's output stays as it was."""
    data, _ = straight
    out = tmp_path / "audit"
    args = ["audit", "--features", "pixels", "--samples", str(data), "--train", str(data), "--no-cache", "--device",
            "cpu", "--quiet", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(args, capsys)
        assert code == 2 and f"{out} is in use by process {holder.pid}" in err and err.count("\n") == 1, err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(args, capsys)[0] == 0  # the killed holder's lock is free again


def test_holds_lock_decorator_for_frontier(tmp_path: Path) -> None:
    """`@holds_lock("out")` (the one line for sweep/frontier.py's run_frontier) holds --out's lock for the call."""
    from diffmem.lock import holds_lock
    from diffmem.sweep.frontier import run_frontier

    seen = []

    @holds_lock("out")
    def write(fc, out, *, echo=print):
        seen.append(lock_path(out).exists())
        return out

    assert write(None, tmp_path / "f") == tmp_path / "f" and seen == [True] and not lock_path(tmp_path / "f").exists()
    with locked(tmp_path / "f"):
        with pytest.raises(DiffmemError, match=f"in use by process {os.getpid()}"):
            write(None, out=tmp_path / "f")
        with pytest.raises(DiffmemError, match="in use"):  # refused before the configuration is even read
            holds_lock("out")(run_frontier)("not a config", tmp_path / "f")
    with pytest.raises(TypeError, match="no parameter 'output'"):
        holds_lock("output")(run_frontier)
