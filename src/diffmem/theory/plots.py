"""Figures of the theory commands (matplotlib Agg canvas; pyplot's global state is never touched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffmem.data.datasets import to_uint8
from diffmem.theory.mixtures import gaussian_tv, merge_noise_bound, separated_noise_bound, tv_lower_bound

MARKERS = {"baseline": "o", "ambient": "s"}  # Monte Carlo points of the leakage figure, per model

__all__ = ["plot_closed_form", "plot_commitment", "plot_leakage", "plot_mixtures"]


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=110, format="png")
    return path


def _strip(x: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> one uint8 row image [H, B*(W+1), C] (gray for C = 1)."""
    imgs = to_uint8(x)  # [B, H, W, C]
    b, h, w, c = imgs.shape
    out = np.full((h, b * (w + 1) - 1, c), 128, np.uint8)
    for i in range(b):
        out[:, i * (w + 1) : i * (w + 1) + w] = imgs[i]
    return out[..., 0] if c == 1 else out


def plot_closed_form(numbers: dict[str, Any], images: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Rows of samples of the exact optima next to the points they land on, and the measured distances."""
    rows = [
        ("baseline optimum: samples", "baseline"),
        ("nearest training image", "baseline_nearest"),
        (f"ambient optimum at sigma_n={numbers['sigma_n']:g}", "ambient"),
        ("nearest noisy copy y_i", "ambient_nearest_copy"),
        ("clean source x_i of that copy", "ambient_source"),
        ("Algorithm 1 optimum, continued to 0", "algorithm1"),
    ]
    fig = Figure(figsize=(11, 8.5))
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[2.2, 1])
    for r, (title, key) in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(_strip(images[key]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.axis("off")
    ax = fig.add_subplot(grid[:, 1])
    series = [
        ("baseline -> nearest train", numbers["baseline"]["distance_to_nearest_train"]["per_sample"]),
        ("ambient@sigma_n -> nearest copy", numbers["ambient_at_sigma_n"]["distance_to_nearest_copy"]["per_sample"]),
        ("ambient@sigma_n -> nearest train", numbers["ambient_at_sigma_n"]["distance_to_nearest_train"]["per_sample"]),
        ("Algorithm 1 -> nearest train", numbers["algorithm1"]["distance_to_nearest_train"]["per_sample"]),
    ]
    for k, (label, vals) in enumerate(series):
        v = np.maximum(np.asarray(vals), 1e-8)
        ax.scatter(v, np.full_like(v, k) + np.linspace(-0.15, 0.15, len(v)), s=12, label=label)
    ax.axvline(numbers["median_nn_distance"], color="k", ls=":", label="median NN distance of train")
    ax.axvline(numbers["copy_noise_norm"], color="r", ls="--", label="sigma_n sqrt(d)")
    ax.set_xscale("log")
    ax.set_yticks([])
    ax.set_ylim(-0.5, len(series) + 1.5)
    ax.set_xlabel("distance in [-1, 1] pixels (0 at 1e-8)")
    ax.legend(fontsize=7, loc="upper left")
    on_source = 100 * numbers["algorithm1"]["fraction_on_source_of_copy"]
    on_some = 100 * numbers["algorithm1"]["fraction_on_some_training_image"]
    fig.suptitle(
        f"Exact optima of {numbers['n_train']} images (d={numbers['dim']}, sigma_n={numbers['sigma_n']:g}, "
        f"{numbers['num_samples']} samples): baseline lands on training points, ambient on noisy copies (Lemma 4.1);\n"
        f"Algorithm 1 on a training image {on_some:.0f}%, on its copy's source {on_source:.0f}%",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.02, right=0.98, top=0.91, bottom=0.12, wspace=0.35, hspace=0.5)
    return _save(fig, path)


def plot_leakage(result: dict[str, Any], path: str | Path) -> Path:
    """Mutual information vs m (exact curves, Monte Carlo points) and vs SNR at the largest m (Lemma 4.2)."""
    curves = result["exact"]
    ms = np.asarray(curves["m"])
    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    colors = [f"C{i}" for i in range(len(curves["snr"]))]
    for j, snr in enumerate(curves["snr"]):
        ax1.plot(ms, curves["baseline"][j], color=colors[j], label=f"baseline, SNR={snr:g}")
        ax1.plot(ms, curves["ambient"][j], color=colors[j], ls="--", label=f"ambient, SNR={snr:g}")
    for pt in result.get("monte_carlo", []):
        j = curves["snr"].index(pt["snr"])
        ax1.errorbar(pt["m"], pt["mean"], yerr=2 * pt["stderr"], fmt=MARKERS[pt["method"]],
                     color=colors[j], ms=4, mfc="none", capsize=2)
    ax1.set_xscale("log")
    ax1.set_xlabel("m (generated samples)")
    ax1.set_ylabel("I(training data; samples) [nats]")
    ax1.set_title(f"d={curves['d']}, n={curves['n']}; markers: Monte Carlo +-2 s.e.", fontsize=9)
    ax1.legend(fontsize=7)
    snr_grid = np.asarray(result["snr_grid"]["snr"])
    ax2.plot(snr_grid, result["snr_grid"]["baseline"], label=f"baseline, m={result['snr_grid']['m']}")
    ax2.plot(snr_grid, result["snr_grid"]["ambient"], ls="--", label=f"ambient, m={result['snr_grid']['m']}")
    ax2.set_xscale("log")
    ax2.set_xlabel("SNR = prior variance / sigma_n^2")
    ax2.set_ylabel("nats")
    ax2.set_title("Lemma 4.2: (d/2) log(1 + m SNR) vs (d/2) log(1 + SNR)", fontsize=9)
    ax2.legend(fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.12, wspace=0.25)
    return _save(fig, path)


def _plot_tv_panel(ax: Any, tv: dict[str, Any]) -> None:
    """Exact TV of two components vs noise, Lemma A.5's lower bound (dotted), Lemma A.6's merge bound (dashed)."""
    s = np.asarray(tv["sigmas"])
    s0, eps = tv["sigma0"], tv["eps"]
    for k, delta in enumerate(tv["deltas"]):
        ax.plot(s, gaussian_tv(delta, s, s0), color=f"C{k}", label=f"exact TV, |mu1-mu2|={delta:g}")
        ax.plot(s, tv_lower_bound(delta, s, s0), color=f"C{k}", ls=":", lw=0.8,
                label="A.5 lower bound TV(0) sigma0/sqrt(sigma0^2+sigma^2)" if k == 0 else None)
        ax.axvline(merge_noise_bound(delta, eps, s0), color=f"C{k}", ls="--", lw=0.8,
                   label=f"A.6: TV <= {eps:g} for sigma >= this" if k == 0 else None)
    ax.axvspan(s[0], separated_noise_bound(s0), color="0.9", label="sigma <= sqrt(3) sigma0: TV >= TV(0)/2 (A.5)")
    ax.axhline(eps, color="k", lw=0.6, label=f"eps = {eps:g}: 'merged' in this panel (--eps)")
    ax.set_xscale("log")
    ax.set_xlabel(f"noise sigma (component std sigma0 = {s0:g})")
    ax.set_ylabel("total variation of the two components at noise sigma")
    ax.set_title("two Gaussians: TV = 2 Phi(|mu1-mu2| / (2 sqrt(sigma0^2+sigma^2))) - 1", fontsize=9)
    ax.legend(fontsize=6)


def plot_mixtures(result: dict[str, Any], path: str | Path) -> Path:
    """TV of two subpopulations vs noise with Lemma A.5/A.6 bounds; singletons, tau1 and tau1 x E[singletons]
    of Feldman's model vs noise (subpopulations merged when their TV <= merge_tv, not the TV panel's eps)."""
    fig = Figure(figsize=(15, 4.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    _plot_tv_panel(ax1, result["tv"])
    sim = result["subpopulations"]
    rows, p = sim["rows"], sim["params"]
    ss = np.asarray([r["sigma"] for r in rows])
    ax2.plot(ss, [r["singletons"] for r in rows], "o-", ms=3, label="singletons in the training set")
    ax2.plot(ss, [r["expected_singletons"] for r in rows], "--", label="expected singletons")
    ax2.plot(ss, [r["components"] for r in rows], label="subpopulations after merging")
    ax2.set_xscale("log")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel(f"noise sigma (subpopulation std {p['sigma0']:g}, means of std {p['spread']:g})")
    ax2.set_ylabel("count")
    ax2.set_title(f"Feldman model: K={p['num_components']}, n={p['num_train']}, Zipf({p['alpha']:g}); "
                  f"merged when TV <= {p['merge_tv']:g} (--merge-tv)", fontsize=8)
    ax2.legend(fontsize=7)
    ax3.plot(ss, [r["singleton_mass"] for r in rows], "o-", ms=3, label="tau1 x expected singletons (left)")
    ax3.plot(ss, [r["max_frequency"] for r in rows], "--", label="largest merged frequency (left)")
    ax3.set_xscale("log")
    ax3.set_xlabel("noise sigma")
    ax3.set_ylabel("population mass")
    tau = [(r["sigma"], r["tau1"]) for r in rows if r["tau1"] is not None]
    twin = ax3.twinx()
    twin.plot([t[0] for t in tau], [t[1] for t in tau], "s:", ms=3, color="C3", label="tau1 (right)")
    twin.set_ylabel("tau1 (Thm 4.3; undefined with one component)")
    twin.set_ylim(bottom=0)
    ax3.set_title("tau1 does not fall here; tau1 x E[singletons] falls with the singletons", fontsize=9)
    handles = ax3.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax3.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="center left")
    fig.subplots_adjust(left=0.05, right=0.95, top=0.92, bottom=0.12, wspace=0.32)
    return _save(fig, path)


def plot_commitment(curve: dict[str, Any], suggestion: dict[str, Any] | None, path: str | Path) -> Path:
    """Largest posterior weight and effective count vs noise, train vs held-out, with the sigma_n suggestion."""
    s = np.asarray(curve["sigmas"])
    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    for key, color, label in (("train", "C0", "noisy training points"), ("heldout", "C1", "noisy held-out points")):
        if not all(key in r for r in curve["rows"]):
            continue
        for ax, stat in ((ax1, "max_weight"), (ax2, "eff_count")):
            med = [r[key][stat]["median"] for r in curve["rows"]]
            lo = [r[key][stat]["p10"] for r in curve["rows"]]
            hi = [r[key][stat]["p90"] for r in curve["rows"]]
            ax.plot(s, med, color=color, label=f"{label} (median, 10-90%)")
            ax.fill_between(s, lo, hi, color=color, alpha=0.2)
    if all("argmax_is_source" in r["train"] for r in curve["rows"]):  # what a copy made at sigma_n = s reveals
        ax1.plot(s, [r["train"]["argmax_is_source"] for r in curve["rows"]], color="C3", ls="-.",
                 label="share of noisy training points whose largest weight is their own image")
    if suggestion is not None:
        for ax in (ax1, ax2):
            ax.axvspan(*suggestion["window"], color="0.85", zorder=0,
                       label=f"window: median {suggestion['high']:g} -> {suggestion['low']:g}")
            ax.axvspan(*suggestion["range"], color="C2", alpha=0.25, zorder=0,
                       label="heuristic sigma_n range (floor: sigma_n sqrt(d) = median NN distance)")
            ax.axvline(suggestion["suggested"], color="C2", ls="--", label=f"suggested {suggestion['suggested']:.2g}")
    ax1.set_ylabel("largest posterior weight max_i w_i (red: a share)")
    ax2.set_ylabel("effective count 1 / sum_i w_i^2")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("noise level s")
        ax.legend(fontsize=7)
    fig.suptitle(f"Commitment curve: {curve['n_train']} training images, d={curve['dim']}, "
                 f"median NN distance {curve['median_nn_distance']:.2f}", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.12, wspace=0.25)
    return _save(fig, path)
