"""Memorization statistics: self-audit scores 1, held-out scores lower, calibrated thresholds, JSON keys, and
each ratio test against a brute-force computation of its published definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffmem.evaluate.memorization import (
    DEFAULT_THRESHOLDS,
    fraction_above,
    memorization_analysis,
    memorization_report,
    carlini_ratio,
    nn1_nn2_ratio,
    similarity_label,
    threshold_key,
)


def _clusters(n: int, seed: int, centres: torch.Tensor) -> torch.Tensor:
    """Points near random centres (real images of one distribution, in a toy feature space)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, centres.shape[0], (n,), generator=gen)
    return centres[pick] + 0.6 * torch.randn(n, centres.shape[1], generator=gen)


@pytest.fixture
def sets() -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 2
    return _clusters(60, 1, centres), _clusters(40, 2, centres)


def test_training_set_against_itself(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    rep = memorization_report(train, train, held)
    assert rep["similarity"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert rep["similarity"]["min"] == pytest.approx(1.0, abs=1e-6)
    assert rep["fraction_above"] == {threshold_key(t): 1.0 for t in DEFAULT_THRESHOLDS}
    assert rep["ratio_test"]["fraction_below"] == 1.0  # distance 0 to the nearest: ratio 0
    assert all(v == 1.0 for v in rep["fraction_above_calibrated"].values())


def test_heldout_scores_lower(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    rep = memorization_report(held, train, held, ratio_k=5)
    h = rep["heldout"]
    assert h["similarity"]["mean"] < 0.99 and h["similarity"]["max"] < 1.0
    assert h["ratio_test"]["fraction_below"] < 0.2
    # samples = held-out images: same numbers as the held-out block
    assert rep["similarity"] == h["similarity"]
    assert sum(h["fraction_above"].values()) < len(DEFAULT_THRESHOLDS)


def test_keys_thresholds_and_calibration(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, held = sets
    samples = torch.cat([train[:10], held[:10]])
    rep, arrays = memorization_analysis(samples, train, held, (0.5, 0.9), calibration_percentiles=(90.0,),
                                        ratio_k=5, features="toy")
    json.dumps(rep)  # serializable
    for key in ("features", "n_samples", "n_train", "n_heldout", "similarity", "fraction_above", "ratio_test",
                "calibrated_thresholds", "fraction_above_calibrated", "heldout", "warnings"):
        assert key in rep
    assert set(rep["similarity"]) >= {"mean", "median", "p95", "max"}
    assert list(rep["fraction_above"]) == ["0.5", "0.9"]
    assert rep["n_samples"] == 20 and rep["n_train"] == 60 and rep["n_heldout"] == 40
    assert rep["ratio_test"]["k"] == 5 and rep["ratio_test"]["threshold"] == pytest.approx(1 / 3)
    cal = rep["calibrated_thresholds"]["heldout_p90"]
    assert cal == pytest.approx(np.percentile(arrays["heldout_nn_similarity"].astype(np.float64), 90), abs=1e-6)
    # the first 10 samples are training images: all above the calibrated threshold; held-out ones mostly not
    assert rep["fraction_above_calibrated"]["heldout_p90"] >= 0.5
    assert rep["heldout"]["fraction_above_calibrated"]["heldout_p90"] == pytest.approx(0.1, abs=0.03)
    assert set(arrays) == {"nn_index", "nn_similarity", "ratio", "ratio_nn1_nn2", "heldout_nn_index",
                           "heldout_nn_similarity", "heldout_ratio", "heldout_ratio_nn1_nn2"}
    assert rep["similarity_measure"] == "cosine similarity of toy embeddings"
    assert np.array_equal(arrays["nn_index"][:10], np.arange(10))


def test_without_heldout_warns(sets: tuple[torch.Tensor, torch.Tensor]) -> None:
    train, _ = sets
    rep = memorization_report(train[:5], train)
    assert rep["heldout"] is None and rep["calibrated_thresholds"] is None
    assert any("held-out" in w for w in rep["warnings"])


def test_fraction_helpers_and_labels() -> None:
    assert fraction_above(np.array([0.1, 0.9, 0.95]), (0.9,)) == {"0.9": pytest.approx(2 / 3)}
    assert threshold_key(0.875) == "0.875" and threshold_key(0.9) == "0.9"
    assert similarity_label("pixels").startswith("Pearson correlation")
    assert similarity_label("dinov2:facebook/dinov2-base@224").startswith("cosine similarity")


def _sims_for(distances: list[float]) -> np.ndarray:
    """Cosine similarities of unit vectors at the given distances: s = 1 - d^2 / 2."""
    return 1.0 - np.asarray([distances], dtype=np.float64) ** 2 / 2


def test_ratio_definitions_on_hand_computed_distances() -> None:
    """Distances (0.2, 1, 1, 1): Carlini 0.2 / (0.5 * 0.8) = 0.5 (not flagged), NN1/NN2 0.2 (flagged); the
    former mix d_1 / mean = 0.25 would flag it. (0.1, 0.2, 1, 1): Carlini 0.1 / (0.5 * 0.575) = 0.348,
    NN1/NN2 0.5 (neither flags); the mix gives 0.174."""
    assert carlini_ratio(_sims_for([0.2, 1, 1, 1]))[0] == pytest.approx(0.5, rel=1e-12)
    assert nn1_nn2_ratio(_sims_for([0.2, 1, 1, 1]))[0] == pytest.approx(0.2, rel=1e-12)
    assert carlini_ratio(_sims_for([0.1, 0.2, 1, 1]))[0] == pytest.approx(0.1 / (0.5 * 0.575), rel=1e-12)
    assert nn1_nn2_ratio(_sims_for([0.1, 0.2, 1, 1]))[0] == pytest.approx(0.5, rel=1e-12)
    # on a training image the ratio is 0, even when the training set holds it twice (0 / 0)
    assert carlini_ratio(_sims_for([0, 0, 1]))[0] == 0.0 and nn1_nn2_ratio(_sims_for([0, 0, 1]))[0] == 0.0


def _brute_force(queries: torch.Tensor, train: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both ratios from every l2 distance of the unit-normalised features, sorted in float64."""
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    t = torch.nn.functional.normalize(train.double(), dim=1)
    d = np.sort(torch.cdist(q, t).numpy(), axis=1)
    return d[:, 0] / (0.5 * d[:, :k].mean(axis=1)), d[:, 0] / d[:, 1]


@pytest.mark.parametrize("ratio_k", [5, 50])
def test_ratio_tests_match_brute_force(ratio_k: int) -> None:
    """Per-image ratios and flagged shares equal a brute-force computation of each definition; k is capped at
    the training-set size (30 images, so k = 30 for ratio_k = 50) and the report says which is which."""
    gen = torch.Generator().manual_seed(3)
    train = torch.randn(30, 6, generator=gen)
    near = train[:12] + 0.08 * torch.randn(12, 6, generator=gen)  # close to one training point each
    queries = torch.cat([near, torch.randn(28, 6, generator=gen)])
    rep, arrays = memorization_analysis(queries, train, queries, ratio_k=ratio_k)
    k = min(ratio_k, 30)
    carlini, nn = _brute_force(queries, train, k)
    np.testing.assert_allclose(arrays["ratio"], carlini, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arrays["ratio_nn1_nn2"], nn, rtol=1e-4, atol=1e-6)
    tests = rep["ratio_tests"]
    assert tests["carlini"]["definition"] == "carlini" and "Carlini" in tests["carlini"]["citation"]
    assert tests["carlini"]["k"] == k and tests["carlini"]["alpha"] == 0.5 and tests["nn1_nn2"]["k"] == 2
    assert tests["carlini"]["fraction_below"] == pytest.approx(float((carlini < 1 / 3).mean()))
    assert tests["nn1_nn2"]["fraction_below"] == pytest.approx(float((nn < 1 / 3).mean()))
    assert rep["ratio_test"] == tests["carlini"]  # the former key holds Carlini et al.'s definition
    assert 0 < tests["nn1_nn2"]["fraction_below"] < 1 and tests["carlini"]["fraction_below"] < 1
    capped = [w for w in rep["warnings"] if "only 30" in w]
    assert bool(capped) == (ratio_k > 30)


def test_ratio_k_one_still_gives_nn1_nn2() -> None:
    gen = torch.Generator().manual_seed(4)
    train, queries = torch.randn(10, 4, generator=gen), torch.randn(6, 4, generator=gen)
    rep, arrays = memorization_analysis(queries, train, ratio_k=1)
    assert rep["ratio_tests"]["carlini"] is None and "ratio" not in arrays
    np.testing.assert_allclose(arrays["ratio_nn1_nn2"], _brute_force(queries, train, 2)[1], rtol=1e-4)


def test_heldout_digits_are_not_flagged() -> None:
    """300 training digits, the other 1497 held out, mean-centred pixel features: neither definition calls a
    held-out digit a copy (the former mix, d_1 / mean(d_1..d_50) < 1/3, flagged 2-4% of them)."""
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.features import PixelFeatures

    images = load_images("builtin:digits", resolution=8).images
    feats = PixelFeatures()(images)
    perm = np.random.default_rng(0).permutation(len(images))
    train, held = feats[perm[:300]], feats[perm[300:]]
    rep = memorization_report(held, train, features="pixels")
    assert rep["ratio_tests"]["carlini"]["fraction_below"] == 0.0
    assert rep["ratio_tests"]["nn1_nn2"]["fraction_below"] == 0.0
    assert rep["similarity_measure"].startswith("Pearson correlation")
    assert not any("averages over" in w for w in rep["warnings"])  # 300 >= 50: k is not capped


def _digit_features(res: int = 8):
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.features import PixelFeatures

    images = load_images("builtin:digits", resolution=res).images
    perm = np.random.default_rng(0).permutation(len(images))
    return PixelFeatures(), images[perm[:300]], images[perm[300:800]], images[perm[800:]]


def test_samples_unlike_the_data_get_a_warning() -> None:
    """Noise 'samples' copy nothing, yet they are not the data's kind of image: their median nearest-training
    similarity sits far below the held-out digits' 1st percentile, and the report says so. Unseen real digits
    used as samples (the other side of the rule) get no such warning."""
    px, train, held, other = _digit_features()
    noise = np.random.default_rng(1).integers(0, 256, size=(200,) + train.shape[1:], dtype=np.uint8)
    rep = memorization_report(px(noise), px(train), px(held), features="pixels")
    unlike = [w for w in rep["warnings"] if "not the data's kind of image" in w]
    assert len(unlike) == 1
    h1 = float(np.percentile(memorization_analysis(px(held), px(train), features="pixels")[1]["nn_similarity"], 1))
    assert rep["similarity"]["median"] < h1 and f"{h1:.3f}" in unlike[0]
    assert f"{rep['similarity']['median']:.3f}" in unlike[0]
    real = memorization_report(px(other), px(train), px(held), features="pixels")
    assert not any("not the data's kind" in w for w in real["warnings"])
    assert rep["fraction_above_calibrated"]["heldout_p99"] == 0.0  # no copies: a clean verdict without the warning


def test_unlike_data_rule_is_the_heldout_first_percentile() -> None:
    """The boundary: a median at the held-out 1st percentile passes, just below it warns."""
    from diffmem.evaluate.memorization import unlike_data_warning

    held = np.linspace(0.5, 1.0, 1001)  # 1st percentile 0.505
    floor = float(np.percentile(held, 1))
    assert unlike_data_warning(np.full(11, floor), held) == []
    assert unlike_data_warning(np.full(11, floor - 1e-3), held) != []
    samples = np.concatenate([np.full(6, 0.2), np.full(5, 0.99)])  # median 0.2: a few good samples do not hide it
    assert "0.200" in unlike_data_warning(samples, held)[0]
    assert unlike_data_warning(np.concatenate([np.full(5, 0.2), np.full(6, 0.9)]), held) == []
    assert unlike_data_warning(np.zeros(0), held) == [] == unlike_data_warning(held, np.zeros(0))


def test_variants_of_one_image_count_once_so_the_ratio_tests_compare_distinct_images() -> None:
    """Training features given as blocks of variants (e.g. shifted copies of n images, the later blocks
    computed when reached): the neighbours of the ratio tests are distinct images, each at its best
    variant, as a brute-force max over the variants of every image gives; searched as one set of 4n
    separate images, a sample's second "neighbour" is often its own image again."""
    from diffmem.evaluate.memorization import carlini_ratio, memorization_analysis, nn1_nn2_ratio

    g = torch.Generator().manual_seed(3)
    n, variants, dim, k = 30, 4, 12, 6
    base = torch.randn(n, dim, generator=g)
    train = torch.cat([base + 0.3 * torch.randn(n, dim, generator=g) for _ in range(variants)])  # near each other
    samples = torch.cat([base[:8] + 0.2 * torch.randn(8, dim, generator=g), torch.randn(12, dim, generator=g)])
    blocks = [train[:n]] + [lambda v=v: train[v * n:(v + 1) * n] for v in range(1, variants)]  # lazy blocks
    rep, arr = memorization_analysis(samples, blocks, None, ratio_k=k)

    unit = torch.nn.functional.normalize
    sims = (unit(samples, dim=1) @ unit(train, dim=1).T).numpy().reshape(len(samples), variants, n)
    best = sims.max(axis=1)  # brute force: each image at its most similar variant
    top = np.sort(best, axis=1)[:, ::-1]
    assert np.allclose(arr["nn_similarity"], top[:, 0], atol=1e-6)
    assert (arr["nn_index"] % n == best.argmax(axis=1)).all()
    assert np.allclose(arr["ratio"], carlini_ratio(top[:, :k]), atol=1e-5)
    assert np.allclose(arr["ratio_nn1_nn2"], nn1_nn2_ratio(top), atol=1e-5)
    assert rep["n_train"] == n and rep["ratio_tests"]["carlini"]["k"] == k

    _, plain = memorization_analysis(samples, train, None, ratio_k=k)  # the variants as separate images
    assert np.median(plain["ratio_nn1_nn2"]) > np.median(arr["ratio_nn1_nn2"]) + 0.1
    with pytest.raises(ValueError, match="block 1 has 29 rows, block 0 30"):
        memorization_analysis(samples, [train[:n], train[n:2 * n - 1]], None)
