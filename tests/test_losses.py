"""Tests for diffmem.diffusion.losses (Algorithm 1, masking, noise-only) and the noise levels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import RecordingBackbone, tiny_config
from diffmem.config import NetworkConfig
from diffmem.diffusion.losses import (
    Batch,
    ambient_loss,
    edm_loss,
    edm_weight,
    masking_loss,
    noise_levels,
)
from diffmem.diffusion.methods import build_method
from diffmem.diffusion.precond import EDMPrecond
from diffmem.diffusion.weighting import Compensated, Plain
from diffmem.models.unet import build_unet

SD = 0.5

def _tiny_precond(seed: int = 0, channels: int = 1) -> EDMPrecond:
    torch.manual_seed(seed)
    unet = build_unet(NetworkConfig("t", (8, 16), 1), 8, channels, channels)
    with torch.no_grad():  # diffusers zero-initialises nothing relevant, but make the output clearly non-zero
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return EDMPrecond(unet, sigma_data=SD).eval()


class GaussianDenoiser(nn.Module):
    """The exact E[x0 | x_s] for x0 ~ N(mu, s0^2 I): (s0^2 x + s^2 mu) / (s0^2 + s^2)."""

    def __init__(self, mu: float, s0: float) -> None:
        super().__init__()
        self.mu, self.s0, self.sigma_data = mu, s0, SD

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels=None, extra=None) -> torch.Tensor:
        s2 = sigma.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return ((self.s0**2 * x.to(torch.float64) + s2 * self.mu) / (self.s0**2 + s2)).to(x.dtype)


def _draws(b: int = 8, seed: int = 0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((b, *shape), generator=g) * 2 - 1
    z = torch.randn((b, *shape), generator=g)
    noise = torch.randn((b, *shape), generator=g)
    return x0, z, noise


# ---------------------------------------------------------------------------------------------------
# the ambient branch


def test_ambient_loss_with_sigma_n_zero_is_the_baseline() -> None:
    net = _tiny_precond()
    x0, z, noise = _draws(6)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 5.0, 40.0])
    base = edm_loss(net, x0, sigma, noise)
    for weighting in (Plain(), Compensated()):
        amb = ambient_loss(net, x0, x0 + 0.0 * z, 0.0, sigma, noise, weighting=weighting)
        assert amb.high.all()
        torch.testing.assert_close(amb.loss, base.loss, rtol=1e-5, atol=1e-7)
    # sigma_n -> 0: the copies approach x0 and the loss approaches the baseline
    sn = 1e-4
    amb = ambient_loss(net, x0, x0 + sn * z, sn, sigma, noise)
    torch.testing.assert_close(amb.loss, base.loss, rtol=2e-3, atol=1e-6)
    # ... but a real sigma_n changes the high-noise rows
    amb = ambient_loss(net, x0, x0 + 0.3 * z, 0.3, sigma, noise)
    assert not torch.allclose(amb.loss[amb.high], base.loss[amb.high], rtol=1e-3)


def test_low_noise_rows_are_exactly_the_baseline() -> None:
    net = _tiny_precond(1)
    x0, z, noise = _draws(6, seed=1)
    sn = 0.5
    sigma = torch.tensor([0.05, 0.2, 0.499, 0.5, 0.8, 3.0])
    amb = ambient_loss(net, x0, x0 + sn * z, sn, sigma, noise)
    base = edm_loss(net, x0, sigma, noise)
    assert amb.high.tolist() == [False, False, False, True, True, True]  # s >= sigma_n goes high
    torch.testing.assert_close(amb.loss[:3], base.loss[:3], rtol=1e-6, atol=0)


def _code_yhat(den: nn.Module, x_s: torch.Tensor, sigma: torch.Tensor, sn: float) -> torch.Tensor:
    """Read the conversion yhat(x_s) out of `ambient_loss`: loss = lam |yhat - y|^2 with x_s held fixed.

    With one-pixel images, target y = t and noise (x_s - t)/sqrt(s^2 - sn^2) keep x_s fixed; then
    lam yhat^2 (t = 0) and lam (yhat - 1)^2 (t = 1) give yhat = (L0 - L1 + lam) / (2 lam).
    """
    extra = (sigma**2 - sn**2).sqrt().reshape(-1, 1, 1, 1)
    zeros, ones = torch.zeros_like(x_s), torch.ones_like(x_s)
    l0 = ambient_loss(den, zeros, zeros, sn, sigma, (x_s - zeros) / extra).loss.to(torch.float64)
    l1 = ambient_loss(den, zeros, ones, sn, sigma, (x_s - ones) / extra).loss.to(torch.float64)
    lam = edm_weight(sigma.to(torch.float64), SD)
    return ((l0 - l1 + lam) / (2 * lam)).to(torch.float32)


@pytest.mark.parametrize("s", [0.7, 2.0])
def test_conversion_is_conditional_mean_of_the_noisy_copy(s: float) -> None:
    """For Gaussian data, the code's yhat = (sn^2/s^2) x_s + (1 - sn^2/s^2) E[x0|x_s] is E[y | x_s].

    E[y | x_s] is linear in x_s; Monte Carlo regression of y on x_s over draws of (x0, z, n) gives its
    slope and intercept. The code's yhat must lie on that line within Monte Carlo error.
    """
    mu, s0, sn = 0.3, 0.6, 0.5
    den = GaussianDenoiser(mu, s0)
    g = torch.Generator().manual_seed(7)
    m = 200_000
    x0 = mu + s0 * torch.randn(m, dtype=torch.float64, generator=g)
    y = x0 + sn * torch.randn(m, dtype=torch.float64, generator=g)
    x_s = y + math.sqrt(s**2 - sn**2) * torch.randn(m, dtype=torch.float64, generator=g)
    cov = ((x_s - x_s.mean()) * (y - y.mean())).mean()
    slope = cov / x_s.var()
    intercept = y.mean() - slope * x_s.mean()
    resid = y - (slope * x_s + intercept)
    se_slope = float(resid.std() / (x_s.std() * math.sqrt(m)))
    # the closed form of the regression line, as a check of the Monte Carlo itself
    assert abs(slope - (s0**2 + sn**2) / (s0**2 + s**2)) < 5 * se_slope

    grid = torch.linspace(-2.0, 2.0, 9).reshape(-1, 1, 1, 1)
    sigma = torch.full((9,), s)
    yhat = _code_yhat(den, grid, sigma, sn).to(torch.float64)
    line = slope * grid.reshape(-1).to(torch.float64) + intercept
    tol = 5 * se_slope * 2.0 + 5 * float(resid.std()) / math.sqrt(m)
    assert (yhat - line).abs().max() < tol
    # and a wrong conversion (e.g. forgetting the sn^2/s^2 x_s term) is far off that line
    wrong = den(grid, sigma).reshape(-1).to(torch.float64)
    assert (wrong - line).abs().max() > 3 * tol


def test_high_noise_rows_never_see_clean_images() -> None:
    sn = 0.5
    x0_a, z, noise = _draws(8, seed=2)
    x0_b = torch.rand(x0_a.shape, generator=torch.Generator().manual_seed(99)) * 2 - 1  # other clean images
    y = x0_a + sn * z  # the same fixed copies in both runs
    sigma = torch.tensor([0.1, 0.3, 0.5, 0.6, 1.0, 2.0, 10.0, 80.0])
    results, inputs = [], []
    for x0 in (x0_a, x0_b):
        bb = RecordingBackbone()
        net = EDMPrecond(bb, sigma_data=SD)
        results.append(ambient_loss(net, x0, y, sn, sigma, noise))
        inputs.append(bb.inputs[0])
    high = results[0].high
    assert high.tolist() == [False, False, True, True, True, True, True, True]
    # what the network receives on high rows is c_in (y + sqrt(s^2 - sn^2) n), built from y only
    s = sigma.reshape(-1, 1, 1, 1)
    c_in = 1 / (s**2 + SD**2).sqrt()
    expected = c_in * (y + (s**2 - sn**2).sqrt() * noise)
    torch.testing.assert_close(inputs[0][high], expected[high], rtol=1e-6, atol=1e-7)
    # and does not depend on x0: same inputs and same loss whatever the clean images are
    assert torch.equal(inputs[0][high], inputs[1][high])
    assert torch.equal(results[0].loss[high], results[1].loss[high])
    # low rows are the clean branch, so they do change with x0 (the test can tell the difference)
    assert not torch.allclose(inputs[0][~high], inputs[1][~high])
    assert not torch.allclose(results[0].loss[~high], results[1].loss[~high])


class _Recorder(nn.Module):
    """Wraps a denoiser and keeps its last input and output, to check the loss against them by hand."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.sigma_data = net, net.sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels=None) -> torch.Tensor:
        self.x, self.out = x.detach().clone(), self.net(x, sigma, labels)
        return self.out


