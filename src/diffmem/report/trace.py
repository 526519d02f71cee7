"""The report of `diffmem trace`: a table and a plot of where copies are decided along sampling (the traced
runs of `diffmem.evaluate.decision.trace_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffmem.method_looks import short

__all__ = ["decision_plot", "decision_table"]


def decision_plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """For each traced run: the share of copies (solid) and other samples (dashed) whose final nearest
    training image is already the nearest of D(x; sigma), against sigma; sigma_n dotted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for r in rows:
        label = short(r["method"]) + (f", sigma_n {r['sigma_n']:g}" if r.get("sigma_n") is not None else "")
        label = f"{Path(r['run']).name}: {label}"
        color = None
        if r["settled_copies"] is not None:
            color = ax.plot(r["sigmas"], r["settled_copies"], marker="o", ms=3,
                            label=f"{label}, copies ({r['copies']:.0%})")[0].get_color()
        if r["settled_others"] is not None:
            color = ax.plot(r["sigmas"], r["settled_others"], ls="--", color=color,
                            label=f"{label}, the others")[0].get_color()
        if r.get("sigma_n"):
            ax.axvline(r["sigma_n"], color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma along the sampler (dotted: sigma_n)")
    ax.set_ylabel("share whose final nearest training\nimage is already fixed")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def decision_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one row per traced run (`trace_run` results)."""
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    lines = ["| run | method | sigma_n | copies | median decision sigma of copies | of the others | "
             "copies decided at or above sigma_n |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['method']} | {fmt(r.get('sigma_n'))} | {r['copies']:.3f} | "
                     f"{fmt(r['median_level_copies'])} | {fmt(r['median_level_others'])} | "
                     f"{fmt(r.get('copies_decided_above_sigma_n'))} |")
    return lines
