"""Fine-tuning a tiny random Stable Diffusion (loaded like a hub id) with every method and mitigation."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffmem.errors import DiffmemError
from diffmem.t2i.config import T2IConfig
from diffmem.t2i.train import draw_noisy_latents, read_log, train_t2i

try:
    from t2i_fixtures import captioned, tiny_sd, tiny_sd_v, write_captioned  # noqa: F401 (pytest fixtures)
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import captioned, tiny_sd, tiny_sd_v, write_captioned  # noqa: F401

FAST = dict(steps=2, batch=2, lr=1e-3, checkpoint_every=2, log_every=1)


def config(pretrained: str, data: str, **kw) -> T2IConfig:
    return T2IConfig(pretrained=pretrained, data=data, **{**FAST, **kw})


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("method, mitigation, extra", [
    ("baseline", "none", {}),
    ("ambient", "none", {}),
    ("ambient", "none", {"ambient_weight": "capped", "weight_cap": 2.0}),
    ("ambient", "s23-replace", {"s23_prob": 1.0}),
    ("ambient", "s23-add-words", {"s23_prob": 1.0}),
    ("baseline", "s23-repeat-words", {"s23_prob": 1.0}),
    ("ambient", "s23-embed-noise", {}),
    ("ambient", "w24", {"w24_threshold": 1e6}),
    ("baseline", "w24", {"w24_threshold": 1e6}),
])
def test_fine_tunes_with_each_method_and_mitigation(tiny_sd: str, captioned: str, tmp_path: Path, method: str,
                                                    mitigation: str, extra: dict) -> None:
    t_n = 100 if method == "ambient" else None
    cfg = config(tiny_sd, captioned, method=method, t_n=t_n, mitigation=mitigation, **extra)
    run = train_t2i(cfg, tmp_path / "run", progress=False, cpu=True)
    log = read_log(run)
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)
    assert (run / "done.json").is_file() and (ckpt(run, 2) / "unet.safetensors").is_file()
    info = json.loads((run / "info.json").read_text())
    assert info["prediction_type"] == "epsilon" and info["n_images"] == 6 and info["latent_shape"] == [4, 8, 8]
    saved = load_file(str(run / "latents.safetensors"))
    assert ("noisy" in saved) == (method == "ambient")
    if method == "ambient":
        assert info["sigma_n_equivalent"] == pytest.approx(math.sqrt((1 - info["a_tn"]) / info["a_tn"]))
        assert all(0 <= r["frac_high"] <= 1 for r in log)
    else:
        assert all(r["frac_high"] == 0 for r in log)
    cfg_saved = json.loads((run / "config.json").read_text())
    assert cfg_saved["resolution"] == 32 and cfg_saved["mitigation"] == mitigation
    assert T2IConfig.from_dict(cfg_saved).weighting == cfg.weighting


def test_v_prediction_model(tiny_sd_v: str, captioned: str, tmp_path: Path) -> None:
    run = train_t2i(config(tiny_sd_v, captioned, method="ambient", t_n=50), tmp_path / "run", progress=False, cpu=True)
    assert json.loads((run / "info.json").read_text())["prediction_type"] == "v_prediction"
    assert all(math.isfinite(r["loss"]) for r in read_log(run))


def test_latents_encoded_once_and_noisy_copy_fixed(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    """latents.safetensors holds the VAE means and x_tn = sqrt(a_tn) x0 + sqrt(1-a_tn) z from the run's
    generator; resuming (a longer run with the same config is refused, so resume an interrupted one)
    neither re-encodes nor re-draws them."""
    from diffmem.t2i.components import encode_images, load_components
    from diffmem.t2i.data import load_captioned

    cfg = config(tiny_sd, captioned, method="ambient", t_n=200, steps=4)
    run = tmp_path / "run"
    train_t2i(cfg, run, progress=False, cpu=True, stop_after=2)
    digest = sha(run / "latents.safetensors")
    saved = load_file(str(run / "latents.safetensors"))
    parts = load_components(tiny_sd)
    pixels = load_captioned(captioned).read_pixels(range(6), 32)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(saved["latents"], encode_images(parts.vae, x), rtol=1e-4, atol=1e-5)
    a_tn = float(parts.scheduler.alphas_cumprod[200])
    torch.testing.assert_close(saved["noisy"], draw_noisy_latents(saved["latents"], a_tn, cfg.seed))
    train_t2i(cfg, run, progress=False, cpu=True)  # resume to the end
    assert sha(run / "latents.safetensors") == digest
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]


def test_resume_restores_the_same_state(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    """Interrupted at step 2 and resumed to 4 == trained to 4 in one go (weights, EMA, optimizer, generator)."""
    cfg = config(tiny_sd, captioned, method="ambient", t_n=100, mitigation="s23-add-words", s23_prob=0.5, steps=4,
                 ema_decay=0.9)
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train_t2i(cfg, straight, progress=False, cpu=True)
    train_t2i(cfg, resumed, progress=False, cpu=True, stop_after=2)
    assert not (resumed / "done.json").exists()
    train_t2i(cfg, resumed, progress=False, cpu=True, resume=True)
    for name in ("unet.safetensors", "ema.safetensors"):
        a, b = load_file(str(ckpt(straight, 4) / name)), load_file(str(ckpt(resumed, 4) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(ckpt(straight, 4) / "state.pt", weights_only=True)
    sb = torch.load(ckpt(resumed, 4) / "state.pt", weights_only=True)
    assert torch.equal(sa["generator"], sb["generator"]) and int(sa["step"]) == int(sb["step"]) == 4
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    la, lb = read_log(straight), read_log(resumed)
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_a_run_an_older_diffmem_started_resumes(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    """config.json written before weight_cap existed: the missing field takes its default (the older
    behaviour), so the same command resumes; a real difference is still refused."""
    cfg = config(tiny_sd, captioned, method="ambient", t_n=100, steps=2)
    run = tmp_path / "run"
    train_t2i(cfg, run, progress=False, cpu=True, stop_after=1)
    stored = json.loads((run / "config.json").read_text())
    del stored["weight_cap"]
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(DiffmemError, match=r"another configuration \(t_n: 100 -> 90\)"):
        train_t2i(config(tiny_sd, captioned, method="ambient", t_n=90, steps=2), run, progress=False, cpu=True)
    train_t2i(cfg, run, progress=False, cpu=True, resume=True)
    assert (run / "done.json").is_file() and [r["step"] for r in read_log(run)] == [1, 2]


def test_refuses_foreign_and_finished_runs(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_t2i(config(tiny_sd, captioned), run, progress=False, cpu=True)
    with pytest.raises(DiffmemError, match="already finished"):
        train_t2i(config(tiny_sd, captioned), run, progress=False, cpu=True)
    with pytest.raises(DiffmemError, match="another configuration.*lr"):
        train_t2i(config(tiny_sd, captioned, lr=2e-3), run, progress=False, cpu=True)
    train_t2i(config(tiny_sd, captioned, lr=2e-3), run, progress=False, cpu=True, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(DiffmemError, match="not a diffmem t2i run"):
        train_t2i(config(tiny_sd, captioned), tmp_path / "other", progress=False, cpu=True)
    with pytest.raises(DiffmemError, match="no run to resume"):
        train_t2i(config(tiny_sd, captioned), tmp_path / "new", progress=False, cpu=True, resume=True)


def test_data_changed_since_start_is_reported(tiny_sd: str, tmp_path: Path) -> None:
    data = write_captioned(tmp_path / "d", n=3)
    cfg = config(tiny_sd, str(data), steps=4)
    train_t2i(cfg, tmp_path / "run", progress=False, cpu=True, stop_after=2)
    (data / "metadata.jsonl").write_text((data / "metadata.jsonl").read_text().replace("red cat", "red hat"))
    with pytest.raises(DiffmemError, match="changed since"):
        train_t2i(cfg, tmp_path / "run", progress=False, cpu=True)


def test_gradient_accumulation_warmup_and_checkpointing(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    cfg = config(tiny_sd, captioned, batch=4, grad_accum=2, warmup_steps=4, gradient_checkpointing=True,
                 max_grad_norm=0.0)
    run = train_t2i(cfg, tmp_path / "run", progress=False, cpu=True)
    assert [r["lr"] for r in read_log(run)] == pytest.approx([2.5e-4, 5e-4])
    with pytest.raises(DiffmemError, match="divisible"):
        train_t2i(config(tiny_sd, captioned, batch=3, grad_accum=2), tmp_path / "r2", progress=False, cpu=True)


def test_lora_without_peft_says_how_to_install(tiny_sd: str, captioned: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(DiffmemError, match="pip install peft"):
        train_t2i(config(tiny_sd, captioned, lora_rank=4), tmp_path / "run", progress=False, cpu=True)


def test_lora_trains_only_adapters(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    run = train_t2i(config(tiny_sd, captioned, lora_rank=4, method="ambient", t_n=100), tmp_path / "run",
                    progress=False, cpu=True)
    weights = load_file(str(ckpt(run, 2) / "unet.safetensors"))
    assert weights and all("lora" in k for k in weights)


def _start_of_run(monkeypatch: pytest.MonkeyPatch, cfg: T2IConfig, out: Path, scramble: int) -> dict:
    """The trained parameters as the run starts (before any step), after scrambling torch's global RNG."""
    import diffmem.t2i.train as t2i_train

    seen: list[dict] = []
    real = t2i_train.trainable_state

    def recording(unet: torch.nn.Module) -> dict:
        state = real(unet)
        seen.append({k: v.detach().clone() for k, v in state.items()})
        return state

    monkeypatch.setattr(t2i_train, "trainable_state", recording)
    torch.manual_seed(scramble)  # whatever ran before the run must not matter
    train_t2i(cfg, out, progress=False, cpu=True, stop_after=0)
    monkeypatch.setattr(t2i_train, "trainable_state", real)
    return seen[0]