def test_compensated_weighting() -> None:
    """compensated = lambda(s) |D - Dt|^2 on the high rows, with Dt = y - sn^2 (x_s - y) / (s^2 - sn^2) the target
    that Algorithm 1 implies for D (since yhat - y = (1 - sn^2/s^2)(D - Dt)); x_s = y + sqrt(s^2 - sn^2) n."""
    net = _Recorder(_tiny_precond(3))
    sn = 0.4
    x0, z, noise = _draws(6, seed=3)
    y = x0 + sn * z
    sigma = torch.tensor([0.1, 0.39, 0.45, 0.8, 2.0, 20.0])
    comp = ambient_loss(net, x0, y, sn, sigma, noise, weighting=Compensated())
    high = comp.high
    assert high.tolist() == [False, False, True, True, True, True]
    s = sigma.double().reshape(-1, 1, 1, 1)
    x_s = y.double() + (s**2 - sn**2).clamp_min(0).sqrt() * noise.double()
    torch.testing.assert_close(net.x[high].double(), x_s[high], rtol=1e-6, atol=1e-6)
    d_target = y.double() - sn**2 * (x_s - y.double()) / (s**2 - sn**2)
    lam = (sigma.double() ** 2 + SD**2) / (sigma.double() * SD) ** 2
    expected = lam * (net.out.double() - d_target).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(comp.loss[high].double(), expected[high], rtol=1e-4, atol=0)
    plain = ambient_loss(net, x0, y, sn, sigma, noise, weighting=Plain())
    assert torch.equal(comp.loss[~high], plain.loss[~high])  # the clean rows do not depend on the weighting
    assert comp.loss[2] > 5 * plain.loss[2]  # near sigma_n the two weightings really differ


