"""Every kind of bad input ends in one line, exit code 2 and no traceback, and changes no file.

One table drives the test: each case is a command line and a piece of text its message must contain.
All cases run against one tree (a finished run, a copy with a hand-edited config.json, sample and
statistics files); after each case the whole tree must be byte for byte what it was.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_npz
from diffmem.cli import main
from diffmem.config import TrainConfig
from diffmem.errors import DiffmemError
from diffmem.train import loop

TINY = ["--channels", "8,16", "--layers-per-block", "1", "--device", "cpu", "--quiet"]
UNWRITABLE = Path("/sys/diffmem-test")  # even root may not create files in sysfs: a real PermissionError


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under root, lock files included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run, copies of it with a hand-edited config.json, samples and statistics files."""
    root = tmp_path_factory.mktemp("bad-input")
    data = write_npz(root / "data.npz")
    main(["train", "--data", str(data), "--resolution", "8", "--steps", "2", "--batch", "4",
          "--out", str(root / "run"), *TINY])
    for name, edit in (("typo-batch", ("optim", "batch", "64")), ("typo-channels", ("network", "channels", "8,16")),
                       ("typo-flag", ("data", "xflip", "no")), ("bad-sigma", ("method", "sigma_n", -0.5))):
        shutil.copytree(root / "run", root / name)
        cfg = json.loads((root / name / "config.json").read_text())
        cfg[edit[0]][edit[1]] = edit[2]
        if name == "bad-sigma":  # a setting of Algorithm 1's section (the baseline's has none)
            cfg["method"]["name"] = "ambient"
        (root / name / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    np.savez(root / "samples.npz", images=rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8))
    dim = 64
    np.savez(root / "nan-stats.npz", mu=np.full(dim, np.nan), sigma=np.eye(dim), n=np.int64(10),
             features=np.str_("pixels"))
    sigma = np.eye(dim)
    sigma[3, 3] = np.inf
    np.savez(root / "inf-stats.npz", mu=np.zeros(dim), sigma=sigma, n=np.int64(10), features=np.str_("pixels"))
    (root / "a-file").write_text("not a folder")
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"meow")
    return root


