"""The training stack shared by pixel and latent (t2i) training: one EMA, one checkpoint state, one log
record, one NaN guard (diffmem.train.stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, write_npz
from diffmem.errors import DiffmemError
from diffmem.train.checkpoint import latest_checkpoint, save_checkpoint
from diffmem.train.stack import EMA, ema_beta, ema_warmup_beta, restore_training_state, training_state

try:
    from t2i_fixtures import captioned, tiny_sd  # noqa: F401 (pytest fixtures)
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import captioned, tiny_sd  # noqa: F401


def _moved(model: torch.nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by * torch.randn_like(p))


def test_ema_of_a_dict_of_parameters_is_the_ema_of_the_module() -> None:
    """The same average whether built on the module (pixel runs) or on its parameters by name (t2i)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    of_module, of_dict = EMA(model), EMA(dict(model.named_parameters()))
    for beta in (0.5, 0.9, 0.99):
        _moved(model, 1.0)
        model.train()(torch.randn(5, 3))  # moves BatchNorm's running statistics (buffers)
        of_module.update(model, beta)
        of_dict.update(dict(model.named_parameters()), beta)
    assert set(of_dict.state_dict()) == {k for k, _ in model.named_parameters()}
    for k, v in of_dict.state_dict().items():
        assert torch.equal(v, of_module.state_dict()[k]), k
        assert not torch.equal(v, dict(model.named_parameters())[k])  # an average, not a copy
    # the module's EMA also copies its buffers, so the frozen copy can be sampled
    assert torch.equal(of_module.model[1].running_mean, model[1].running_mean)
    assert of_module.model is not None and not any(p.requires_grad for p in of_module.model.parameters())


def test_ema_of_a_trained_subset_keeps_only_that_subset() -> None:
    """LoRA trains a few parameters: the EMA holds those (float32) and refuses a file with others."""
    model = torch.nn.Linear(2, 2)
    trained = {"bias": model.bias}
    ema = EMA(trained)
    assert list(ema.state_dict()) == ["bias"] and ema.model is None
    before = ema.state_dict()["bias"].clone()
    with torch.no_grad():
        model.bias.add_(1.0)
        model.weight.add_(1.0)
    ema.update(trained, 0.75)
    torch.testing.assert_close(ema.state_dict()["bias"], 0.75 * before + 0.25 * model.bias.detach())
    other = EMA(trained)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.state_dict()["bias"], ema.state_dict()["bias"])
    with pytest.raises(DiffmemError, match=r"other parameters.*missing \['bias'\].*unexpected \['weight'\]"):
        other.load_state_dict({"weight": model.weight.detach()})


def test_both_decay_rules() -> None:
    assert ema_beta(64, 5.0, None) == pytest.approx(0.5 ** (64 / 5000))  # EDM: a half-life of 5 kimg
    assert ema_beta(64, 5.0, 0.9) == 0.9  # a fixed decay
    assert ema_warmup_beta(0, 0.9999) == pytest.approx(0.1)  # diffusers' warm-up: (1 + step) / (10 + step)
    assert ema_warmup_beta(90, 0.9999) == pytest.approx(91 / 100)
    assert ema_warmup_beta(10**7, 0.9999) == 0.9999


