"""`diffmem audit`: how much do generated samples copy their training set?"""

from __future__ import annotations

import click

from diffmem.errors import DiffmemError
from diffmem.utils.flags import device_name, float_list

FEATURES_HELP = (
    "Feature space: pixels, dinov2[:HUB_ID_OR_DIR] (default facebook/dinov2-giant), clip[:HUB_ID_OR_DIR], "
    "inception[:WEIGHTS], torchscript:PATH (e.g. SSCD), digits-net[:RES] (built-in digits; no download)."
)


def parse_floats(text: str, option: str, low: float, high: float) -> tuple[float, ...]:
    """'0.85,0.9' -> (0.85, 0.9), each in [low, high]; DiffmemError naming the option otherwise."""
    values = float_list(text, option, example="0.85,0.9")
    bad = [v for v in values if not low <= v <= high]
    if bad or not values:
        raise DiffmemError(f"{option} values must lie in [{low:g}, {high:g}]; got '{text}'")
    return values




def cache_option(cache_dir: str | None, no_cache: bool) -> str | None:
    """The feature cache folder: None with --no-cache, else --cache-dir or the default cache."""
    if no_cache:
        return None
    from diffmem.evaluate.cache import cache_root

    return cache_dir or str(cache_root())


@click.command()
@click.option("--samples", required=True, help="Generated images: a folder, .zip or .npz.")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="A training run: its training subset is the training set, the rest of its data the held-out set.")
@click.option("--train", "train_spec", default=None, help="Training images: folder, .zip, .npz or builtin:digits.")
@click.option("--heldout", "heldout_spec", default=None,
              help="Held-out real images of the same distribution (with --train).")
@click.option("--features", default="dinov2", show_default=True, help=FEATURES_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier audit (replaced whole); other folders are refused.")
@click.option("--thresholds", default="0.85,0.875,0.9,0.925,0.95", show_default=True,
              help="Fixed cosine-similarity thresholds.")
@click.option("--calibrate", default="99,99.9", show_default=True,
              help="Held-out percentiles of nearest-training similarity used as calibrated thresholds.")
@click.option("--ratio-k", type=int, default=None,
              help="Neighbours in the ratio test [default: 50, or a tenth of the training images below 500].")
@click.option("--max-heldout", type=int, default=10000, show_default=True,
              help="Use a seeded subset of at most this many held-out images.")
@click.option("--resolution", type=int, default=None, help="Load --train/--heldout at this size (see --resize).")
@click.option("--resize", is_flag=True, help="Center-crop and resize --train/--heldout images to --resolution.")
@click.option("--image-size", type=int, default=None, help="Model input size for dinov2/clip/torchscript.")
@click.option("--xflip", is_flag=True,
              help="Also match mirrored images: each image's similarity is the maximum over it and its mirror.")
@click.option("--n-pictures", type=int, default=16, show_default=True, help="Pairs shown in neighbours.png.")
@click.option("--backend", type=click.Choice(["torch", "faiss"]), default="torch", show_default=True,
              help="Nearest-neighbour search (faiss: for millions of references; pip install faiss-cpu).")
@click.option("--batch", type=int, default=256, show_default=True, help="Images per feature batch.")
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Feature cache folder [default: $DIFFMEM_CACHE or ~/.cache/diffmem].")
@click.option("--no-cache", is_flag=True, help="Do not read or write cached features.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def audit(samples, run_dir, train_spec, heldout_spec, features, out, thresholds, calibrate, ratio_k, max_heldout,
          resolution, resize, image_size, xflip, n_pictures, backend, batch, device, cache_dir, no_cache, quiet) -> None:
    """Compare samples with their nearest training images; write report.html/.md/.json, nearest.csv and pictures.

    Under torchrun every process embeds and searches a share of the images; rank 0 writes.
    """
    from diffmem.api import audit as api_audit
    from diffmem.evaluate.audit_files import check_out_dir

    if (run_dir is None) == (train_spec is None):
        raise DiffmemError("give exactly one of --run DIR or --train SPEC")
    if run_dir is not None and heldout_spec is not None:
        raise DiffmemError("--heldout goes with --train; with --run the held-out set is the rest of the run's data")
    fixed = parse_floats(thresholds, "--thresholds", -1.0, 1.0)
    percentiles = parse_floats(calibrate, "--calibrate", 0.0, 100.0)
    if (ratio_k is not None and ratio_k < 1) or n_pictures < 1 or max_heldout < 1:
        raise DiffmemError("--ratio-k, --n-pictures and --max-heldout must be at least 1")
    check_out_dir(out)
    from diffmem.utils.distributed import init_world

    world, dev = init_world(device_name(device))  # torchrun: each rank embeds and searches a share
    result = api_audit(
        samples, train_spec, heldout_spec, features, out, run=run_dir, thresholds=fixed, calibrate=percentiles,
        ratio_k=ratio_k, xflip=xflip, max_heldout=max_heldout, resolution=resolution, resize=resize,
        image_size=image_size, device=dev, batch_size=batch, cache_dir=cache_option(cache_dir, no_cache),
        backend=backend, n_pictures=n_pictures, progress=not quiet, world=world,
    )
    if world.main:
        _summary(result.report, out)
        click.echo(result.summary())


def _summary(report: dict, out: str) -> None:
    sim = report["similarity"]
    click.echo(f"features {report['features']}: {report['n_samples']} samples vs {report['n_train']} training images")
    click.echo(f"  samples:  similarity mean {sim['mean']:.4f}  median {sim['median']:.4f}  p95 {sim['p95']:.4f}  "
               f"max {sim['max']:.4f}")
    line = "  ".join(f">{k}: {v:.3f}" for k, v in report["fraction_above"].items())
    click.echo(f"  samples:  {line}")
    held = report.get("heldout")
    if held:
        hs = held["similarity"]
        click.echo(f"  held-out ({held['n']}): similarity mean {hs['mean']:.4f}  p95 {hs['p95']:.4f}  "
                   + "  ".join(f">{k}: {v:.3f}" for k, v in held["fraction_above"].items()))
        cal = report["calibrated_thresholds"]
        frac = report["fraction_above_calibrated"]
        click.echo("  calibrated: " + "  ".join(f"{k} = {cal[k]:.4f} -> samples above: {frac[k]:.3f}" for k in cal))
    for name, rt in _ratio_tests(report).items():
        click.echo(f"  ratio test {name}: fraction flagged {rt['fraction_below']:.3f}")
    for w in report.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {out}/report.html (open it), report.md, report.json, nearest.csv, nearest.npz, histogram.png, "
               "samples.png, neighbours.png")


def _ratio_tests(report: dict) -> dict[str, dict]:
    """The ratio test(s) of a report, by name; read defensively (one test, or several named definitions)."""
    rt = report.get("ratio_test") or report.get("ratio_tests")
    if not isinstance(rt, dict):
        return {}
    if "fraction_below" in rt:
        return {f"(k={rt.get('k')})": rt}
    return {str(k): v for k, v in rt.items() if isinstance(v, dict) and "fraction_below" in v}