# ---------------------------------------------------------------------------------------------------
# noise levels


def test_noise_levels_are_lognormal() -> None:
    p_mean, p_std = -1.2, 1.2
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    log_s = noise_levels(u, p_mean, p_std).log().to(torch.float64)
    assert abs(log_s.mean() - p_mean) < 0.02
    assert abs(log_s.std() - p_std) < 0.02
    # quantile function: u = Phi((ln s - P_mean) / P_std) exactly
    q = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99])
    expected = torch.exp(p_mean + p_std * torch.special.ndtri(q.to(torch.float64)))
    torch.testing.assert_close(noise_levels(q, p_mean, p_std).to(torch.float64), expected, rtol=1e-5, atol=0)
    assert noise_levels(u[:10], p_mean, p_std).dtype == torch.float32


def test_noise_levels_truncated_is_the_conditional_lognormal() -> None:
    p_mean, p_std, sigma_min = -1.2, 1.2, 0.5
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(1))
    s = noise_levels(u, p_mean, p_std, sigma_min=sigma_min)
    assert (s >= sigma_min).all()
    # rejection sampling from the untruncated log-normal gives the same distribution
    ref = torch.exp(p_mean + p_std * torch.randn(400_000, generator=torch.Generator().manual_seed(2)))
    ref = ref[ref >= sigma_min]
    assert len(ref) > 50_000
    for q in (0.25, 0.5, 0.75):
        a, b = float(s.quantile(q)), float(ref.quantile(q))
        assert abs(a - b) / b < 0.02, (q, a, b)
    # the analytic median of the truncated distribution
    lo = 0.5 * (1 + math.erf((math.log(sigma_min) - p_mean) / (p_std * math.sqrt(2))))
    median = math.exp(p_mean + p_std * float(torch.special.ndtri(torch.tensor(lo + 0.5 * (1 - lo), dtype=torch.float64))))
    assert abs(float(s.median()) - median) / median < 0.02
    # u = 0 lands exactly on sigma_min, not below
    assert float(noise_levels(torch.zeros(1), p_mean, p_std, sigma_min=sigma_min)) >= sigma_min


# ---------------------------------------------------------------------------------------------------
# masking and noise-only


def test_masking_loss_ignores_hidden_pixels() -> None:
    g = torch.Generator().manual_seed(4)
    b, c = 6, 3
    x0 = torch.rand((b, c, 8, 8), generator=g) * 2 - 1
    mask = (torch.rand((b, 1, 8, 8), generator=g) > 0.3).float()
    extra = (torch.rand((b, 1, 8, 8), generator=g) > 0.2).float()
    noise = torch.randn((b, c, 8, 8), generator=g)
    sigma = torch.tensor([0.05, 0.3, 1.0, 2.0, 10.0, 60.0])
    hidden = (mask == 0).expand_as(x0)
    x0 = torch.where(hidden, torch.full_like(x0, 1e6), x0)  # hidden pixels hold an absurd value
    bb = RecordingBackbone(out_channels=c)
    net = EDMPrecond(bb, sigma_data=SD)
    out = masking_loss(net, x0, mask, extra, sigma, noise)
    assert torch.isfinite(out.loss).all() and out.loss.max() < 1e3  # 1e6 never enters the loss
    x_in = bb.inputs[0]
    assert x_in.shape == (b, c + 1, 8, 8)  # image channels + the mask A~ = B A
    assert torch.equal(x_in[:, c:], mask * extra)
    assert x_in.abs().max() < 10  # the hidden value never reaches the network
    assert (x_in[:, :c][((mask * extra) == 0).expand_as(x0)] == 0).all()
    # gradient w.r.t. the network output: zero where A = 0, non-zero where A shows the pixel
    out.loss.sum().backward()
    grad = bb.outputs[0].grad
    assert (grad[hidden] == 0).all()
    assert (grad[~hidden] != 0).float().mean() > 0.99


