"""Methods and weightings as objects: the registries match the configuration's names, each method checks its
own settings, a new method needs only its class and its registration, and a weighting's gain is the same
function whether the loss is written in EDM's variance-exploding form or the latent variance-preserving form.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from diffmem import config
from diffmem.config import MethodConfig, TrainConfig
from diffmem.diffusion.methods import METHOD_CLASSES, Ambient, Masking, NoiseOnly, method_of
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting
from diffmem.errors import DiffmemError
from diffmem.sweep.spec import SweepConfig, SweepPoint, point_config, sweep_points
from diffmem.train.checks import validate_config


def test_the_registries_are_the_one_list_of_names() -> None:
    """The command line offers the registered names; the configuration module keeps no list of its own."""
    from diffmem.cli.train import train

    choices = {p.name: list(p.type.choices) for p in train.params if hasattr(p.type, "choices")}
    assert choices["method"] == list(METHOD_CLASSES) and choices["ambient_weight"] == list(WEIGHTINGS)
    assert not hasattr(config, "METHODS") and not hasattr(config, "AMBIENT_WEIGHTINGS")
    with pytest.raises(DiffmemError, match="--method 'dpm' is not one of edm, ambient, masking, noisy-only"):
        validate_config(TrainConfig(method=MethodConfig("dpm")))
    with pytest.raises(DiffmemError, match="--ambient-weight must be one of plain, compensated, capped"):
        validate_config(TrainConfig(method=MethodConfig("edm", ambient_weight="heavy")))
    with pytest.raises(DiffmemError, match="--weight-cap must be a positive number"):
        validate_config(TrainConfig(method=MethodConfig("edm", weight_cap=0.0)))


@pytest.mark.parametrize("method, flag", [(MethodConfig("ambient", sigma_n=0.0), "--sigma-n"),
                                          (MethodConfig("noisy-only", sigma_n=0.0), "--sigma-n"),
                                          (MethodConfig("masking", mask_p=0.0), "--mask-p")])
def test_each_method_checks_its_own_settings(method: MethodConfig, flag: str) -> None:
    with pytest.raises(DiffmemError, match=f"^--method {method.name} needs.*{flag}"):
        method_of(method)
    with pytest.raises(DiffmemError, match=flag):  # and the one check of a training configuration runs it
        validate_config(TrainConfig(method=method))


def test_settings_another_method_ignores_are_not_refused() -> None:
    assert method_of(MethodConfig("edm")).param is None  # sigma_n 0 and mask_p 0 are a baseline's defaults
    assert method_of(MethodConfig("ambient", sigma_n=0.5, mask_p=0.0)).param == 0.5
    assert isinstance(validate_config(TrainConfig(method=MethodConfig("noisy-only", sigma_n=1.0))), NoiseOnly)


def test_objects_say_what_their_method_needs() -> None:
    amb, noise_only, mask = Ambient(0.5), NoiseOnly(0.5), Masking(0.2)
    assert (amb.needs_noisy_copies, amb.train_sigma_min, amb.sample_stop) == (True, 0.0, None)
    assert (noise_only.train_sigma_min, noise_only.sample_stop) == (0.5, 0.5)
    assert (mask.needs_masks, mask.extra_channels, mask.param) == (True, 1, 0.2)
    assert Ambient(0.5, make_weighting("capped", 3)).label() == "Algorithm 1 (ambient), sigma_n 0.5, capped 3"


@dataclasses.dataclass(frozen=True)
class _Twice(Ambient):
    """A new method for the test: Algorithm 1 under another name (only its class and its registration)."""

    name: ClassVar[str] = "twice"
    title: ClassVar[str] = "twice"
    param_tag: ClassVar[str] = "tw"


def test_a_new_method_is_one_class_and_its_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHOD_CLASSES, "twice", _Twice)
    sc = SweepConfig(TrainConfig(), methods=("edm", "twice"), sigma_ns=(0.5, 1.0), subsets=(50,))
    points = sweep_points(sc)
    assert [p.name for p in points] == ["n50-edm-seed0", "n50-twice-tw0.5-seed0", "n50-twice-tw1-seed0"]
    assert [p.param for p in points] == [None, 0.5, 1.0]
    obj = method_of(point_config(sc, points[2]).method)
    assert isinstance(obj, _Twice) and obj.sigma_n == 1.0


def test_sweep_folder_names_are_unchanged() -> None:
    assert SweepPoint("ambient", 0.5, 0.0, 300, 1).name == "n300-ambient-sn0.5-seed1"
    assert SweepPoint("masking", 0.0, 0.2, None, 0).name == "nall-masking-p0.2-seed0"
    assert SweepPoint("noisy-only", 1.0, 0.0, 50, 2).name == "n50-noisy-only-sn1-seed2"
    assert SweepPoint("edm", subset=50).name == "n50-edm-seed0"


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_gain_of_the_factor_is_the_gain_of_the_noise_levels(name: str) -> None:
    """EDM: |yhat - y|^2 = (1 - rho)^2 |D - Dt|^2 with rho = sigma_n^2 / s^2, so gain(s, sigma_n) must equal
    gain_of_factor(1 - rho): the pixel and latent losses then weight alike."""
    w = make_weighting(name, 2.5)
    sigma_n = 0.5
    s = torch.tensor([0.5001, 0.55, 0.7, 1.0, 3.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(w.gain(s, sigma_n), w.gain_of_factor(1 - sigma_n**2 / s**2), rtol=1e-9, atol=0)