def _cases(root: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments, text the one-line message must contain)."""
    run, data = root / "run", root / "data.npz"
    t = ["train", "--data", data, "--resolution", 8, *TINY]
    fresh = ["--out", root / "fresh"]
    s = ["sample", "--run", run, "--n", 2, "--device", "cpu", "--quiet"]
    f = ["fid", "--features", "pixels", "--device", "cpu", "--quiet", "--no-cache"]
    a = ["audit", "--features", "pixels", "--samples", root / "samples.npz", "--train", data, "--no-cache", "--device",
         "cpu", "--quiet"]
    return [
        ("kimg batch 0", [*t, "--kimg", 1, "--batch", 0, *fresh], "--batch"),
        ("batch 0", [*t, "--steps", 2, "--batch", 0, *fresh], "--batch"),
        ("steps 0", [*t, "--steps", 0, *fresh], "--steps"),
        ("steps negative", [*t, "--steps", -3, *fresh], "--steps"),
        ("kimg negative", [*t, "--kimg", -1, *fresh], "--kimg"),
        ("kimg nan", [*t, "--kimg", "nan", *fresh], "--kimg"),
        ("log-every 0 overwrite", [*t, "--steps", 2, "--batch", 4, "--log-every", 0, "--out", run, "--overwrite"],
         "--log-every"),
        ("checkpoint-every 0", [*t, "--steps", 2, "--checkpoint-every", 0, *fresh], "--checkpoint-every"),
        ("lr 0", [*t, "--steps", 2, "--lr", 0, *fresh], "--lr"),
        ("lr nan", [*t, "--steps", 2, "--lr", "nan", *fresh], "--lr"),
        ("lr inf", [*t, "--steps", 2, "--lr", "inf", *fresh], "--lr"),
        ("weight decay", [*t, "--steps", 2, "--weight-decay", -1, *fresh], "--weight-decay"),
        ("warmup", [*t, "--steps", 2, "--warmup-steps", -1, *fresh], "--warmup-steps"),
        ("ema 0", [*t, "--steps", 2, "--ema", 0, *fresh], "--ema"),
        ("ema decay", [*t, "--steps", 2, "--ema-decay", 1.5, *fresh], "--ema-decay"),
        ("dropout", [*t, "--steps", 2, "--dropout", 1, *fresh], "--dropout"),
        ("sigma-n negative", [*t, "--steps", 2, "--sigma-n", -1, *fresh], "--sigma-n"),
        ("sigma-n nan", [*t, "--steps", 2, "--method", "ambient", "--sigma-n", "nan", *fresh], "--sigma-n"),
        ("mask-delta", [*t, "--steps", 2, "--mask-delta", 1, *fresh], "--mask-delta"),
        ("masking without p", [*t, "--steps", 2, "--method", "masking", *fresh], "--mask-p"),
        ("channels zero", ["train", "--data", data, "--resolution", 8, "--channels", "8,0", "--steps", 2, *fresh],
         "--channels"),
        ("channels text", ["train", "--data", data, "--channels", "a,b", "--steps", 2, *fresh], "--channels"),
        ("layers 0", [*t, "--layers-per-block", 0, "--steps", 2, *fresh], "--layers-per-block"),
        ("subset 0", [*t, "--steps", 2, "--subset", 0, *fresh], "--subset"),
        ("resolution 0", ["train", "--data", data, "--resolution", 0, *TINY, "--steps", 2, *fresh], "--resolution"),
        ("monitor-every", [*t, "--steps", 2, "--monitor-every", -1, *fresh], "--monitor-every"),
        ("monitor-samples", [*t, "--steps", 2, "--monitor-every", 1, "--monitor-samples", 1, *fresh],
         "--monitor-samples"),
        ("device unknown", ["train", "--data", data, "--resolution", 8, "--steps", 2, "--device", "foo", *fresh],
         "--device"),
        ("sample device unknown", [*s, "--out", root / "s.npz", "--device", "bogus"], "--device"),
        ("out is a file", [*t, "--steps", 2, "--batch", 4, "--out", root / "a-file"], "is a file"),
        ("steps not a number", [*t, "--steps", "ten", *fresh], "--steps"),
        ("unknown flag", [*t, "--stpes", 2, *fresh], "--stpes"),
        ("out not a run", [*t, "--steps", 2, "--batch", 4, "--out", root / "photos", "--overwrite"], "not a diffmem"),
        ("out unwritable", [*t, "--steps", 2, "--batch", 4, "--out", UNWRITABLE / "run"], str(UNWRITABLE)),
        ("fewer steps", [*t, "--steps", 1, "--batch", 4, "--out", run], "cannot be shortened"),
        ("other config", [*t, "--steps", 2, "--batch", 4, "--lr", 0.01, "--out", run], "optim.lr"),
        ("finished", [*t, "--steps", 2, "--batch", 4, "--out", run], "already finished"),
        ("resume nothing", [*t, "--steps", 2, "--resume", *fresh], "no run to resume"),
        ("sample n 0", [*s, "--out", root / "s.npz", "--n", 0], "--n"),
        ("sample n negative", [*s, "--out", root / "s.npz", "--n", -4], "--n"),
        ("sample steps 0", [*s, "--out", root / "s.npz", "--steps", 0], "--steps"),
        ("sample batch 0", [*s, "--out", root / "s.npz", "--batch", 0], "--batch"),
        ("sample churn", [*s, "--out", root / "s.npz", "--churn", -1], "--churn"),
        ("sample s-noise", [*s, "--out", root / "s.npz", "--s-noise", 0], "--s-noise"),
        ("sample s-tmin", [*s, "--out", root / "s.npz", "--s-tmin", 2, "--s-tmax", 1], "--s-tmin"),
        ("sample class", [*s, "--out", root / "s.npz", "--class", 1], "unconditional"),
        ("sample existing", [*s, "--out", root / "samples.npz"], "--overwrite"),
        ("sample unwritable", [*s, "--out", UNWRITABLE / "s.npz"], str(UNWRITABLE)),
        ("sample not a run", ["sample", "--run", root / "photos", "--out", root / "s.npz"], "not a diffmem run"),
        ("config type int", ["sample", "--run", root / "typo-batch", "--out", root / "s.npz"], "optim.batch"),
        ("config type list", ["sample", "--run", root / "typo-channels", "--out", root / "s.npz"], "network.channels"),
        ("config type bool", ["sample", "--run", root / "typo-flag", "--out", root / "s.npz"], "data.xflip"),
        ("config file named", ["sample", "--run", root / "typo-flag", "--out", root / "s.npz"],
         str(root / "typo-flag" / "config.json")),
        ("config range", ["sample", "--run", root / "bad-sigma", "--out", root / "s.npz"], "--sigma-n"),
        ("fid nan stats", [*f, "--samples", root / "samples.npz", "--ref", root / "nan-stats.npz"], "NaN"),
        ("fid inf stats", [*f, "--samples", root / "samples.npz", "--ref", root / "inf-stats.npz"], "infinite"),
        ("fid out exists", [*f, "--samples", root / "samples.npz", "--ref", data, "--out", root / "samples.npz"],
         "--out"),
        ("fid out is input", [*f, "--samples", root / "samples.npz", "--ref", data, "--out", root / "samples.npz",
                              "--overwrite"], "input"),
        ("fid stats exist", [*f, "--ref", data, "--save-stats", root / "nan-stats.npz"], "--overwrite"),
        ("fid out unwritable", [*f, "--samples", root / "samples.npz", "--ref", data, "--out", UNWRITABLE / "f.json"],
         str(UNWRITABLE)),
        ("fid kid", [*f, "--samples", root / "samples.npz", "--ref", data, "--kid-subsets", 0], "--kid-subsets"),
        ("fid batch", [*f, "--samples", root / "samples.npz", "--ref", data, "--batch", 0], "--batch"),
        ("fid nothing", [*f, "--ref", data], "--samples"),
        ("demo steps", ["demo", "--steps", 0, "--out", root / "demo"], "--steps"),
        ("demo batch", ["demo", "--batch", 0, "--out", root / "demo"], "--batch"),
        ("demo sigma", ["demo", "--sigma-n", 0, "--out", root / "demo"], "--sigma-n"),
        ("demo samples", ["demo", "--n-samples", 1, "--out", root / "demo"], "--n-samples"),
        ("sweep kimg batch 0", ["sweep", "--kimg", 1, "--batch", 0, "--out", root / "sweep"], "--batch"),
        ("sweep jobs", ["sweep", "--jobs", 0, "--out", root / "sweep"], "--jobs"),
        ("sweep steps", ["sweep", "--steps", 0, "--out", root / "sweep"], "--steps"),
        ("t2i sample steps", ["t2i", "sample", "--run", root / "run", "--out", root / "t2i", "--steps", 0], "--steps"),
        # issue 21: what got through with a traceback, no refusal, or after work and writes
        ("train out under a file", [*t, "--steps", 2, "--out", root / "a-file" / "run"], "a-file is a file"),
        ("train resolution memory cannot hold", ["train", "--data", "builtin:digits", "--resolution", 100000, *TINY,
                                                 *fresh], "--resolution 100000"),
        ("sample n memory cannot hold", [*s, "--out", root / "s.npz", "--n", 10**12], "--n 1000000000000"),
        ("sample class n memory cannot hold", [*s, "--out", root / "s.npz", "--n", 10**12, "--class", 0],
         "--n 1000000000000"),  # refused before the labels of 10**12 samples are allocated
        ("sample out under a file", [*s, "--out", root / "a-file" / "s.npz"], "a-file is a file"),
        ("audit batch 0", [*a, "--batch", 0, "--out", root / "audit"], "--batch"),
        ("audit image-size 0", [*a, "--image-size", 0, "--out", root / "audit"], "--image-size"),
        ("audit out under a file", [*a, "--out", root / "a-file" / "audit"], "a-file is a file"),
        ("audit out inside train", ["audit", "--samples", root / "samples.npz", "--train", root / "photos",
                                    "--out", root / "photos" / "audit"], "inside the data --train"),
        ("fid resize memory cannot hold", [*f, "--samples", root / "samples.npz", "--ref", data, "--resolution",
                                           100000, "--resize"], "--resolution 100000 with --resize"),
        ("sweep out under a file", ["sweep", "--steps", 2, "--subset", 20, "--out", root / "a-file" / "sweep"], "a-file is a file"),
        ("compare n-samples 0", ["compare", run, "--n-samples", 0], "--n-samples"),
        ("compare sample-steps 0", ["compare", run, "--sample-steps", 0], "--sample-steps"),
        ("compare copy-threshold", ["compare", run, "--copy-threshold", 5], "--copy-threshold"),
        ("compare out unwritable", ["compare", run, "--features", "pixels", "--quality-features", "pixels",
                                    "--n-samples", 4, "--sample-steps", 2, "--out", UNWRITABLE / "c"], str(UNWRITABLE)),
        ("compare out under a file", ["compare", run, "--features", "pixels", "--quality-features", "pixels",
                                      "--n-samples", 4, "--sample-steps", 2, "--out", root / "a-file" / "c"],
         "a-file is a file"),
        ("theory commitment window", ["theory", "commitment", "--high", 2, "--out", root / "commit"], "--high"),
        ("theory commitment low above high", ["theory", "commitment", "--low", 0.95, "--high", 0.5,
                                              "--out", root / "commit"], "--low"),
        ("t2i sample out under a file", ["t2i", "sample", "--run", run, "--out", root / "a-file" / "t2i"], "a-file"),
    ]


@pytest.mark.parametrize("index", range(len(_cases(Path("root")))))
def test_bad_input_one_line_exit_2_nothing_changed(tree: Path, index: int, capsys: pytest.CaptureFixture) -> None:
    cases = _cases(tree)
    name, args, needle = cases[index]
    before = _snapshot(tree)
    capsys.readouterr()
    code, out, err = run_cli([str(a) for a in args], capsys)
    assert code == 2, (name, code, err)
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, (name, err)
    assert needle in err, (name, err)
    assert _snapshot(tree) == before, name


def test_config_types_are_checked_with_the_key_named() -> None:
    good = TrainConfig().to_dict()
    assert TrainConfig.from_dict(json.loads(json.dumps(good))) == TrainConfig()
    for part, key, value, needle in (("optim", "steps", 2.5, "an integer"), ("optim", "lr", "1e-4", "a number"),
                                     ("optim", "betas", [0.9], "a list of two numbers"), ("data", "subset", "all", "an integer or null"),
                                     ("method", "name", 3, "a string"), ("optim", "steps", True, "an integer")):
        bad = json.loads(json.dumps(good))
        bad[part][key] = value
        with pytest.raises(DiffmemError, match=f"'{part}.{key}' must be {needle}"):
            TrainConfig.from_dict(bad)
    with pytest.raises(DiffmemError, match="optim"):
        TrainConfig.from_dict({**good, "optim": [1, 2]})


@pytest.mark.parametrize("err", [OSError(errno.ENOSPC, "No space left on device"),
                                 PermissionError(errno.EACCES, "Permission denied", "/runs/x/log.jsonl")])
def test_disk_full_and_permission_errors_are_one_line(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch, err: OSError) -> None:
    """A full disk while a checkpoint is written, or a permission error anywhere: one line naming the path."""
    from diffmem.train import checkpoint

    def fails(*args, **kwargs):
        raise err

    target = "save_file" if err.errno == errno.ENOSPC else "save_checkpoint"
    monkeypatch.setattr(checkpoint if target == "save_file" else loop, target, fails)
    out = tmp_path / "run"
    code, _, message = run_cli(["train", "--data", str(tree / "data.npz"), "--resolution", "8", "--steps", "2",
                                "--batch", "4", *TINY, "--out", str(out)], capsys)
    assert code == 2 and message.count("\n") == 1 and "Traceback" not in message, message
    where = str(out / "checkpoints" / "step-00000002.tmp") if target == "save_file" else "/runs/x/log.jsonl"
    assert f"cannot write '{where}': {err.strerror}" in message
    assert not (out / "checkpoints" / "step-00000002.tmp").exists()


def test_unwritable_sample_out_is_refused_before_sampling(tree: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import diffmem.generate

    def never(*args, **kwargs):
        raise AssertionError("sampled before checking that --out can be written")

    monkeypatch.setattr(diffmem.generate, "generate", never)
    for out in (UNWRITABLE / "s.npz", UNWRITABLE / "pngs"):
        code, _, err = run_cli(["sample", "--run", str(tree / "run"), "--n", "2", "--device", "cpu", "--quiet",
                                "--out", str(out)], capsys)
        assert code == 2 and str(out) in err and err.count("\n") == 1, err


def test_fid_outputs_are_replaced_only_with_overwrite_and_whole(tree: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from diffmem.evaluate import fid as fid_module

    stats, report = tmp_path / "ref.npz", tmp_path / "fid.json"
    args = ["fid", "--features", "pixels", "--device", "cpu", "--quiet", "--no-cache", "--ref", str(tree / "data.npz"),
            "--samples", str(tree / "samples.npz"), "--save-stats", str(stats), "--out", str(report)]
    assert run_cli(args, capsys)[0] == 0
    assert json.loads(report.read_text())["n_samples"] == 6 and np.load(stats)["mu"].shape == (64,)
    first = stats.read_bytes(), report.read_bytes()
    code, _, err = run_cli(args, capsys)  # again, without --overwrite
    assert code == 2 and "--overwrite" in err and (stats.read_bytes(), report.read_bytes()) == first
    real = fid_module.save_statistics

    def dies_halfway(path, *a, **k):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(fid_module, "save_statistics", dies_halfway)
    assert run_cli([*args, "--overwrite"], capsys)[0] == 130  # click turns the interrupt into "aborted"
    assert (stats.read_bytes(), report.read_bytes()) == first  # the old files stay whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fid.json", "ref.npz"]  # no temporary or lock left
    monkeypatch.setattr(fid_module, "save_statistics", real)
    assert run_cli([*args, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fid.json", "ref.npz"]


def test_method_flags_land_in_their_config_keys(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--mask-p, --mask-delta and --weight-cap reach the settings they name (not their neighbours'), in the
    section of the method that takes them."""
    sections = {}
    for method in ("masking", "ambient"):
        out = tmp_path / method
        code, _, err = run_cli(["train", "--data", str(tree / "data.npz"), "--resolution", "8", "--steps", "1",
                                "--batch", "4", *TINY, "--method", method, "--mask-p", "0.2", "--mask-delta", "0.05",
                                "--sigma-n", "0.5", "--weight-cap", "3", "--out", str(out)], capsys)
        assert code == 0, err
        sections[method] = json.loads((out / "config.json").read_text())["method"]
    assert sections["masking"] == {"name": "masking", "mask_p": 0.2, "mask_delta": 0.05}
    assert sections["ambient"] == {"name": "ambient", "sigma_n": 0.5, "ambient_weight": "plain", "weight_cap": 3.0}
