"""`diffmem demo`: baseline vs Algorithm 1 on the built-in digits, end to end. Defaults come from DemoConfig."""

from __future__ import annotations

import click

from diffmem.cli.train import _device
from diffmem.config import AMBIENT_WEIGHTINGS
from diffmem.demo import DemoConfig

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
    from diffmem.config import validate
    from diffmem.demo import demo_configs, run_demo
    from diffmem.demo_report import audit_demo
    from diffmem.errors import DiffmemError

    cfg = DemoConfig(subset=subset, steps=steps, batch=batch, resolution=resolution, sigma_n=sigma_n,
                     ambient_weight=ambient_weight, weight_cap=weight_cap, n_samples=n_samples, seed=seed)
    if n_samples < 2:
        raise DiffmemError(f"--n-samples must be at least 2, got {n_samples}")
    for c in demo_configs(cfg).values():
        validate(c)

    def audit(out_dir, samples):
        audit_demo(out_dir, samples, echo=click.echo)

    run_demo(out, cfg, device=_device(device), progress=not quiet, overwrite=overwrite, audit=audit,
             echo=click.echo)
