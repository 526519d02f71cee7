"""The variance-preserving ambient conversion (docs/method.md) against closed forms on Gaussian latents."""

from __future__ import annotations

import math

import pytest
import torch

from diffmem.diffusion.weighting import Capped, Compensated, Plain
from diffmem.t2i.losses import (ambient_posterior_mean, eps_from_prediction, prediction_target, t2i_loss,
                                x0_from_prediction, x0_weight)


def sd_alphas(n: int = 1000) -> torch.Tensor:
    """Stable Diffusion's scaled-linear schedule, alphas_cumprod [n] (float64)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def gaussian_prediction(x_t: torch.Tensor, a_t: torch.Tensor, s0: float, prediction_type: str,
                        x0_scale: float = 1.0) -> torch.Tensor:
    """The exact network output for x0 ~ N(0, s0^2 I): E[x0|x_t] = sqrt(a) s0^2 / (a s0^2 + 1 - a) x_t
    (times `x0_scale`, to make a deliberately wrong denoiser)."""
    a = a_t.reshape(-1, 1, 1, 1)
    x0_hat = x0_scale * a.sqrt() * s0**2 / (a * s0**2 + 1 - a) * x_t
    if prediction_type == "epsilon":
        return (x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return (a.sqrt() * x_t - x0_hat) / (1 - a).sqrt()
    return x0_hat


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_conversion_matches_closed_form_posterior_mean(prediction_type: str) -> None:
    """E[x_tn | x_t] from the converted prediction equals sqrt(r) V_n / (a_t s0^2 + 1 - a_t) x_t."""
    alphas, s0, t_n = sd_alphas(), 0.8, 200
    a_tn = float(alphas[t_n])
    t = torch.tensor([201, 300, 500, 800, 999])
    a_t = alphas[t]
    x_t = torch.randn((len(t), 4, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pred = gaussian_prediction(x_t, a_t, s0, prediction_type)
    converted = ambient_posterior_mean(x0_from_prediction(pred, x_t, a_t, prediction_type), x_t, a_t, a_tn)
    r = (a_t / a_tn).reshape(-1, 1, 1, 1)
    var_n = a_tn * s0**2 + 1 - a_tn  # Var(x_tn)
    exact = r.sqrt() * var_n / (a_t.reshape(-1, 1, 1, 1) * s0**2 + 1 - a_t.reshape(-1, 1, 1, 1)) * x_t
    torch.testing.assert_close(converted, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_conversion_matches_monte_carlo_regression(prediction_type: str) -> None:
    """Sample (x0, x_tn, x_t) as training does and regress x_tn on x_t: the slope is the converted one."""
    g = torch.Generator().manual_seed(1)
    alphas, s0, t_n, t = sd_alphas(), 1.3, 150, 400
    a_tn, a_t = float(alphas[t_n]), float(alphas[t])
    n = 400_000
    x0 = s0 * torch.randn(n, generator=g, dtype=torch.float64)
    x_tn = math.sqrt(a_tn) * x0 + math.sqrt(1 - a_tn) * torch.randn(n, generator=g, dtype=torch.float64)
    r = a_t / a_tn
    x_t = math.sqrt(r) * x_tn + math.sqrt(1 - r) * torch.randn(n, generator=g, dtype=torch.float64)
    slope_mc = float((x_t * x_tn).sum() / (x_t * x_t).sum())  # E[x_tn | x_t] is linear for Gaussians
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    a = torch.tensor([a_t], dtype=torch.float64)
    pred = gaussian_prediction(one, a, s0, prediction_type)
    slope = float(ambient_posterior_mean(x0_from_prediction(pred, one, a, prediction_type), one, a, a_tn))
    assert slope == pytest.approx(slope_mc, abs=4e-3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ambient_loss_is_minimized_by_the_true_denoiser(prediction_type: str) -> None:
    """A denoiser whose E[x0|x_t] is scaled away from the truth has a higher ambient loss."""
    g = torch.Generator().manual_seed(2)
    alphas, s0, t_n = sd_alphas().float(), 0.9, 100
    b = 20_000
    x0 = s0 * torch.randn((b, 1, 2, 2), generator=g)
    x_tn = alphas[t_n].sqrt() * x0 + (1 - alphas[t_n]).sqrt() * torch.randn(x0.shape, generator=g)
    t = torch.randint(t_n, 1000, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)

    def loss_at(scale: float) -> float:
        def model(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return gaussian_prediction(x.double(), alphas[tt].double(), s0, prediction_type, scale).float()

        return float(t2i_loss(model, x0, t, noise, alphas, prediction_type, x_tn, t_n).loss.mean())

    best = loss_at(1.0)
    assert best < loss_at(0.8) and best < loss_at(1.2)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_targets_and_weights_match_diffusers(prediction_type: str) -> None:
    """Baseline targets equal diffusers' (noise, scheduler.get_velocity) and |pred-target|^2 = lam |x0hat-x0|^2."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type=prediction_type)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn((3, 4, 2, 2), generator=g), torch.randn((3, 4, 2, 2), generator=g)
    t = torch.tensor([5, 400, 990])
    a_t = sched.alphas_cumprod[t]
    target = prediction_target(x0, noise, a_t, prediction_type)
    expected = noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
    torch.testing.assert_close(target, expected)
    x_t = sched.add_noise(x0, noise, t)
    pred = torch.randn(x0.shape, generator=g)
    lhs = (pred - target).pow(2).flatten(1).sum(1)
    x0_err = x0_from_prediction(pred, x_t, a_t, prediction_type) - x0
    rhs = x0_weight(a_t, prediction_type) * x0_err.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-3, atol=1e-4)
    # eps_from_prediction inverts each parameterisation
    pred_true = prediction_target(x0, noise, a_t, prediction_type)
    torch.testing.assert_close(eps_from_prediction(pred_true, x_t, a_t, prediction_type), noise, rtol=1e-4, atol=1e-4)


