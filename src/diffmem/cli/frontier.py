"""`diffmem frontier`: (quality, copies) paths over training, candidates against slower-clock controls."""

from __future__ import annotations

import click

from diffmem.cli.configs import (DATA, FRONTIER, METHOD, NETWORK, OPTIM, SAMPLE_PRECISION_HELP,
                                  frontier_config_from_flags)
from diffmem.cli.sections import SectionedCommand
from diffmem.config import PRESETS
from diffmem.diffusion.weighting import WEIGHTINGS
from diffmem.sweep.frontier import CANDIDATE_SIGMA_N, CANDIDATE_WEIGHTINGS, CONTROL_LR_FACTORS, FRONTIER_STEPS
from diffmem.utils.flags import check_jobs, device_name, joined
from diffmem.utils.precision import PRECISIONS


# --help headings: each starts at the named parameter (diffmem.cli.sections)
FRONTIER_HELP_SECTIONS = {"data_spec": "Data and seeds", "sigma_n": "Variants: candidates and slower-clock controls",
                          "preset": "Network", "steps": "Optimisation",
                          "checkpoints": "Checks and the guard (docs/method.md, \"The release and safe quality\")",
                          "precision": "Precision and hardware", "report_only": "Mode and output"}


@click.command(cls=SectionedCommand, sections=FRONTIER_HELP_SECTIONS)
@click.option("--data", "data_spec", default=DATA.spec, show_default=True)
@click.option("--resolution", type=int, default=None, help="Image size (builtin:digits default 16).")
@click.option("--resize", is_flag=True, help="Resize (center-crop + Lanczos) images to --resolution.")
@click.option("--subset", "subsets", default=joined(FRONTIER.subsets), show_default=True,
              help="Training-set sizes, e.g. 100,300.")
@click.option("--seeds", default=joined(FRONTIER.seeds), show_default=True)
@click.option("--sigma-n", default=joined((CANDIDATE_SIGMA_N,)), show_default=True,
              help="Algorithm 1's sigma_n for the candidates; a comma-separated list runs each, e.g. 1,2.7.")
@click.option("--weightings", default=joined(CANDIDATE_WEIGHTINGS), show_default=True,
              help=f"Candidate weightings of Algorithm 1 (of {', '.join(WEIGHTINGS)}).")
@click.option("--weight-cap", type=float, default=METHOD.weight_cap, show_default=True, help="The capped weighting's cap.")
@click.option("--lr-factors", default=joined(CONTROL_LR_FACTORS), show_default=True,
              help="Controls: the baseline at lr times each factor (the slower-clock controls).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=NETWORK.preset, show_default=True)
@click.option("--channels", default=None, help="Override: UNet widths per level, e.g. 32,64.")
@click.option("--layers-per-block", type=int, default=None)
@click.option("--attn-resolutions", default=None, help="Override: resolutions with attention (empty: none).")
@click.option("--steps", type=int, default=FRONTIER_STEPS, show_default=True, help="Training steps of every run.")
@click.option("--batch", type=int, default=OPTIM.batch, show_default=True)
@click.option("--lr", type=float, default=OPTIM.lr, show_default=True, help="The base learning rate.")
@click.option("--checkpoints", type=int, default=FRONTIER.checkpoints, show_default=True,
              help="Points along each path.")
@click.option("--n-samples", type=int, default=FRONTIER.n_samples, show_default=True, help="Samples at each point.")
@click.option("--sample-steps", type=int, default=FRONTIER.sample_steps, show_default=True)
@click.option("--quality-features", default=FRONTIER.quality_features, show_default=True,
              help="Quality features: digits-net, pixels, inception:FILE, dinov2:DIR, classifier:SPEC.")
@click.option("--quality-metric", type=click.Choice(["kid", "fd"]), default=FRONTIER.quality_metric,
              show_default=True, help="KID (unbiased) or Frechet distance.")
@click.option("--patience", type=int, default=FRONTIER.patience, show_default=True,
              help="The guard's stopping rule: stop a run after this many unsafe checks in a row (0: never).")
@click.option("--check-every", type=int, default=FRONTIER.check_every, show_default=True,
              help="Check every k-th checkpoint, and every one once a check hints at copying.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=FRONTIER.precision, show_default=True,
              help="Training's forward pass: float32, or bfloat16 autocast (faster on CPUs with AMX; changes the "
                   "numbers, so it is part of the frontier's configuration).")
@click.option("--sample-precision", type=click.Choice(PRECISIONS), default=FRONTIER.sample_precision,
              show_default=True, help=SAMPLE_PRECISION_HELP)
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs trained at once (one process each).")
@click.option("--device", default="auto", show_default=True)
@click.option("--report-only", is_flag=True, help="Train nothing: report the runs finished so far.")
@click.option("--status", is_flag=True, help="Train nothing, write nothing: a table of where each run of --out "
                                             "stands (safe to ask while the frontier trains).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (re-running resumes).")
def frontier(data_spec, resolution, resize, subsets, seeds, sigma_n, weightings, weight_cap, lr_factors, preset, channels,
             layers_per_block, attn_resolutions, steps, batch, lr, checkpoints, n_samples, sample_steps,
             quality_features, quality_metric, patience, check_every, precision, sample_precision, jobs, device,
             report_only, status, out) -> None:
    """Train the baseline at several learning rates and Algorithm 1 with each weighting; record every run's
    (quality, copies) at evenly spaced checkpoints; write frontier.md (verdict, tables) and frontier.png."""
    from diffmem.report.frontier import write_report
    from diffmem.sweep.frontier import run_frontier

    if status:  # before any validation of the training flags: it reads the folder alone
        from diffmem.sweep.status import frontier_status, status_lines

        click.echo("\n".join(status_lines(frontier_status(out))))
        return
    fc = frontier_config_from_flags(
        data_spec=data_spec, resolution=resolution, subsets=subsets, seeds=seeds, sigma_n=sigma_n,
        weightings=weightings, weight_cap=weight_cap, lr_factors=lr_factors, preset=preset, channels=channels,
        layers_per_block=layers_per_block, attn_resolutions=attn_resolutions, steps=steps, batch=batch, lr=lr,
        checkpoints=checkpoints, n_samples=n_samples, sample_steps=sample_steps, quality_features=quality_features,
        quality_metric=quality_metric, patience=patience, check_every=check_every, resize=resize,
        precision=precision, sample_precision=sample_precision)
    check_jobs(jobs)
    data = run_frontier(fc, out, device=device_name(device), jobs=jobs, echo=click.echo, report_only=report_only)
    data["files"] = write_report(data, out)
    click.echo((data["files"]["markdown"]).read_text().split("\n## ")[0].rstrip())
    click.echo("wrote " + ", ".join(str(p) for p in data["files"].values()))