def test_noisy_only_never_uses_clean_pixels_or_low_noise(npz_data: str) -> None:
    sn = 0.6
    cfg = tiny_config(npz_data, name="noisy-only", sigma_n=sn)
    g = torch.Generator().manual_seed(5)
    b = 64
    y = torch.rand((b, 1, 8, 8), generator=g) * 2 - 1
    batch = Batch(x0=torch.full((b, 1, 8, 8), 1e6), u=torch.rand(b, generator=g),
                  noise=torch.randn((b, 1, 8, 8), generator=g), fixed={"y": y})
    bb = RecordingBackbone()
    out = build_method(cfg)(EDMPrecond(bb, sigma_data=SD), batch)
    assert out.high.all()
    sigma_seen = torch.exp(4 * bb.c_noise[0].to(torch.float64))  # c_noise = ln(s) / 4
    assert (sigma_seen >= sn * (1 - 1e-5)).all()
    assert bb.inputs[0].abs().max() < 10  # no clean (here: absurd) pixel reaches the network
    assert torch.isfinite(out.loss).all() and out.loss.max() < 1e4
    # the ambient method with the same batch does use x0 below sigma_n
    cfg_amb = tiny_config(npz_data, name="ambient", sigma_n=sn)
    bb2 = RecordingBackbone()
    out2 = build_method(cfg_amb)(EDMPrecond(bb2, sigma_data=SD), batch)
    assert (~out2.high).any() and bb2.inputs[0].abs().max() > 1e3


def test_masking_preconditioning_per_pixel_oracle() -> None:
    """Erased pixels are predicted directly (D = sd F, F's target x0 / sd at every noise level); the ideal F
    gives zero loss, and F = 0 there costs |x0|^2 / sd^2 whatever the noise level (no 1 / c_out^2 blow-up)."""
    g = torch.Generator().manual_seed(6)
    b, c = 5, 1
    x0 = torch.rand((b, c, 8, 8), generator=g) * 2 - 1
    mask = (torch.rand((b, 1, 8, 8), generator=g) > 0.3).float()
    extra = (torch.rand((b, 1, 8, 8), generator=g) > 0.3).float()
    noise = torch.randn((b, c, 8, 8), generator=g)
    sigma = torch.tensor([0.002, 0.05, 0.5, 5.0, 80.0])
    a_tilde = mask * extra
    x_s = a_tilde * (x0 + sigma.reshape(-1, 1, 1, 1) * noise)

    class Oracle(torch.nn.Module):
        def __init__(self, erased_value: float | None) -> None:
            super().__init__()
            self.erased_value = erased_value

        def forward(self, x_in, c_noise, class_labels=None):
            c_skip, c_out, _, _ = (t.reshape(-1, 1, 1, 1) for t in EDMPrecond(self).coefficients(sigma))
            seen = (x0 - c_skip * x_s) / c_out
            hidden = x0 / SD if self.erased_value is None else torch.full_like(x0, self.erased_value)
            return a_tilde * seen + (1 - a_tilde) * hidden

    ideal = masking_loss(EDMPrecond(Oracle(None), sigma_data=SD), x0, mask, extra, sigma, noise).loss
    assert ideal.abs().max() < 1e-8
    zero = masking_loss(EDMPrecond(Oracle(0.0), sigma_data=SD), x0, mask, extra, sigma, noise).loss
    expected = (mask * (1 - a_tilde) * x0**2).flatten(1).mean(1) / SD**2
    assert torch.allclose(zero, expected, rtol=1e-4, atol=1e-7)
    # at sampling an erased pixel's D ignores x there and is sd * F
    net = EDMPrecond(Oracle(0.5), sigma_data=SD)
    d = net(x_s + (1 - a_tilde) * 7.0, sigma, extra=a_tilde, observed=a_tilde)
    assert torch.allclose(d[(a_tilde == 0)], torch.full_like(d[(a_tilde == 0)], 0.5 * SD))
