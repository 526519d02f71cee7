"""Decision levels along sampling trajectories: the suffix rule by hand, and the exact denoiser's copies."""

from __future__ import annotations

import numpy as np
import torch

from diffmem.data.datasets import to_model_range
from diffmem.diffusion.samplers import karras_sigmas
from diffmem.evaluate.decision import Trajectory, decision_summary, identity_trajectory
from diffmem.theory.denoisers import empirical_denoiser


def test_decision_level_is_the_start_of_the_final_suffix() -> None:
    sig = np.array([8.0, 4.0, 2.0, 1.0])
    idx = np.array([[0, 5, 1, 2],
                    [3, 5, 1, 9],
                    [3, 6, 1, 9],
                    [3, 5, 1, 9]])  # [S, B]
    traj = Trajectory(sig, idx, np.zeros_like(idx, float), np.array([3, 5, 1, 2]), np.array([1.0, 0.5, 1.0, 0.2]))
    # sample 0 settles at 4; sample 1 wanders back (settles at 1); 2 is fixed from the start; 3 never ends on 2
    assert traj.decision_levels().tolist() == [4.0, 1.0, 8.0, 0.0]
    summary = decision_summary(traj, copy_threshold=0.9, sigma_n=2.0)
    assert summary["copies"] == 0.5 and summary["median_level_copies"] == 6.0
    assert summary["copies_decided_above_sigma_n"] == 1.0 and summary["all_decided_above_sigma_n"] == 0.5


def test_exact_denoiser_copies_and_decides_at_moderate_noise() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    points = to_model_range(train).to(torch.float64)
    x0 = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    traj = identity_trajectory(empirical_denoiser(points), x0, karras_sigmas(24), train)
    assert traj.nn_index.shape == (24, 32) and np.all(np.diff(traj.sigmas) < 0)
    assert np.all(traj.final_similarity > 0.999)  # the exact optimum replays training images
    assert np.array_equal(traj.nn_index[-1], traj.final_index)
    levels = traj.decision_levels()
    # at sigma 80 D is (nearly) the training mean, so identity is not yet decided for most samples;
    # the images are ~8 apart (random pixels in [-1, 1], 64 dims), so it is decided by sigma ~1
    assert np.mean(levels >= traj.sigmas[0]) < 0.5
    assert np.all(levels >= 1.0)


def test_trace_follows_the_samples_of_diffmem_sample(tmp_path) -> None:
    from conftest import tiny_config, write_npz
    from diffmem.diffusion.samplers import per_sample_noise
    from diffmem.evaluate.features import PixelFeatures
    from diffmem.evaluate.search import nearest_neighbours
    from diffmem.generate import generate
    from diffmem.train.checkpoint import load_denoiser
    from diffmem.train.loop import train
    from diffmem.train.rundir import run_datasets

    spec = str(write_npz(tmp_path / "d.npz", n=12))
    train(tiny_config(spec, name="ambient", sigma_n=0.5, steps=3, subset=8), tmp_path / "run", progress=False)
    net, cfg, meta = load_denoiser(tmp_path / "run")
    images = generate(net, cfg, meta, 5, seed=3, batch=5, progress=False)
    train_set, _ = run_datasets(tmp_path / "run")
    px = PixelFeatures()
    sims, idx = nearest_neighbours(px(images), px(train_set.images))
    x0 = per_sample_noise(3, list(range(5)), (1, 8, 8), 1)[0]
    from diffmem.generate import SampleOptions, method_sigmas

    traj = identity_trajectory(lambda x, s: net(x, s, None), x0, method_sigmas(cfg, SampleOptions())[0],
                               train_set.images)
    assert np.array_equal(traj.final_index, idx[:, 0].numpy())
    assert np.allclose(traj.final_similarity, sims[:, 0].numpy(), atol=1e-5)


def test_trace_cli(tmp_path, capsys) -> None:
    import json

    from conftest import run_cli, tiny_config, write_npz
    from diffmem.train.loop import train

    spec = str(write_npz(tmp_path / "d.npz", n=12))
    train(tiny_config(spec, name="ambient", sigma_n=0.5, steps=3, subset=8), tmp_path / "amb", progress=False)
    train(tiny_config(spec, name="masking", mask_p=0.2, steps=2, subset=8), tmp_path / "mask", progress=False)
    out = tmp_path / "trace"
    code, stdout, err = run_cli(["trace", str(tmp_path / "amb"), "--n", "6", "--steps", "6", "--out", str(out),
                                 "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    rows = json.loads((out / "decision.json").read_text())
    assert len(rows) == 1 and rows[0]["method"] == "ambient" and rows[0]["sigma_n"] == 0.5 and rows[0]["n"] == 6
    assert len(rows[0]["sigmas"]) == 6 and 0.0 <= rows[0]["copies"] <= 1.0
    assert (out / "decision.png").stat().st_size > 0 and "| amb | ambient | 0.5 |" in stdout
    before = (out / "decision.json").read_bytes()
    code, _, err = run_cli(["trace", str(tmp_path / "amb"), "--n", "6", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 2 and "--overwrite" in err and (out / "decision.json").read_bytes() == before
    code, _, err = run_cli(["trace", str(tmp_path / "mask"), "--out", str(tmp_path / "t2"), "--device", "cpu"], capsys)
    assert code == 2 and "masking" in err and not (tmp_path / "t2").exists()
