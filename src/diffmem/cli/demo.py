"""`diffmem demo`: baseline vs Algorithm 1 on the built-in digits, end to end."""

from __future__ import annotations

import math

import click

from diffmem.cli.train import _device
from diffmem.errors import DiffmemError


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--subset", type=int, default=50, show_default=True, help="Training digits.")
@click.option("--steps", type=int, default=800, show_default=True, help="Training steps per model.")
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--sigma-n", type=float, default=0.5, show_default=True, help="Algorithm 1 threshold.")
@click.option("--n-samples", type=int, default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Retrain runs already in --out.")
@click.option("--quiet", is_flag=True)
def demo(out, subset, steps, batch, sigma_n, n_samples, seed, device, overwrite, quiet) -> None:
    """Train the baseline and Algorithm 1 on built-in digits with one budget, sample, compare, report."""
    from diffmem.demo import DemoConfig, run_demo
    from diffmem.lock import is_main_process, locked

    for flag, value, low in (("--subset", subset, 2), ("--steps", steps, 1), ("--batch", batch, 1),
                             ("--n-samples", n_samples, 2)):
        if value < low:
            raise DiffmemError(f"{flag} must be an integer >= {low}, got {value}")
    if not (math.isfinite(sigma_n) and sigma_n > 0):
        raise DiffmemError(f"--sigma-n must be a positive noise level, e.g. 0.5; got {sigma_n}")
    cfg = DemoConfig(subset=subset, steps=steps, batch=batch, sigma_n=sigma_n, n_samples=n_samples, seed=seed)
    from diffmem.demo_report import audit_demo

    def audit(out_dir, samples):
        audit_demo(out_dir, samples, echo=click.echo)

    dev = _device(device)
    with locked(out, enabled=is_main_process()):  # one demo per folder (each run inside has its own lock too)
        run_demo(out, cfg, device=dev, progress=not quiet, overwrite=overwrite, audit=audit, echo=click.echo)
