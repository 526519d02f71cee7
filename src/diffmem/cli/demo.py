"""`diffmem demo`: baseline vs Algorithm 1 on the built-in digits, end to end. Defaults come from DemoConfig."""

from __future__ import annotations

import click

from diffmem.demo import DEMO_OUT, DemoConfig, validate_demo
from diffmem.diffusion.weighting import WEIGHTINGS
from diffmem.utils.flags import device_name

__all__ = ["demo", "demo_config_from_flags", "DEMO"]

DEMO = DemoConfig()  # the defaults of `diffmem demo`'s flags, written once in diffmem.demo


def demo_config_from_flags(*, subset: int = DEMO.subset, steps: int = DEMO.steps, batch: int = DEMO.batch,
                           resolution: int = DEMO.resolution, sigma_n: float = DEMO.sigma_n,
                           ambient_weight: str = DEMO.ambient_weight, weight_cap: float = DEMO.weight_cap,
                           n_samples: int = DEMO.n_samples, seed: int = DEMO.seed) -> DemoConfig:
    """The validated DemoConfig of `diffmem demo`'s flags (`diffmem.demo.validate_demo`)."""
    cfg = DemoConfig(subset=subset, steps=steps, batch=batch, resolution=resolution, sigma_n=sigma_n,
                     ambient_weight=ambient_weight, weight_cap=weight_cap, n_samples=n_samples, seed=seed)
    validate_demo(cfg)
    return cfg


@click.command()
@click.option("--out", default=DEMO_OUT, show_default=True, type=click.Path(file_okay=False))
@click.option("--subset", type=int, default=DEMO.subset, show_default=True, help="Training digits.")
@click.option("--steps", type=int, default=DEMO.steps, show_default=True, help="Training steps per model.")
@click.option("--batch", type=int, default=DEMO.batch, show_default=True)
@click.option("--resolution", type=int, default=DEMO.resolution, show_default=True, help="Digit size (8 or 16).")
@click.option("--sigma-n", type=float, default=DEMO.sigma_n, show_default=True, help="Algorithm 1 threshold.")
@click.option("--ambient-weight", type=click.Choice(list(WEIGHTINGS)), default=DEMO.ambient_weight,
              show_default=True, help="Weighting of Algorithm 1's high-noise branch (docs/method.md).")
@click.option("--weight-cap", type=float, default=DEMO.weight_cap, show_default=True,
              help="--ambient-weight capped: the largest gain over plain.")
@click.option("--n-samples", type=int, default=DEMO.n_samples, show_default=True)
@click.option("--seed", type=int, default=DEMO.seed, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Retrain runs already in --out.")
@click.option("--quiet", is_flag=True)
def demo(out, subset, steps, batch, resolution, sigma_n, ambient_weight, weight_cap, n_samples, seed, device,
         overwrite, quiet) -> None:
    """Train the baseline and Algorithm 1 on built-in digits with one budget, sample, compare, report."""
    from diffmem.demo import run_demo
    from diffmem.report.demo import audit_demo
    from diffmem.lock import is_main_process, locked

    cfg = demo_config_from_flags(subset=subset, steps=steps, batch=batch, resolution=resolution, sigma_n=sigma_n,
                                 ambient_weight=ambient_weight, weight_cap=weight_cap, n_samples=n_samples, seed=seed)

    def audit(out_dir, samples):
        audit_demo(out_dir, samples, echo=click.echo)

    dev = device_name(device)
    with locked(out, enabled=is_main_process()):  # one demo per folder (each run inside has its own lock too)
        run_demo(out, cfg, device=dev, progress=not quiet, overwrite=overwrite, audit=audit, echo=click.echo)
