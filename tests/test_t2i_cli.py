"""`diffmem t2i train / sample / audit` end to end on the tiny model, and exit code 2 for user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmem.cli import main

try:
    from t2i_fixtures import captioned, sscd_like, tiny_sd, write_captioned  # noqa: F401 (pytest fixtures)
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import captioned, sscd_like, tiny_sd, write_captioned  # noqa: F401


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> str:
    main(args)
    return capsys.readouterr().out


def test_train_sample_audit(tiny_sd: str, captioned: str, sscd_like: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    out = run_cli(["t2i", "train", "--pretrained", tiny_sd, "--data", captioned, "--out", str(run), "--method",
                   "ambient", "--t-n", "100", "--mitigation", "s23-embed-noise", "--s23-noise-std", "0.2",
                   "--steps", "2", "--batch", "2", "--lr", "1e-3", "--seed", "7", "--checkpoint-every", "2",
                   "--log-every", "1", "--device", "cpu", "--quiet"], capsys)
    assert "s23-embed-noise+ambient(t_n=100)" in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 7 and cfg["s23_noise_std"] == 0.2 and cfg["t_n"] == 100
    (tmp_path / "prompts.txt").write_text("a red cat\nthe blue house\nunused\n")
    samples = tmp_path / "samples"
    run_cli(["t2i", "sample", "--run", str(run), "--out", str(samples), "--prompts", str(tmp_path / "prompts.txt"),
             "--n-prompts", "2", "--n-per-prompt", "2", "--steps", "2", "--device", "cpu", "--quiet"], capsys)
    meta = [json.loads(line) for line in (samples / "metadata.jsonl").read_text().splitlines()]
    assert [m["text"] for m in meta] == ["a red cat"] * 2 + ["the blue house"] * 2
    out = run_cli(["t2i", "audit", "--samples", str(samples), "--features", "pixels", "--features",
                   f"torchscript:{sscd_like}", "--clip", "none", "--fd-features", f"torchscript:{sscd_like}",
                   "--out", str(tmp_path / "audit.json")], capsys)
    assert ("| Method | Sim (pixels, Pearson r) | 95% (pixels, Pearson r) | Sim (sscd_tiny) | 95% (sscd_tiny) "
            "| FD_torchscript |") in out
    assert json.loads((tmp_path / "audit.json").read_text())["rows"][0]["n_samples"] == 4


def test_each_kept_checkpoint_can_be_sampled(tiny_sd: str, captioned: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """--keep-checkpoints all keeps every checkpoint; --checkpoint step-N samples that one (its images differ
    from the newest one's, and sample_info.json says which step); a step not kept, or 'release', is refused in
    one line naming the fix."""
    import numpy as np

    from diffmem.t2i.data import read_caption_folder_images

    run = tmp_path / "run"
    run_cli(["t2i", "train", "--pretrained", tiny_sd, "--data", captioned, "--out", str(run), "--steps", "4",
             "--batch", "2", "--lr", "1e-2", "--checkpoint-every", "1", "--keep-checkpoints", "all", "--log-every",
             "1", "--device", "cpu", "--quiet"], capsys)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [f"step-{k:08d}" for k in (1, 2, 3, 4)]
    images = {}
    for which in ("step-1", "latest"):
        out = tmp_path / which
        run_cli(["t2i", "sample", "--run", str(run), "--out", str(out), "--n-prompts", "1", "--steps", "2",
                 "--checkpoint", which, "--device", "cpu", "--quiet"], capsys)
        images[which] = read_caption_folder_images(out)[0]
        assert json.loads((out / "sample_info.json").read_text())["step"] == (1 if which == "step-1" else 4)
    assert not np.array_equal(images["step-1"], images["latest"])
    for which, needle in (("step-9", "step-1, step-2, step-3, step-4"), ("release", "has no release (release.json)")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["t2i", "sample", "--run", str(run), "--out", str(tmp_path / "never"), "--checkpoint", which,
                     "--device", "cpu", "--quiet"], capsys)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "never").exists()


def test_release_checks_every_kept_checkpoint_and_sample_draws_the_released_one(
        tiny_sd: str, captioned: str, sscd_like: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """t2i release: one check per kept checkpoint (copies of the captions' samples against 810 held-out images,
    the safety test, FD to the held-out images), the safe check of best FD released; its copy count is the
    brute-force one; `t2i sample --checkpoint release` samples that step. Without a release, or with a bad
    flag, one line and exit 2."""
    import numpy as np

    from diffmem.release import choose_release, read_release
    from diffmem.t2i.data import load_captioned, read_caption_folder_images

    run, held = tmp_path / "run", write_captioned(tmp_path / "held", n=810, seed=5)
    run_cli(["t2i", "train", "--pretrained", tiny_sd, "--data", captioned, "--out", str(run), "--steps", "3",
             "--batch", "2", "--lr", "1e-2", "--checkpoint-every", "1", "--keep-checkpoints", "all", "--log-every",
             "1", "--device", "cpu", "--quiet"], capsys)
    for args, needle in ((["sample", "--out", str(tmp_path / "never")], "has no release (release.json)"),
                         (["release", "--heldout", str(held), "--steps", "0"], "--steps must be positive"),
                         (["release", "--heldout", str(write_captioned(tmp_path / "few", n=20, seed=6))],
                          "holds 20 images; the copy threshold (their 99th percentile) needs at least 802"),
                         (["release"], "t2i release needs --heldout DIR"),
                         (["release", "--report-only", "--heldout", str(held), "--seed", "3"],
                          "--report-only checks nothing, so --heldout, --seed would be ignored")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["t2i", args[0], "--run", str(run), *args[1:], "--checkpoint", "release"] if args[0] == "sample"
                    else ["t2i", args[0], "--run", str(run), *args[1:]], capsys)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    out = run_cli(["t2i", "release", "--run", str(run), "--heldout", str(held), "--features", "pixels",
                   "--fd-features", f"torchscript:{sscd_like}", "--steps", "2", "--device", "cpu"], capsys)
    rec = read_release(run)
    assert [c["step"] for c in rec["checks"]] == [1, 2, 3] and "[t2i release] step 3: " in out
    assert rec["released"] is not None and rec["released"]["step"] == choose_release(rec["checks"])["step"]
    assert rec["released"]["safety"]["n_heldout"] == 810 and rec["settings"]["features"] == "pixels"
    assert f"Released: baseline at step {rec['released']['step']}" in out
    samples = tmp_path / "released"
    run_cli(["t2i", "sample", "--run", str(run), "--out", str(samples), "--steps", "2", "--checkpoint", "release",
             "--device", "cpu", "--quiet"], capsys)
    assert json.loads((samples / "sample_info.json").read_text())["step"] == rec["released"]["step"]
    # the released check's copies, by brute force: Pearson r of the released samples to the training images
    def unit(x):
        v = x.reshape(len(x), -1).astype(np.float64)
        v -= v.mean(1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    train_px = (lambda d: d.read_pixels(np.arange(len(d)), 32))(load_captioned(captioned))
    held_px = (lambda d: d.read_pixels(np.arange(len(d)), 32))(load_captioned(held))
    threshold = np.percentile((unit(held_px) @ unit(train_px).T).max(1), 99)
    images = read_caption_folder_images(samples)[0]
    assert int(((unit(images) @ unit(train_px).T).max(1) >= threshold).sum()) == rec["released"]["safety"]["copies"]
    assert rec["released"]["threshold"] == pytest.approx(threshold, abs=1e-5)
    assert len({c["quality"] for c in rec["checks"]}) == 3  # each check sampled its own checkpoint's weights
    # the page shows the released check's own samples, and counts its copies as the certificate does
    from diffmem.data.datasets import load_images

    assert np.array_equal(load_images(str(run / "release" / "released.npz")).images, images)
    page = (run / "release" / "report.html").read_text()
    copies = rec["released"]["safety"]["copies"]
    assert f"(to show: {run / 'release' / 'report.html'})" in out and "diffmem release: run" in page
    assert f"copies ({copies} of {len(images)}, at the certificate's threshold" in (run / "release" / "report.md").read_text()
    assert (run / "release" / "neighbours.png").is_file() and (run / "release" / "last.npz").is_file()
    (run / "release" / "report.html").unlink()
    out = run_cli(["t2i", "release", "--run", str(run), "--report-only", "--device", "cpu"], capsys)
    assert (run / "release" / "report.html").read_text() == page and "release page: " in out


@pytest.mark.parametrize("args, message", [
    (["--method", "ambient"], "needs --t-n"),
    (["--mitigation", "w24"], "--w24-threshold"),
    (["--method", "ambient", "--t-n", "100", "--ambient-weight", "capped", "--weight-cap", "-1"],
     "--weight-cap must be a positive number"),
])
def test_user_errors_exit_2(tiny_sd: str, captioned: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                            args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["t2i", "train", "--pretrained", tiny_sd, "--data", captioned, "--out", str(tmp_path / "r"),
              "--steps", "1", "--batch", "2", "--device", "cpu", "--quiet", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_bad_data_exits_2(tiny_sd: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_captioned(tmp_path / "d", n=2, layout="txt")
    (data / "orphan.txt").write_text("no image")
    with pytest.raises(SystemExit) as exc:
        main(["t2i", "train", "--pretrained", tiny_sd, "--data", str(data), "--out", str(tmp_path / "r"),
              "--steps", "1", "--batch", "2", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "captions without images" in err and "orphan.txt" in err


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture) -> None:
    main(["t2i", "--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("train", "sample", "audit"))