def test_a_restored_state_continues_the_same_draws(tmp_path: Path) -> None:
    """Optimizer, run generator and torch's RNG come back from the one checkpoint writer's state.pt."""
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3, generator=g)).sum().backward()
        opt.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path, 3, {"model.safetensors": net.state_dict()}, training_state(opt, g, 3), {})
    expect_g, expect_rng = torch.randn(4, generator=g), torch.randn(4)
    fresh = torch.nn.Linear(3, 1)
    fresh_opt, fresh_g = torch.optim.AdamW(fresh.parameters(), lr=1e-2), torch.Generator().manual_seed(9)
    torch.manual_seed(0)
    step, state = restore_training_state(latest_checkpoint(tmp_path), {"model.safetensors": fresh.load_state_dict},
                                         fresh_opt, fresh_g)
    assert step == 3 and "scaler" not in state
    assert torch.equal(torch.randn(4, generator=fresh_g), expect_g) and torch.equal(torch.randn(4), expect_rng)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), fresh.parameters()))
    for a, b in zip(opt.state.values(), fresh_opt.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def _poison(monkeypatch: pytest.MonkeyPatch, module, call: int) -> None:
    """Make the `call`-th reduced log window's first step a NaN loss, in the trainer `module`."""
    real, calls = module.reduce_window, {"n": 0}

    def poisoned(window, world):
        stats = real(window, world)
        calls["n"] += 1
        if calls["n"] == call:
            stats[0, 0] = float("nan")
        return stats

    monkeypatch.setattr(module, "reduce_window", poisoned)


def _pixel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: int) -> tuple[Path, str]:
    import diffmem.train.loop as loop

    _poison(monkeypatch, loop, call)
    run = tmp_path / "pixel"
    cfg = tiny_config(str(write_npz(tmp_path / "d.npz")), steps=4, checkpoint_every=2, log_every=2)
    with pytest.raises(DiffmemError) as err:
        loop.train(cfg, run, progress=False)
    return run, str(err.value)


def _latent(tiny_sd: str, captioned: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: int
            ) -> tuple[Path, str]:
    import diffmem.t2i.train as t2i_train
    from diffmem.t2i.config import T2IConfig

    _poison(monkeypatch, t2i_train, call)
    run = tmp_path / "latent"
    cfg = T2IConfig(pretrained=tiny_sd, data=captioned, steps=4, batch=2, lr=1e-3, checkpoint_every=2, log_every=2)
    with pytest.raises(DiffmemError) as err:
        t2i_train.train_t2i(cfg, run, progress=False, cpu=True)
    return run, str(err.value)


@pytest.mark.parametrize("call, step, kept", [
    (2, 3, "the last good checkpoint is {run}/checkpoints/step-00000002"),
    (1, 1, "no checkpoint was written before it (in {run}/checkpoints)"),
])
def test_pixel_and_latent_training_stop_on_nan_with_one_message(tiny_sd: str, captioned: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch, call: int,
                                                                step: int, kept: str) -> None:
    """One NaN guard: the same one line, naming the first bad step and the last good checkpoint."""
    messages = []
    for run, message in (_pixel(tmp_path, monkeypatch, call),
                         _latent(tiny_sd, captioned, tmp_path, monkeypatch, call)):
        assert message == (f"the loss became nan at step {step}; {kept.format(run=run)}. "
                           "Lower --lr or check the data")
        assert not (run / "done.json").exists()
        ckpt = latest_checkpoint(run)
        assert (ckpt.name if ckpt else None) == ("step-00000002" if step == 3 else None)  # nothing after the NaN
        messages.append(message.replace(str(run), "RUN"))
    assert messages[0] == messages[1]


def test_pixel_and_latent_runs_log_the_same_statistics(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    """One log record: every key a pixel run logs, a t2i run logs too, with the same meaning."""
    from diffmem.t2i.config import T2IConfig
    from diffmem.t2i.train import read_log, train_t2i
    from diffmem.train.loop import train

    pixel = tmp_path / "pixel"
    train(tiny_config(str(write_npz(tmp_path / "d.npz")), name="ambient", sigma_n=0.5, steps=4, log_every=2),
          pixel, progress=False)
    cfg = T2IConfig(pretrained=tiny_sd, data=captioned, steps=4, batch=2, lr=1e-3, checkpoint_every=2, log_every=2,
                    method="ambient", t_n=100)
    latent = read_log(train_t2i(cfg, tmp_path / "latent", progress=False, cpu=True))
    records = [json.loads(line) for line in (pixel / "log.jsonl").read_text().splitlines()]
    assert set(records[0]) <= set(latent[0])
    for rec, batch in [(records[-1], 4), (latent[-1], 2)]:
        assert rec["step"] == 4 and rec["kimg"] == 4 * batch / 1000
        assert rec["loss_std"] is not None and rec["loss_std"] >= 0 and rec["update_rms"] > 0
        assert 0 <= rec["frac_high"] <= 1 and rec["images_per_s"] > 0
