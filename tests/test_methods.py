"""Methods and weightings as objects: the registries match the configuration's names, each method checks its
own settings, a new method needs only its class and its registration, and a weighting's gain is the same
function whether the loss is written in EDM's variance-exploding form or the latent variance-preserving form.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest
import torch

from diffmem import config
from diffmem.config import MethodConfig, TrainConfig
from diffmem.diffusion.methods import (METHOD_CLASSES, Ambient, Baseline, Masking, NoiseOnly, build_method,
                                      method_config, method_of)
from diffmem.diffusion.weighting import WEIGHTINGS, make_weighting
from diffmem.errors import DiffmemError
from diffmem.method_looks import method_label
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
        validate_config(TrainConfig(method=MethodConfig("ambient", sigma_n=0.5, ambient_weight="heavy")))
    with pytest.raises(DiffmemError, match="--weight-cap must be a positive number"):
        validate_config(TrainConfig(method=MethodConfig("ambient", sigma_n=0.5, weight_cap=0.0)))


@pytest.mark.parametrize("method, flag", [(MethodConfig("ambient", sigma_n=0.0), "--sigma-n"),
                                          (MethodConfig("noisy-only", sigma_n=0.0), "--sigma-n"),
                                          (MethodConfig("masking", mask_p=0.0), "--mask-p")])
def test_each_method_checks_its_own_settings(method: MethodConfig, flag: str) -> None:
    with pytest.raises(DiffmemError, match=f"^--method {method.name} needs.*{flag}"):
        method_of(method)
    with pytest.raises(DiffmemError, match=flag):  # and the one check of a training configuration runs it
        validate_config(TrainConfig(method=method))


def test_a_section_holds_its_methods_settings_only() -> None:
    """A method takes from a pool of flags the settings it declares; its section refuses any other (a typo)."""
    pool = dict(sigma_n=0.5, ambient_weight="plain", weight_cap=4.0, mask_p=0.0, mask_delta=0.1)
    assert method_config("edm", **pool) == MethodConfig("edm")
    assert method_config("ambient", **pool) == MethodConfig("ambient", sigma_n=0.5, ambient_weight="plain",
                                                            weight_cap=4.0)
    assert method_config("masking", mask_p=0.3).settings == {"mask_p": 0.3, "mask_delta": 0.1}  # its defaults
    assert method_of(MethodConfig("edm")).param is None
    assert isinstance(validate_config(TrainConfig(method=MethodConfig("noisy-only", sigma_n=1.0))), NoiseOnly)
    with pytest.raises(DiffmemError, match="method.sigma_n is not a setting of --method edm"):
        method_of(MethodConfig("edm", sigma_n=0.5))
    with pytest.raises(DiffmemError, match=r"method.sigma is not a setting of --method ambient \(its settings: "
                                           r"sigma_n, "):
        method_of(MethodConfig("ambient", sigma=0.5))
    with pytest.raises(DiffmemError, match="'method.sigma_n' must be a number"):
        method_of(MethodConfig("ambient", sigma_n="0.5"))
    # the run's section is the object's: built once per run, it gives back the section it was built from
    section = method_config("ambient", sigma_n=0.5, ambient_weight="capped", weight_cap=3.0)
    assert build_method(TrainConfig(method=section)).config() == section


def test_objects_say_what_their_method_needs() -> None:
    amb, noise_only, mask = Ambient(0.5), NoiseOnly(0.5), Masking(0.2)
    x0 = torch.zeros(3, 1, 4, 4)
    assert (set(amb.prepare(x0, 0)), amb.train_sigma_min, amb.sample_stop) == ({"y"}, 0.0, None)
    assert (noise_only.train_sigma_min, noise_only.sample_stop) == (0.5, 0.5)
    assert (set(mask.prepare(x0, 0)), mask.extra_channels, mask.param) == ({"mask"}, 1, 0.2)
    assert set(mask.draw(torch.Generator().manual_seed(0), 3, (1, 4, 4))) == {"extra_mask"}
    assert Baseline().prepare(x0, 0) == {} and Baseline().draw(torch.Generator(), 3, (1, 4, 4)) == {}
    assert mask.sample_inputs(0, [0, 1], (4, 4)).shape == (2, 1, 4, 4) and amb.sample_inputs(0, [0], (4, 4)) is None
    assert Ambient(0.5, "capped", 3).weighting == make_weighting("capped", 3)
    capped = Ambient(0.5, "capped", 3)
    assert method_label(capped.name, capped.config().settings, capped.param_field, capped.weighting.label()) == \
        "Algorithm 1 (ambient), sigma_n 0.5, capped 3"


@dataclasses.dataclass(frozen=True)
class _Twice(Ambient):
    """A new method for the test: Algorithm 1 under another name (only its class and its registration)."""

    name: ClassVar[str] = "twice"
    param_tag: ClassVar[str] = "tw"


def test_a_new_method_is_one_class_and_its_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHOD_CLASSES, "twice", _Twice)
    sc = SweepConfig(TrainConfig(), methods=("edm", "twice"), values={"sigma_n": (0.5, 1.0)}, subsets=(50,))
    points = sweep_points(sc)
    assert [p.name for p in points] == ["n50-edm-seed0", "n50-twice-tw0.5-seed0", "n50-twice-tw1-seed0"]
    assert [p.param for p in points] == [None, 0.5, 1.0]
    obj = method_of(point_config(sc, points[2]).method)
    assert isinstance(obj, _Twice) and obj.sigma_n == 1.0


def test_sweep_folder_names_are_unchanged() -> None:
    assert SweepPoint("ambient", 0.5, 300, 1).name == "n300-ambient-sn0.5-seed1"
    assert SweepPoint("masking", 0.2, None, 0).name == "nall-masking-p0.2-seed0"
    assert SweepPoint("noisy-only", 1.0, 50, 2).name == "n50-noisy-only-sn1-seed2"
    assert SweepPoint("edm", subset=50).name == "n50-edm-seed0"


def test_an_older_flat_method_section_still_loads() -> None:
    """config.json before methods had their own sections: one flat union of every method's settings. Each of the
    four methods of that time keeps its own (a missing weight_cap takes its default), so such a run loads,
    resumes (the section is the one the same flags give today) and reports."""
    flat = {"sigma_n": 0.5, "ambient_weight": "capped", "mask_p": 0.0, "mask_delta": 0.1}
    old = TrainConfig().to_dict()
    for name, want in [("ambient", MethodConfig("ambient", sigma_n=0.5, ambient_weight="capped", weight_cap=4.0)),
                       ("noisy-only", MethodConfig("noisy-only", sigma_n=0.5, ambient_weight="capped",
                                                   weight_cap=4.0)),
                       ("masking", MethodConfig("masking", mask_p=0.0, mask_delta=0.1)), ("edm", MethodConfig())]:
        old["method"] = {"name": name, **flat}
        cfg = TrainConfig.from_dict(old)
        assert cfg.method == want and cfg.to_dict()["method"] == {"name": name, **want.settings}
    old["method"] = {"name": "edm", "sigma_n": float("nan")}  # not the flat union: a setting edm does not take
    with pytest.raises(DiffmemError, match="method.sigma_n is not a setting of --method edm"):
        validate_config(TrainConfig.from_dict(old))
    old["method"] = {"name": "ambient", **flat, "weight_cap": 3.0}
    assert TrainConfig.from_dict(old).method == method_config("ambient", sigma_n=0.5, ambient_weight="capped",
                                                              weight_cap=3.0)


def test_a_method_section_is_frozen_hashable_and_travels() -> None:
    m = MethodConfig("ambient", sigma_n=0.5, weight_cap=3.0)
    assert m == MethodConfig("ambient", weight_cap=3.0, sigma_n=0.5) and hash(m) == hash(MethodConfig(
        "ambient", weight_cap=3.0, sigma_n=0.5))
    assert m != MethodConfig("ambient", sigma_n=0.5) and m.sigma_n == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.sigma_n = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no setting 'mask_p'"):
        m.mask_p  # noqa: B018
    assert pickle.loads(pickle.dumps(TrainConfig(method=m))).method == m  # to a sweep's processes
    assert copy.deepcopy(m) == m


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_gain_of_the_factor_is_the_gain_of_the_noise_levels(name: str) -> None:
    """EDM: |yhat - y|^2 = (1 - rho)^2 |D - Dt|^2 with rho = sigma_n^2 / s^2, so gain(s, sigma_n) must equal
    gain_of_factor(1 - rho): the pixel and latent losses then weight alike."""
    w = make_weighting(name, 2.5)
    sigma_n = 0.5
    s = torch.tensor([0.5001, 0.55, 0.7, 1.0, 3.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(w.gain(s, sigma_n), w.gain_of_factor(1 - sigma_n**2 / s**2), rtol=1e-9, atol=0)