class Spy:
    """A stand-in network that records what it sees."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return 0.5 * x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ambient_branch_never_receives_a_clean_latent(prediction_type: str) -> None:
    """For t > t_n the network input is sqrt(r) x_tn + sqrt(1-r) e; a NaN clean latent changes nothing."""
    alphas, t_n = sd_alphas().float(), 300
    g = torch.Generator().manual_seed(4)
    x_tn, noise = torch.randn((4, 4, 2, 2), generator=g), torch.randn((4, 4, 2, 2), generator=g)
    t = torch.tensor([301, 302, 600, 999])
    spy = Spy()
    out = t2i_loss(spy, torch.full_like(x_tn, float("nan")), t, noise, alphas, prediction_type, x_tn, t_n)
    assert out.high.all() and torch.isfinite(out.loss).all()
    r = (alphas[t] / alphas[t_n]).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(spy.inputs[0], r.sqrt() * x_tn + (1 - r).sqrt() * noise)
    # mixed batch: only rows at or below t_n see the clean latent; gradients stay finite
    x0 = torch.randn(x_tn.shape, generator=g)
    x0[2:] = float("nan")  # rows 2, 3 are ambient
    w = torch.tensor(0.7, requires_grad=True)
    out = t2i_loss(lambda x, tt: w * x, x0, torch.tensor([10, 300, 301, 700]), noise, alphas, prediction_type,
                   x_tn, t_n)
    assert out.high.tolist() == [False, False, True, True]
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(w.grad)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_boundary_timestep_takes_the_clean_loss(prediction_type: str) -> None:
    """At t = t_n, r = 1 and yhat = x_t: an ambient loss there is 0 whatever the network predicts, so the row
    would never train. It takes the baseline loss on the clean latent instead."""
    alphas, t_n = sd_alphas().float(), 250
    g = torch.Generator().manual_seed(7)
    x0, x_tn, noise = (torch.randn((3, 4, 2, 2), generator=g) for _ in range(3))
    t = torch.full((3,), t_n)
    spy = Spy()
    out = t2i_loss(spy, x0, t, noise, alphas, prediction_type, x_tn, t_n)
    assert not out.high.any()
    a = alphas[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(spy.inputs[0], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    target = prediction_target(x0, noise, alphas[t], prediction_type)
    torch.testing.assert_close(out.loss, (0.5 * spy.inputs[0] - target).pow(2).flatten(1).mean(1))
    assert (out.loss > 1e-3).all()
    # what the ambient branch would give at t_n: E[x_tn | x_tn] = x_tn, whatever the prediction
    pred = torch.randn(x0.shape, generator=g)
    y_hat = ambient_posterior_mean(x0_from_prediction(pred, x_tn, alphas[t], prediction_type), x_tn, alphas[t],
                                   alphas[t_n])
    torch.testing.assert_close(y_hat, x_tn, rtol=1e-5, atol=1e-5)


def _implied_target(x_tn: torch.Tensor, x_t: torch.Tensor, a_t: torch.Tensor, a_tn: torch.Tensor) -> torch.Tensor:
    """x0t with yhat - x_tn = c (x0hat - x0t): (x_tn - sqrt(r)(1-a_tn)/(1-a_t) x_t) / c, c = (1-r) sqrt(a_tn)/(1-a_t)."""
    a, r = a_t.reshape(-1, 1, 1, 1).double(), (a_t / a_tn).reshape(-1, 1, 1, 1).double()
    a_n = a_tn.double()
    c = (1 - r) * a_n.sqrt() / (1 - a)
    return (x_tn.double() - r.sqrt() * (1 - a_n) / (1 - a) * x_t.double()) / c


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_compensated_weighting_is_the_baseline_loss_on_the_implied_target(prediction_type: str) -> None:
    """With weighting="compensated" the ambient rows' loss is lam(t) |x0hat - x0t|^2, lam the baseline's weight
    (a/(1-a), 1/(1-a), 1) and x0t the implied target; x0hat is read off the recorded prediction by hand."""
    alphas, t_n = sd_alphas().float(), 120
    g = torch.Generator().manual_seed(8)
    x0, x_tn, noise = (torch.randn((5, 4, 2, 2), generator=g) for _ in range(3))
    t = torch.tensor([121, 130, 300, 700, 990])
    spy = Spy()
    out = t2i_loss(spy, x0, t, noise, alphas, prediction_type, x_tn, t_n, weighting=Compensated())
    assert out.high.all()
    x_t, pred = spy.inputs[0].double(), out.pred.double()
    a = alphas[t].double().reshape(-1, 1, 1, 1)
    x0_hat = {"epsilon": (x_t - (1 - a).sqrt() * pred) / a.sqrt(), "v_prediction": a.sqrt() * x_t - (1 - a).sqrt() * pred,
              "sample": pred}[prediction_type]
    lam = {"epsilon": a / (1 - a), "v_prediction": 1 / (1 - a), "sample": torch.ones_like(a)}[prediction_type]
    expected = lam.flatten() * (x0_hat - _implied_target(x_tn, x_t, alphas[t], alphas[t_n])).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(out.loss.double(), expected, rtol=2e-4, atol=0)
    plain = t2i_loss(Spy(), x0, t, noise, alphas, prediction_type, x_tn, t_n, weighting=Plain())
    assert (out.loss[:2] / plain.loss[:2]).min() > 2  # near t_n the two weightings really differ


@pytest.mark.parametrize("cap", [1.5, 4.0, 1e9])
def test_capped_weighting_is_compensated_up_to_cap_times_plain(cap: float) -> None:
    """Per ambient row, the capped loss is min(compensated loss, cap x plain loss): the three weightings
    differ only in a per-row factor of the same squared error (a huge cap is compensated itself)."""
    alphas, t_n = sd_alphas().float(), 120
    g = torch.Generator().manual_seed(11)
    x0, x_tn, noise = (torch.randn((6, 4, 2, 2), generator=g) for _ in range(3))
    t = torch.tensor([121, 125, 160, 300, 700, 990])
    losses = {w.name: t2i_loss(Spy(), x0, t, noise, alphas, "epsilon", x_tn, t_n, weighting=w).loss.double()
              for w in (Plain(), Compensated(), Capped(cap))}
    expected = torch.minimum(losses["compensated"], cap * losses["plain"])
    torch.testing.assert_close(losses["capped"], expected, rtol=1e-5, atol=0)
    if cap == 1.5:  # the cap binds near t_n and not far above it
        assert (losses["capped"][:2] < losses["compensated"][:2] / 2).all()
        torch.testing.assert_close(losses["capped"][-1], losses["compensated"][-1], rtol=1e-5, atol=0)


def test_baseline_ignores_t_n() -> None:
    """Without noisy copies every row is an ordinary denoising loss on the clean latent."""
    alphas = sd_alphas().float()
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn((3, 4, 2, 2), generator=g), torch.randn((3, 4, 2, 2), generator=g)
    t = torch.tensor([10, 500, 990])
    spy = Spy()
    out = t2i_loss(spy, x0, t, noise, alphas, "epsilon")
    a = alphas[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(spy.inputs[0], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    torch.testing.assert_close(out.loss, (0.5 * spy.inputs[0] - noise).pow(2).flatten(1).mean(1))
    assert not out.high.any()


class FixedDenoiser:
    """A stand-in EDM denoiser for the pixel trainer: D(x_s; s) = 0.3 x_s + offset (any D will do)."""

    sigma_data = 0.5

    def __init__(self, offset: torch.Tensor) -> None:
        self.offset = offset

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return 0.3 * x + self.offset


@pytest.mark.parametrize("weighting", [Plain(), Compensated(), Capped(4.0), Capped(1.5)], ids=lambda w: w.label())
def test_latent_and_pixel_trainers_weigh_matched_noise_levels_alike(weighting) -> None:
    """A VP timestep t is the VE noise level s = sqrt((1-a_t)/a_t): x_t / sqrt(a_t) = y + sqrt(s^2 - S^2) e with
    y = x_tn / sqrt(a_tn). Feed both trainers the same images, noisy copy, noise and denoiser at matched levels:
    each loss divided by its own baseline weight (EDM's lambda(s); lam(t) = 1 for sample prediction) is the same
    number, for every weighting. Before the fix the latent plain loss was a_tn times the pixel one and the
    latent cap bit on 1/(a_tn (1-rho)^2)."""
    from diffmem.diffusion.losses import ambient_loss, edm_weight
    from diffmem.t2i.losses import one_minus_rho, ve_sigma

    g = torch.Generator().manual_seed(12)
    S = 1.0 / 0.7  # the VE level of a_tn = 0.329 (SD's t near 450)
    s = torch.tensor([1.0005, 1.02, 1.2, 1.5, 3.0, 12.0], dtype=torch.float64) * S
    a_tn, a_t = 1 / (1 + S**2), 1 / (1 + s**2)
    alphas = torch.cat([torch.tensor([a_tn], dtype=torch.float64), a_t])  # index 0 is t_n, 1..6 the levels s
    torch.testing.assert_close(ve_sigma(alphas), torch.cat([torch.tensor([S], dtype=torch.float64), s]))
    x0, z, e, offset = (torch.randn((len(s), 3, 4, 4), generator=g, dtype=torch.float64) for _ in range(4))
    y = x0 + S * z
    den = FixedDenoiser(offset)
    pixel = ambient_loss(den, x0, y, S, s, e, weighting=weighting)
    assert pixel.high.all()
    x_tn = math.sqrt(a_tn) * y

    def model(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:  # sample prediction: D of the VE input
        return den(x_t / alphas[tt].sqrt().reshape(-1, 1, 1, 1), ve_sigma(alphas[tt]))

    latent = t2i_loss(model, x0, torch.arange(1, len(s) + 1), e, alphas, "sample", x_tn, 0, weighting=weighting)
    assert latent.high.all()
    x_s = y + (s**2 - S**2).sqrt().reshape(-1, 1, 1, 1) * e  # the pixel trainer's input (t2i_loss runs in float32)
    torch.testing.assert_close(latent.x_t.double() / a_t.sqrt().reshape(-1, 1, 1, 1), x_s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(latent.loss.double(), pixel.loss / edm_weight(s, den.sigma_data), rtol=2e-3, atol=0)
    torch.testing.assert_close(one_minus_rho(a_t, a_tn), 1 - S**2 / s**2, rtol=1e-9, atol=0)


def test_capped_equals_compensated_where_the_pixel_rule_says_on_sd_schedule() -> None:
    """On SD's schedule at t_n = 500, capped 4 equals compensated exactly where the VE level of t is at least
    sigma(t_n) / sqrt(1 - 1/sqrt(4)) = 1.41 sigma(t_n), the pixel trainer's rule (docs/method.md): 80% of
    t > t_n, not the 25% of a cap on 1/(a_tn (1-rho)^2)."""
    from diffmem.t2i.losses import ve_sigma

    alphas, t_n = sd_alphas(), 500
    g = torch.Generator().manual_seed(13)
    t = torch.arange(t_n + 1, 1000)
    x0, x_tn, noise = (torch.randn((len(t), 1, 2, 2), generator=g, dtype=torch.float64) for _ in range(3))
    comp, capped = (t2i_loss(Spy(), x0, t, noise, alphas, "epsilon", x_tn, t_n, weighting=w).loss
                    for w in (Compensated(), Capped(4.0)))
    equal = torch.isclose(capped, comp, rtol=1e-9, atol=0)
    rule = ve_sigma(alphas[t]) >= ve_sigma(alphas[t_n]) / math.sqrt(1 - 1 / math.sqrt(4.0))
    assert equal.tolist() == rule.tolist()
    assert 0.75 < float(equal.double().mean()) < 0.85
