"""`diffmem trace`: at which noise level along sampling is each sample's identity decided?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from diffmem.errors import DiffmemError
from diffmem.evaluate.options import TraceOptions
from diffmem.utils.flags import device_name

TRACE = TraceOptions()  # the defaults of diffmem.evaluate.decision.trace_run


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--n", "n", type=int, default=TRACE.n, show_default=True, help="Samples per run.")
@click.option("--seed", type=int, default=TRACE.seed, show_default=True,
              help="Sampler seed (the samples of `diffmem sample`).")
@click.option("--steps", type=int, default=TRACE.steps, show_default=True, help="EDM Heun steps.")
@click.option("--copy-threshold", type=float, default=None,
              help="Pixel similarity (cosine of mean-centred pixels: a Pearson correlation) that makes a copy [default: held-out 99th percentile].")
@click.option("--batch", type=int, default=TRACE.batch, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace decision.json / decision.png in --out.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def trace(runs, n, seed, steps, copy_threshold, batch, out, overwrite, device, quiet) -> None:
    """Follow samples of baseline / Algorithm 1 runs and report the noise level at which each one's nearest
    training image is fixed: copies decided above sigma_n were made by the part of the network trained
    only on noisy copies. Writes decision.json and decision.png."""
    from diffmem.evaluate.decision import trace_run
    from diffmem.report.trace import decision_plot, decision_table

    if n < 1 or steps < 1 or batch < 1:
        raise DiffmemError("--n, --steps and --batch must be at least 1")
    if copy_threshold is not None and not -1.0 <= copy_threshold <= 1.0:
        raise DiffmemError(f"--copy-threshold is a cosine similarity in [-1, 1]; got {copy_threshold}")
    out_dir = Path(out)
    targets = (out_dir / "decision.json", out_dir / "decision.png")
    if not overwrite and any(t.exists() for t in targets):
        raise DiffmemError(f"{out_dir} already holds decision.json or decision.png; choose another --out or "
                           "pass --overwrite")
    dev = device_name(device)
    rows = [trace_run(r, n, seed, steps, batch, copy_threshold, dev, progress=not quiet) for r in runs]
    out_dir.mkdir(parents=True, exist_ok=True)
    targets[0].write_text(json.dumps(rows, indent=1) + "\n")
    decision_plot(rows, targets[1])
    click.echo("\n".join(decision_table(rows)))
    click.echo(f"wrote {targets[0]} and {targets[1]}")
