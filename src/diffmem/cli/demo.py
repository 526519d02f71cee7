"""`diffmem demo`: baseline vs Algorithm 1 on the built-in digits, end to end. Defaults come from DemoConfig."""

from __future__ import annotations

import math

import click

from diffmem.config import AMBIENT_WEIGHTINGS
from diffmem.demo import DemoConfig
from diffmem.errors import DiffmemError
from diffmem.utils.flags import device_name

_D = DemoConfig()


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--subset", type=int, default=_D.subset, show_default=True, help="Training digits.")
@click.option("--steps", type=int, default=_D.steps, show_default=True, help="Training steps per model.")
@click.option("--batch", type=int, default=_D.batch, show_default=True)
@click.option("--resolution", type=int, default=_D.resolution, show_default=True, help="Digit size (8 or 16).")
@click.option("--sigma-n", type=float, default=_D.sigma_n, show_default=True, help="Algorithm 1 threshold.")
@click.option("--ambient-weight", type=click.Choice(AMBIENT_WEIGHTINGS), default=_D.ambient_weight,
              show_default=True, help="Weighting of Algorithm 1's high-noise branch (docs/method.md).")
@click.option("--weight-cap", type=float, default=_D.weight_cap, show_default=True,
              help="--ambient-weight capped: the largest gain over plain.")
@click.option("--n-samples", type=int, default=_D.n_samples, show_default=True)
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Retrain runs already in --out.")
@click.option("--quiet", is_flag=True)
def demo(out, subset, steps, batch, resolution, sigma_n, ambient_weight, weight_cap, n_samples, seed, device,
         overwrite, quiet) -> None:
    """Train the baseline and Algorithm 1 on built-in digits with one budget, sample, compare, report."""
    
    from diffmem.demo import demo_configs, run_demo
    from diffmem.demo_report import audit_demo
    from diffmem.train.checks import validate_config
    from diffmem.lock import is_main_process, locked

    for flag, value, low in (("--subset", subset, 2), ("--steps", steps, 1), ("--batch", batch, 1),
                             ("--n-samples", n_samples, 2), ("--resolution", resolution, 4)):
        if value < low:
            raise DiffmemError(f"{flag} must be an integer >= {low}, got {value}")
    if not (math.isfinite(sigma_n) and sigma_n > 0):
        raise DiffmemError(f"--sigma-n must be a positive noise level, e.g. 0.5; got {sigma_n}")
    cfg = DemoConfig(subset=subset, steps=steps, batch=batch, resolution=resolution, sigma_n=sigma_n,
                     ambient_weight=ambient_weight, weight_cap=weight_cap, n_samples=n_samples, seed=seed)
    for c in demo_configs(cfg).values():
        validate_config(c)

    def audit(out_dir, samples):
        audit_demo(out_dir, samples, echo=click.echo)

    dev = device_name(device)
    with locked(out, enabled=is_main_process()):  # one demo per folder (each run inside has its own lock too)
        run_demo(out, cfg, device=dev, progress=not quiet, overwrite=overwrite, audit=audit, echo=click.echo)
