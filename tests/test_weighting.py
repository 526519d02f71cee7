"""The ambient weightings (diffmem.diffusion.weighting) against closed forms and their tails.

Each objective's minimiser at a fixed s must be E[x0 | x_s] (a Monte Carlo regression against the
Gaussian closed form); the capped weighting's per-sample loss must have a finite variance (Hill tail
index above 2), which the compensated one does not; and no weighting lets a clean pixel reach the
network above sigma_n.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import RecordingBackbone, run_cli
from diffmem.diffusion.losses import ambient_loss, edm_weight
from diffmem.diffusion.precond import EDMPrecond
from diffmem.theory.tails import hill_tail_index, optimum_draws
from diffmem.diffusion.weighting import WEIGHTINGS, Capped, make_weighting
from diffmem.errors import DiffmemError

SD = 0.5


class ScaledGaussianDenoiser(torch.nn.Module):
    """D = c * sd0^2 / (sd0^2 + s^2) x: the exact E[x0 | x_s] of x0 ~ N(0, sd0^2) when c = 1."""

    def __init__(self, c: float, sd0: float) -> None:
        super().__init__()
        self.c, self.sd0, self.sigma_data = c, sd0, SD

    def forward(self, x, sigma, labels=None, extra=None):
        s2 = sigma.to(torch.float64).reshape(-1, 1, 1, 1) ** 2
        return self.c * self.sd0**2 / (self.sd0**2 + s2) * x.to(torch.float64)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
@pytest.mark.parametrize("s", [0.55, 1.5])
def test_minimiser_at_fixed_s_is_the_posterior_mean(name: str, s: float) -> None:
    """Fit c in D = c D* by minimising the code's loss over Monte Carlo draws: c must come out 1."""
    sd0, sn, m = 0.6, 0.5, 40_000
    g = torch.Generator().manual_seed(11)
    x0 = sd0 * torch.randn(m, 1, 2, 2, generator=g, dtype=torch.float64)
    y = x0 + sn * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sigma = torch.full((m,), s, dtype=torch.float64)
    w = make_weighting(name)
    # the loss is quadratic in c: three evaluations give its vertex
    cs = (0.5, 1.0, 1.5)
    ls = [float(ambient_loss(ScaledGaussianDenoiser(c, sd0), x0, y, sn, sigma, noise, weighting=w).loss.mean())
          for c in cs]
    a = (ls[0] - 2 * ls[1] + ls[2]) / (2 * 0.5**2)
    b = (ls[2] - ls[0]) / (2 * 0.5)
    c_hat = 1.0 - b / (2 * a)
    assert abs(c_hat - 1.0) < 0.03, c_hat


def test_gains_against_their_formulas() -> None:
    sigma = torch.tensor([0.5001, 0.6, 0.7071 * 1.0001, 1.0, 3.0])
    sn = 0.5
    comp = sigma**4 / (sigma**2 - sn**2) ** 2
    torch.testing.assert_close(make_weighting("plain").gain(sigma, sn), torch.ones(5))
    torch.testing.assert_close(make_weighting("compensated").gain(sigma, sn), comp)
    capped = make_weighting("capped", 4.0).gain(sigma, sn)
    torch.testing.assert_close(capped, torch.minimum(comp, torch.tensor(4.0)))
    # the cap binds exactly below s = sigma_n / sqrt(1 - 1/sqrt(cap)) (= 0.7071 for sigma_n 0.5, cap 4)
    assert capped[2] == pytest.approx(comp[2]) and capped[1] == 4.0


def test_capped_loss_has_finite_variance_compensated_does_not() -> None:
    """Hill tail index of the per-sample loss at the exact optimum: above 2 for plain and capped,
    about 1 (infinite mean) for compensated."""
    idx = {}
    for name in WEIGHTINGS:
        d = optimum_draws(make_weighting(name), 200_000, 0.5, torch.Generator().manual_seed(0), dim=16)
        idx[name] = hill_tail_index(d["loss"])
    assert idx["capped"] > 2 and idx["plain"] > 2, idx
    assert idx["compensated"] < 1.5, idx


def test_hill_estimator_on_a_pareto_sample() -> None:
    """Pareto(alpha) draws x = u^(-1/alpha): the estimator recovers alpha within its standard error."""
    g = torch.Generator().manual_seed(3)
    for alpha in (0.8, 2.5):
        x = torch.rand(400_000, generator=g, dtype=torch.float64) ** (-1 / alpha)
        k = 2000
        est = hill_tail_index(x, k)
        assert abs(est - alpha) < 4 * alpha / math.sqrt(k), (alpha, est)


def test_optimum_draws_match_the_loss_code() -> None:
    """optimum_draws' closed-form loss equals ambient_loss run on the exact denoiser with the same draws."""
    sn = 0.5
    w = make_weighting("capped")
    d = optimum_draws(w, 64, sn, torch.Generator().manual_seed(5), dim=4, sigma_min=sn)
    g = torch.Generator().manual_seed(5)
    from diffmem.diffusion.losses import noise_levels

    u = torch.rand(64, generator=g, dtype=torch.float64)
    sigma = noise_levels(u, -1.2, 1.2, sn).to(torch.float64)
    x0 = SD * torch.randn(64, 4, generator=g, dtype=torch.float64)
    z = torch.randn(64, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(64, 4, generator=g, dtype=torch.float64)
    out = ambient_loss(ScaledGaussianDenoiser(1.0, SD), x0.reshape(64, 1, 2, 2), (x0 + sn * z).reshape(64, 1, 2, 2),
                       sn, sigma, noise.reshape(64, 1, 2, 2), weighting=w)
    torch.testing.assert_close(out.loss, d["loss"], rtol=1e-9, atol=1e-12)
    assert bool(out.high.all()) and torch.equal(d["sigma"], sigma)
    assert edm_weight(sigma, SD).min() > 0


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_high_noise_rows_never_see_clean_pixels(name: str) -> None:
    sn = 0.5
    g = torch.Generator().manual_seed(2)
    x0_a = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    x0_b = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    y = x0_a + sn * torch.randn(x0_a.shape, generator=g)
    noise = torch.randn(x0_a.shape, generator=g)
    sigma = torch.tensor([0.2, 0.5, 0.52, 0.9, 3.0, 40.0])
    seen, losses = [], []
    for x0 in (x0_a, x0_b):
        bb = RecordingBackbone()
        out = ambient_loss(EDMPrecond(bb, sigma_data=SD), x0, y, sn, sigma, noise, weighting=make_weighting(name))
        seen.append(bb.inputs[0])
        losses.append(out.loss)
    high = sigma >= sn
    assert torch.equal(seen[0][high], seen[1][high]) and torch.equal(losses[0][high], losses[1][high])
    assert not torch.allclose(seen[0][~high], seen[1][~high])


def test_bad_weighting_settings() -> None:
    with pytest.raises(DiffmemError, match="--weight-cap"):
        Capped(0.0)
    with pytest.raises(DiffmemError, match="--ambient-weight"):
        make_weighting("heavy")


@pytest.mark.parametrize("args, flag", [(["--ambient-weight", "capped", "--weight-cap", "0"], "--weight-cap"),
                                        (["--ambient-weight", "capped", "--weight-cap", "-1"], "--weight-cap"),
                                        (["--ambient-weight", "heavy"], "--ambient-weight")])
def test_cli_refuses_bad_weighting(tmp_path, capsys, args, flag) -> None:
    code, out, err = run_cli(["train", "--out", str(tmp_path / "run"), "--method", "ambient", "--sigma-n", "0.5",
                              *args], capsys)
    assert code == 2
    assert flag in err and "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