def test_lora_start_is_seeded_by_the_run_seed(tiny_sd: str, captioned: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters drawn from torch's global RNG (as peft's Gaussian init does; peft itself is stubbed here) start
    identically in two runs with one seed, and differently with another seed."""
    import types

    from diffusers import UNet2DConditionModel

    import diffmem.t2i.train as t2i_train

    stub = types.ModuleType("peft")
    stub.LoraConfig = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "peft", stub)
    real_load = t2i_train.load_components

    def load_without_stub(path: str):  # transformers probes for peft while loading: hide the stub then
        del sys.modules["peft"]
        try:
            return real_load(path)
        finally:
            sys.modules["peft"] = stub

    monkeypatch.setattr(t2i_train, "load_components", load_without_stub)

    def add_adapter(self: torch.nn.Module, config: dict) -> None:
        self.register_parameter("lora_stub", torch.nn.Parameter(torch.randn(16) / config["r"]))

    monkeypatch.setattr(UNet2DConditionModel, "add_adapter", add_adapter)
    starts = [_start_of_run(monkeypatch, config(tiny_sd, captioned, lora_rank=4, seed=seed), tmp_path / f"r{i}", i)
              for i, seed in enumerate((7, 7, 8))]
    assert list(starts[0]) == ["lora_stub"]
    assert torch.equal(starts[0]["lora_stub"], starts[1]["lora_stub"])
    assert not torch.equal(starts[0]["lora_stub"], starts[2]["lora_stub"])


def test_lora_start_is_seeded_with_peft(tiny_sd: str, captioned: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("peft")
    starts = [_start_of_run(monkeypatch, config(tiny_sd, captioned, lora_rank=4, seed=seed), tmp_path / f"r{i}", i)
              for i, seed in enumerate((7, 7, 8))]
    assert starts[0] and all("lora" in k for k in starts[0])
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    assert any(not torch.equal(starts[0][k], starts[2][k]) for k in starts[0])


@pytest.mark.parametrize("kw, match", [
    ({"method": "ambient"}, "needs --t-n"),
    ({"method": "ambient", "t_n": 1000}, r"--t-n must be in \[1, 998\]"),
    ({"method": "ambient", "t_n": 999}, r"--t-n must be in \[1, 998\]"),  # t > 999 never happens
    ({"t_n": 10}, "only applies to --method ambient"),
    ({"mitigation": "w24"}, "needs --w24-threshold"),
    ({"method": "ambient", "t_n": 100, "ambient_weight": "capped", "weight_cap": 0.0}, "--weight-cap must be a positive"),
    ({"method": "ambient", "t_n": 100, "ambient_weight": "heavy"}, "--ambient-weight must be one of plain, compensated"),
    ({"resolution": 30}, "multiple of the VAE factor"),
    ({"pretrained": "/nonexistent/sd"}, "--pretrained /nonexistent/sd: cannot load"),
])
def test_bad_arguments(tiny_sd: str, captioned: str, tmp_path: Path, kw: dict, match: str) -> None:
    args = {"pretrained": tiny_sd, **kw}
    with pytest.raises(DiffmemError, match=match):
        train_t2i(config(data=captioned, **args), tmp_path / "run", progress=False, cpu=True)


def test_bad_data_is_reported_before_training(tiny_sd: str, tmp_path: Path) -> None:
    data = write_captioned(tmp_path / "d", n=2, layout="txt")
    (data / "img001.txt").unlink()
    with pytest.raises(DiffmemError, match="no caption"):
        train_t2i(config(tiny_sd, str(data)), tmp_path / "run", progress=False, cpu=True)
    assert not (tmp_path / "run").exists()
