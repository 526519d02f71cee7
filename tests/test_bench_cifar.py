"""bench/cifar_features.py's degradations against scipy, and bench/cifar_speed.py's candidates (no CIFAR data needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.ndimage


def _bench(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_matches_scipy_gaussian_filter(sigma: float) -> None:
    bench = _bench("cifar_features")
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    ours = bench.gaussian_blur(images, sigma).astype(int)
    # scipy's "mirror" is torch's "reflect" (the edge pixel not repeated); truncate=3 is our 3-sigma radius
    ref = scipy.ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="mirror",
                                        truncate=3.0)
    assert np.abs(ours - np.round(ref)).max() <= 1  # float32 vs float64 rounding


def test_noise_has_the_asked_std_and_is_seeded() -> None:
    bench = _bench("cifar_features")
    gray = np.full((20, 32, 32, 3), 128, np.uint8)  # mid-gray: no clipping at std 0.05
    noisy = bench.add_noise(gray, 0.05, seed=3)
    assert abs((noisy.astype(float) - 128).std() / (0.05 * 255) - 1) < 0.02
    assert np.array_equal(noisy, bench.add_noise(gray, 0.05, seed=3))
    assert not np.array_equal(noisy, bench.add_noise(gray, 0.05, seed=4))


def test_speed_candidates_build_and_step() -> None:
    bench = _bench("cifar_speed")
    nets = {name: bench.Candidate(name, batch=2, sigma_n=0.2) for name in ("tiny", "tiny-a16", "c16")}
    assert nets["c16"].params < nets["tiny"].params < nets["tiny-a16"].params  # attention blocks add parameters
    small = nets["c16"]
    before = [p.detach().clone() for p in small.net.parameters()]
    assert min(small.train_rate(1)) > 0
    assert any(not (a == b).all() for a, b in zip(before, small.net.parameters()))  # the step trained it
    assert min(small.sample_rate(1)) > 0
    half = bench.Candidate("c16", batch=2, sigma_n=0.2, precision="bf16")  # bfloat16 autocast steps too
    assert min(half.train_rate(1)) > 0 and min(half.sample_rate(1)) > 0
