"""`diffmem theory ...`: compute the theory of Shah et al. 2025 (Sec. 4, App. A and C; docs/method.md) and write a
figure and a JSON per command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from diffmem.errors import DiffmemError
from diffmem.utils.atomic import write_json_atomic
from diffmem.utils.flags import float_list

_DATA_HELP = "Image set: builtin:digits, a folder of images, a .zip or a .npz."


def _prepare_out(out: str, names: list[str], overwrite: bool) -> Path:
    """Create `out`; refuse to replace any of `names` there unless `overwrite`."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise DiffmemError(f"--out {out} is a file; give a directory")
    existing = [n for n in names if (path / n).exists()]
    if existing and not overwrite:
        raise DiffmemError(f"{', '.join(str(path / n) for n in existing)} already exist(s); pass --overwrite to "
                           "replace them or choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


def _float_list(value: str, flag: str, positive: bool = True) -> list[float]:
    vals = list(float_list(value, flag, example="0.25,1,4"))
    if not vals or not all(math.isfinite(v) and (v > 0 or not positive) for v in vals):
        raise DiffmemError(f"{flag} needs finite numbers{' > 0' if positive else ''}; got {value!r}")
    return vals


def _load(data: str, resolution: int | None, resize: bool, subset: int | None, subset_seed: int):
    """-> (train [N, C, H, W] in [-1, 1], held-out or None, info dict)."""
    from diffmem.data.datasets import load_images, split_subset, to_model_range

    ds = load_images(data, resolution=resolution, resize=resize)
    train_idx, held_idx = split_subset(len(ds), subset, subset_seed)
    train = to_model_range(ds.images[train_idx])
    held = to_model_range(ds.images[held_idx]) if len(held_idx) else None
    info = {"data": data, "resolution": resolution, "subset": subset, "subset_seed": subset_seed,
            "n_source": len(ds), "content_hash": ds.content_hash()}
    return train, held, info


def _data_options(f):
    f = click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the subset choice.")(f)
    f = click.option("--subset", type=int, default=None, help="Use N images for training, the rest as held-out.")(f)
    f = click.option("--resize", is_flag=True, help="Center-crop and resize every image to --resolution.")(f)
    f = click.option("--resolution", type=int, default=None, help="Image size (digits: default 16).")(f)
    f = click.option("--data", default="builtin:digits", show_default=True, help=_DATA_HELP)(f)
    return f


def _out_options(f):
    f = click.option("--overwrite", is_flag=True, help="Replace existing output files in --out.")(f)
    f = click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")(f)
    return f


@click.group("theory")
def theory() -> None:
    """Compute and check the theory of Shah et al. 2025 (Sec. 4, App. A and C), with figures."""


@theory.command("closed-form")
@_data_options
@click.option("--sigma-n", type=float, default=0.5, show_default=True, help="Algorithm 1's threshold.")
@click.option("--samples", type=int, default=16, show_default=True, help="Samples per optimum.")
@click.option("--steps", type=int, default=32, show_default=True, help="Heun steps of each sampler.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial latents.")
@click.option("--copies-seed", type=int, default=0, show_default=True, help="Seed of the noisy copies y_i.")
@_out_options
def closed_form(data: str, resolution: int | None, resize: bool, subset: int | None, subset_seed: int,
                sigma_n: float, samples: int, steps: int, seed: int, copies_seed: int, out: str,
                overwrite: bool) -> None:
    """Sample the exact optima: baseline replays training images, ambient lands on the noisy copies (Lemma 4.1)."""
    from diffmem.theory.closed_form import closed_form_check
    from diffmem.theory.plots import plot_closed_form

    if not (math.isfinite(sigma_n) and 0 < sigma_n < 80):
        raise DiffmemError(f"--sigma-n must be in (0, 80) (below sigma_max), got {sigma_n}")
    if samples < 1 or steps < 1:
        raise DiffmemError(f"--samples and --steps must be >= 1, got {samples}, {steps}")
    out_dir = _prepare_out(out, ["closed_form.png", "closed_form.json"], overwrite)
    train, _, info = _load(data, resolution, resize, subset, subset_seed)
    numbers, images = closed_form_check(train, sigma_n, samples, seed, copies_seed, steps)
    plot_closed_form(numbers, images, out_dir / "closed_form.png")
    _write_json(out_dir / "closed_form.json", {**info, **numbers})
    b, a, g = numbers["baseline"], numbers["ambient_at_sigma_n"], numbers["algorithm1"]
    click.echo(f"baseline optimum: max distance to nearest training image {b['distance_to_nearest_train']['max']:.2e}")
    click.echo(f"ambient optimum at sigma_n={sigma_n:g}: max distance to nearest copy "
               f"{a['distance_to_nearest_copy']['max']:.2e}, median to nearest clean image "
               f"{a['distance_to_nearest_train']['median']:.3f} (sigma_n sqrt(d) = {numbers['copy_noise_norm']:.3f})")
    click.echo(f"Algorithm 1 optimum: {100 * g['fraction_on_some_training_image']:.0f}% of samples end on a training "
               f"image (distance < {numbers['tolerance']:g}), {100 * g['fraction_on_source_of_copy']:.0f}% on the "
               f"source of the copy they passed ({samples} samples, {numbers['n_train']} images, d={numbers['dim']})")
    click.echo(f"wrote {out_dir / 'closed_form.png'} and {out_dir / 'closed_form.json'}")


@theory.command("leakage")
@click.option("--dim", "d", type=int, default=1, show_default=True, help="Dimension d.")
@click.option("--snr", default="0.25,1,4", show_default=True, help="Comma-separated SNRs (prior var / sigma_n^2).")
@click.option("--m-max", type=int, default=256, show_default=True, help="Largest number of generated samples.")
@click.option("--n-train", type=int, default=1, show_default=True, help="Training points (C.1.3 when > 1).")
@click.option("--mc-draws", type=int, default=4000, show_default=True, help="Monte Carlo draws per replicate.")
@click.option("--mc-reps", type=int, default=10, show_default=True, help="Monte Carlo replicates (0: none).")
@click.option("--mc-m-max", type=int, default=32, show_default=True, help="Largest m checked by Monte Carlo.")
@click.option("--estimator", type=click.Choice(["gaussian", "ksg"]), default="gaussian", show_default=True,
              help="Monte Carlo estimator: plug-in Gaussian log-det, or KSG (d <= 2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Monte Carlo draws.")
@_out_options
def leakage(d: int, snr: str, m_max: int, n_train: int, mc_draws: int, mc_reps: int, mc_m_max: int,
            estimator: str, seed: int, out: str, overwrite: bool) -> None:
    """Mutual information of training data and m samples: baseline vs ambient optimum (Lemma 4.2, C.1.3)."""
    from diffmem.theory.leakage import leakage_report
    from diffmem.theory.plots import plot_leakage

    snrs = _float_list(snr, "--snr")
    if d < 1 or m_max < 1 or n_train < 1:
        raise DiffmemError(f"--dim, --m-max and --n-train must be >= 1, got {d}, {m_max}, {n_train}")
    if mc_reps == 1 or mc_reps < 0 or mc_draws < 10:
        raise DiffmemError(f"--mc-reps must be 0 or >= 2 and --mc-draws >= 10, got {mc_reps}, {mc_draws}")
    if estimator == "ksg" and d > 2:
        raise DiffmemError(f"the KSG estimator is for low dimensions; use --estimator gaussian for --dim {d}")
    out_dir = _prepare_out(out, ["leakage.png", "leakage.json"], overwrite)
    result = leakage_report(m_max, d, snrs, n_train, np.random.default_rng(seed), mc_draws, mc_reps, mc_m_max,
                            estimator)
    result["seed"] = seed
    plot_leakage(result, out_dir / "leakage.png")
    _write_json(out_dir / "leakage.json", result)
    ex = result["exact"]
    for j, s in enumerate(ex["snr"]):
        click.echo(f"SNR {s:g}: m={ex['m'][-1]}: baseline {ex['baseline'][j][-1]:.3f} nats, "
                   f"ambient {ex['ambient'][j][-1]:.3f} nats (bound {ex['ambient_bound'][j]:.3f})")
    worst = max((abs(p["mean"] - p["exact"]) / max(p["stderr"], 1e-12) for p in result["monte_carlo"]), default=None)
    if worst is not None:
        click.echo(f"Monte Carlo: largest |estimate - exact| = {worst:.1f} standard errors")
    click.echo(f"wrote {out_dir / 'leakage.png'} and {out_dir / 'leakage.json'}")


@theory.command("mixtures")
@click.option("--deltas", default="2,4,8", show_default=True, help="Distances between the two means (TV panel).")
@click.option("--sigma0", type=float, default=1.0, show_default=True, help="Component std of the TV panel.")
@click.option("--eps", type=float, default=0.1, show_default=True,
              help="TV panel: TV <= eps counts as merged (Lemma A.6).")
@click.option("--components", type=int, default=1000, show_default=True, help="Subpopulations K.")
@click.option("--train", "num_train", type=int, default=1000, show_default=True, help="Training-set size n.")
@click.option("--dim", type=int, default=2, show_default=True, help="Dimension of the subpopulation model.")
@click.option("--cluster-std", type=float, default=0.005, show_default=True, help="Std of each subpopulation.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Zipf exponent of the frequency list.")
@click.option("--merge-tv", type=float, default=0.5, show_default=True,
              help="Simulation: join subpopulations whose TV <= this (not --eps).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@_out_options
def mixtures(deltas: str, sigma0: float, eps: float, components: int, num_train: int, dim: int,
             cluster_std: float, alpha: float, merge_tv: float, seed: int, out: str, overwrite: bool) -> None:
    """Subpopulations separated at low noise, merged at high noise; heavy-tailed singletons vanish (A.5, A.6)."""
    from diffmem.theory.mixtures import mixtures_report
    from diffmem.theory.plots import plot_mixtures

    delta_list = _float_list(deltas, "--deltas")
    if not (sigma0 > 0 and cluster_std > 0 and alpha > 0 and 0 < eps < 1 and 0 < merge_tv < 1):
        raise DiffmemError("need --sigma0, --cluster-std, --alpha > 0 and --eps, --merge-tv in (0, 1)")
    if components < 2 or num_train < 1 or dim < 1:
        raise DiffmemError(f"need --components >= 2, --train >= 1, --dim >= 1; got {components}, {num_train}, {dim}")
    if components > 20000:
        raise DiffmemError(f"--components {components} needs a {components}^2 distance matrix; use <= 20000")
    out_dir = _prepare_out(out, ["mixtures.png", "mixtures.json"], overwrite)
    tv_sigmas = [float(v) for v in np.geomspace(1e-2 * sigma0, 1e2 * max(delta_list), 60)]
    sim_sigmas = [float(v) for v in np.geomspace(0.2 * cluster_std, 3.0, 20)]  # means have std 1 (spread)
    result = mixtures_report(delta_list, sigma0, eps, tv_sigmas, sim_sigmas, np.random.default_rng(seed),
                             num_components=components, num_train=num_train, dim=dim, cluster_std=cluster_std,
                             alpha=alpha, merge_tv=merge_tv)
    result["seed"] = seed
    plot_mixtures(result, out_dir / "mixtures.png")
    _write_json(out_dir / "mixtures.json", result)
    for row in result["tv"]["rows"]:
        click.echo(f"|mu1-mu2|={row['delta']:g}: TV(0)={row['tv_at_0']:.3f}; >= TV(0)/2 up to "
                   f"{row['half_tv0_exact']:.3g} (bound {row['separated_below']:.3g}); <= {eps:g} from "
                   f"{row['merged_above_exact']:.3g} (bound {row['merged_above_bound']:.3g})")
    rows = result["subpopulations"]["rows"]
    click.echo(f"subpopulations (merged when TV <= {merge_tv:g}; the TV panel's 'merged' is TV <= {eps:g}): "
               f"{rows[0]['singletons']} singletons at sigma={rows[0]['sigma']:.3g}, {rows[-1]['singletons']} at "
               f"sigma={rows[-1]['sigma']:.3g}; tau1 x expected singletons {rows[0]['singleton_mass']:.3g} -> "
               f"{rows[-1]['singleton_mass']:.3g}")
    click.echo(_tau1_line(rows))
    click.echo(f"wrote {out_dir / 'mixtures.png'} and {out_dir / 'mixtures.json'}")


def _tau1_line(rows: list[dict[str, Any]]) -> str:
    """tau1 at the first level, at its largest, at the last level where it is defined, and where it stops."""
    defined = [r for r in rows if r["tau1"] is not None]
    if not defined:
        return "tau1: undefined at every level (one subpopulation)"
    top, last = max(defined, key=lambda r: r["tau1"]), defined[-1]
    msg = (f"tau1 (not what falls): {defined[0]['tau1']:.3g} at sigma={defined[0]['sigma']:.3g}, largest "
           f"{top['tau1']:.3g} at sigma={top['sigma']:.3g}, {last['tau1']:.3g} at sigma={last['sigma']:.3g} "
           f"({last['components']} subpopulations)")
    undefined = [r for r in rows if r["tau1"] is None]
    if undefined:
        msg += f"; undefined (0/0, one subpopulation) from sigma={undefined[0]['sigma']:.3g}"
    return msg


@theory.command("commitment")
@_data_options
@click.option("--sigmas", default=None, help="Comma-separated noise levels (default: 31 from 0.02 to 20).")
@click.option("--repeats", type=int, default=1, show_default=True, help="Noise draws per image and level.")
@click.option("--max-heldout", type=int, default=2000, show_default=True, help="Held-out images used at most.")
@click.option("--high", type=float, default=0.9, show_default=True, help="Window bottom: median max weight.")
@click.option("--low", type=float, default=0.5, show_default=True, help="Window top: median max weight.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise draws.")
@_out_options
def commitment(data: str, resolution: int | None, resize: bool, subset: int | None, subset_seed: int,
               sigmas: str | None, repeats: int, max_heldout: int, high: float, low: float, seed: int, out: str,
               overwrite: bool) -> None:
    """Posterior weight vs noise of a data set, and a heuristic sigma_n range (docs/method.md)."""
    import torch

    from diffmem.theory.commitment import DEFAULT_SIGMAS, commitment_curve, default_sigma_grid, suggest_sigma_n
    from diffmem.theory.plots import plot_commitment

    levels = list(DEFAULT_SIGMAS) if sigmas is None else _float_list(sigmas, "--sigmas")
    if repeats < 1 or max_heldout < 0:
        raise DiffmemError(f"--repeats must be >= 1 and --max-heldout >= 0, got {repeats}, {max_heldout}")
    if not 0 < low < high < 1:  # the window of the suggestion (suggest_sigma_n): refused before any work
        raise DiffmemError(f"--low and --high must satisfy 0 < low < high < 1, got --low {low}, --high {high}")
    out_dir = _prepare_out(out, ["commitment.png", "commitment.json"], overwrite)
    train, held, info = _load(data, resolution, resize, subset, subset_seed)
    curve = commitment_curve(train, held, levels, torch.Generator().manual_seed(seed), repeats, max_heldout)
    try:
        suggestion: dict[str, Any] | None = suggest_sigma_n(curve, high, low)
        grid: list[float] | None = default_sigma_grid(curve, high=high, low=low)
    except DiffmemError as err:  # the curve is still worth writing; say why there is no suggestion
        suggestion, grid = None, None
        click.echo(f"no sigma_n suggestion: {err}", err=True)
    plot_commitment(curve, suggestion, out_dir / "commitment.png")
    _write_json(out_dir / "commitment.json", {**info, "seed": seed, "curve": curve, "suggestion": suggestion,
                                               "sweep_grid": grid})
    for s_show in (0.5, 1.0, 2.0, 4.0):
        row = min(curve["rows"], key=lambda r: abs(math.log(r["sigma"] / s_show)))
        msg = (f"s={row['sigma']:.3g}: max weight median {row['train']['max_weight']['median']:.3f} "
               f"(10-90%: {row['train']['max_weight']['p10']:.2f}-{row['train']['max_weight']['p90']:.2f}), "
               f"effective count {row['train']['eff_count']['median']:.2f}")
        if "heldout" in row:
            h = row["heldout"]
            msg += f"; held-out {h['max_weight']['median']:.3f} / {h['eff_count']['median']:.2f}"
        click.echo(msg)
    if suggestion is not None:
        (w0, w1), (r0, r1) = suggestion["window"], suggestion["range"]
        click.echo(f"window (median max weight {high:g} -> {low:g}): {w0:.3g} - {w1:.3g}; floor (copy noise norm = "
                   f"median NN distance) {suggestion['floor']:.3g}; heuristic sigma_n range {r0:.3g} - {r1:.3g} "
                   f"(suggested {suggestion['suggested']:.3g}, the window's bottom)")
        at = suggestion.get("argmax_is_source_at")
        if at is not None:
            click.echo(f"noisy training points whose largest posterior weight is their own image, at s = "
                       f"{r0:.3g} / {r1:.3g}: {at['range_low']:.2f} / {at['range_high']:.2f} (so a copy made at "
                       "sigma_n = s still points to its source about this often)")
        for w in suggestion.get("warnings", []):
            click.echo(f"warning: {w}")
        click.echo(f"sweep grid: {', '.join(f'{g:g}' for g in grid or [])}")
    click.echo(f"wrote {out_dir / 'commitment.png'} and {out_dir / 'commitment.json'}")
