"""The memorization/quality frontier: Pareto set, its plot, and a rule of thumb for sigma_n.

Both axes are minimized: the quality distance (a Frechet distance; lower is better) and the copy
fraction (share of samples at least as close to a training image as the calibrated threshold).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diffmem.diffusion.methods import Ambient, Baseline
from diffmem.method_looks import style as _style, title
from diffmem.sweep.results import context, param_column, summarize, variant_label
from diffmem.utils.atomic import save_atomic

__all__ = ["pareto_front", "plot_pareto", "choose_sigma_n", "rule_of_thumb_text"]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "copy_frac", y: str = "quality") -> list[int]:
    """Indices of the Pareto-optimal rows when minimizing both `x` and `y`, sorted by `x` then `y`.

    A row is dominated when another row is no worse in both and strictly better in one; rows missing
    either value are never on the front. Exact duplicates are all kept.
    """
    pts = [(i, float(r[x]), float(r[y])) for i, r in enumerate(rows) if _finite(r.get(x)) and _finite(r.get(y))]
    front = []
    for i, xi, yi in pts:
        dominated = any(xj <= xi and yj <= yi and (xj < xi or yj < yi) for j, xj, yj in pts if j != i)
        if not dominated:
            front.append((xi, yi, i))
    return [i for _, _, i in sorted(front)]


def _copy_se(s: dict[str, Any]) -> float | None:
    """Binomial standard error of a (seed-averaged) copy fraction over all its samples; None without
    `n_samples`. p(1-p) is floored at 1/n so that a fraction of 0 still has an uncertainty."""
    n = s.get("n_samples")
    if not _finite(n) or n <= 0 or not _finite(s.get("copy_frac")):
        return None
    total = float(n) * int(s.get("seeds", 1) or 1)
    p = float(s["copy_frac"])
    return math.sqrt(max(p * (1 - p), 1 / total) / total)


def choose_sigma_n(rows: Sequence[dict[str, Any]], tolerance: float = 0.1,
                   method: str = Ambient.name) -> list[dict[str, Any]]:
    """The rule of thumb, per training-set size: among `method`'s sigma_n values (averaged over seeds)
    whose quality distance is at most `(1 + tolerance)` times the baseline's, take the one with the
    lowest copy fraction (ties: better quality).

    Returns one dict per subset: `subset`, `sigma_n` (None when no value qualifies, there is no baseline,
    or the baseline copies no more than held-out real images do), `copy_frac`, `quality`,
    `baseline_copy_frac`, `baseline_quality`, `tolerance`, `helps` (whether it copies less than the
    baseline by more than twice the binomial standard error of the difference, when the rows give
    `n_samples`; this counts sampling noise only, seed-to-seed variation comes on top) and `message`.
    """
    summary = summarize(list(rows))
    out = []
    keys = sorted({(s["subset"], s["context"]) for s in summary},
                  key=lambda k: (float("inf") if k[0] is None else k[0], k[1]))
    for subset, ctx in keys:
        group = [s for s in summary if s["subset"] == subset and s["context"] == ctx]
        cands = [s for s in group if s["method"] == method and _finite(s.get("quality"))
                 and _finite(s.get("copy_frac"))]
        base = _baseline_for(group, cands)
        res: dict[str, Any] = {"subset": subset, "method": method, "tolerance": tolerance, "sigma_n": None,
                               "copy_frac": None, "quality": None, "helps": False,
                               "baseline_copy_frac": base.get("copy_frac") if base else None,
                               "baseline_quality": base.get("quality") if base else None}
        where = f"{subset} training images" if subset is not None else "all training images"
        if sum(k[0] == subset for k in keys) > 1:
            where += f" [{ctx}]"
        res["context"] = ctx
        res["message"] = _choose(res, base, cands, where, method, tolerance)
        out.append(res)
    return out


def _baseline_for(group: list[dict[str, Any]], cands: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The baseline row trained at the candidates' (most common) learning rate, else the first baseline."""
    bases = [s for s in group if s["method"] == Baseline.name]
    lrs = [c.get("lr") for c in cands]
    return next((b for b in bases if lrs and b.get("lr") == max(set(lrs), key=lrs.count)),
                bases[0] if bases else None)


def _choose(res: dict[str, Any], base: dict[str, Any] | None, cands: list[dict[str, Any]], where: str,
            method: str, tolerance: float) -> str:
    """Fill in `res` with the pick among `cands` (if any qualifies) and return the message."""
    if base is None or not _finite(base.get("quality")) or not _finite(base.get("copy_frac")):
        return (f"{where}: no baseline (edm) run to compare {method} with: add edm to `diffmem sweep --methods`, or "
                "give `diffmem compare` an edm run or sweep (a standalone audit folder records no method)")
    if not cands:
        return f"{where}: no {method} runs"
    qb, cb = float(base["quality"]), float(base["copy_frac"])
    ref, se_b = base.get("heldout_copy_frac"), _copy_se(base)
    if _finite(ref) and se_b is not None and cb <= float(ref) + 2 * se_b:
        return (f"{where}: the baseline copies no more than unseen real images do ({cb:.3f} vs "
                f"{float(ref):.3f} for held-out images); there is no copying for {method} to remove "
                "at this budget")
    limit = qb * (1 + tolerance) if qb >= 0 else qb * (1 - tolerance)
    ok = [s for s in cands if s["quality"] <= limit]
    if not ok:
        best = min(cands, key=lambda s: s["quality"])
        return (f"{where}: no sigma_n keeps quality within {tolerance:.0%} of the baseline "
                f"({_q(qb)}); the closest is sigma_n={best['param']:g} ({_q(best['quality'])}, "
                f"copies {best['copy_frac']:.3f} vs {cb:.3f}). Train longer or widen the grid")
    pick = min(ok, key=lambda s: (s["copy_frac"], s["quality"]))
    se_p = _copy_se(pick)
    z = (cb - pick["copy_frac"]) / math.hypot(se_b, se_p) if se_b is not None and se_p is not None else None
    helps = pick["copy_frac"] < cb and (z is None or z >= 2)
    res.update({"sigma_n": pick["param"], "ambient_weight": pick.get("ambient_weight"), "lr": pick.get("lr"),
                "copy_frac": pick["copy_frac"], "quality": pick["quality"],
                "helps": helps})
    change = (pick["copy_frac"] - cb) / cb if cb > 0 else float("nan")
    dq = (pick["quality"] - qb) / qb if qb > 0 else float("nan")
    sig = f"; {z:.1f} standard errors" if z is not None else ""
    if helps:
        return (f"{where}: sigma_n = {pick['param']:g}{variant_label(pick)} copies {pick['copy_frac']:.3f} "
                f"vs the baseline's {cb:.3f} ({change:+.0%}{sig}) at quality {_q(pick['quality'])} vs "
                f"{_q(qb)} ({dq:+.0%}, within {tolerance:.0%})")
    if pick["copy_frac"] < cb:
        return (f"{where}: sigma_n = {pick['param']:g}{variant_label(pick)} copies {pick['copy_frac']:.3f} "
                f"vs the baseline's {cb:.3f}, a difference within sampling noise ({z:.1f} standard errors; "
                "add samples or seeds); Algorithm 1 did not measurably help here at this budget")
    return (f"{where}: no sigma_n within {tolerance:.0%} of the baseline's quality copies less "
            f"than the baseline ({cb:.3f}); Algorithm 1 did not help here at this budget")


def _q(v: float) -> str:
    return f"{v:.4g}"


def rule_of_thumb_text(choices: Sequence[dict[str, Any]]) -> str:
    """The rule of thumb and its outcome per subset, as printable lines."""
    if not choices:
        return ""
    tol = choices[0]["tolerance"]
    lines = [f"Rule of thumb: the sigma_n with the lowest copy fraction whose quality distance is within "
             f"{tol:.0%} of the baseline's:"]
    lines += [f"  {c['message']}" for c in choices]
    return "\n".join(lines)


def plot_pareto(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Quality distance against copy fraction, one point per run, one panel per training-set size.

    The Pareto-optimal runs are joined by a line, the baseline is a large black star, Algorithm 1's
    points carry their sigma_n, and a dotted line marks the held-out images' copy fraction (what a
    generator that never copies scores).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    rows = list(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subsets = sorted({r.get("subset") for r in rows}, key=lambda v: float("inf") if v is None else v) or [None]
    fig = Figure(figsize=(5.2 * len(subsets), 4.2), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(subsets), squeeze=False)[0])
    qname = next((r.get("quality_metric") for r in rows if r.get("quality_metric")), "quality distance")
    cname = next((r.get("copy_metric") for r in rows if r.get("copy_metric")), "")
    for ax, subset in zip(axes, subsets):
        group = [r for r in rows if r.get("subset") == subset]
        _plot_points(ax, group)
        _plot_fronts(ax, group)
        held = [r["heldout_copy_frac"] for r in group if _finite(r.get("heldout_copy_frac"))]
        if held:
            ax.axvline(float(np.mean(held)), ls=":", color="tab:purple", lw=1, label="held-out real images")
        xs = [float(r["copy_frac"]) for r in group if _finite(r.get("copy_frac"))] + held
        hi = max(xs, default=0.0)
        ax.set_xlim(-0.03 * max(hi, 0.05), min(1.02, max(hi, 0.05) * 1.12))
        ax.set_xlabel(f"copy fraction ({cname})" if cname else "copy fraction")
        ax.set_ylabel(f"{qname} (lower is better)")
        ax.set_title(f"{subset} training images" if subset is not None else "all training images", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_atomic(path, fig.savefig)
    return path


def _plot_points(ax: Any, group: list[dict[str, Any]]) -> None:
    """One marker per run (the baseline a large star), labelled with its sigma_n or variant."""
    seen = set()
    for r in group:
        if not (_finite(r.get("copy_frac")) and _finite(r.get("quality"))):
            continue
        m = r.get("method", "?")
        base = m == Baseline.name
        color, marker = _style(m)
        label = variant_label(r)
        ax.scatter(r["copy_frac"], r["quality"], marker=marker, color=color,
                   s=220 if base else 45, zorder=4 if base else 3, edgecolors="white" if base else None,
                   label=None if m in seen else title(m))
        seen.add(m)
        if param_column(m) == "sigma_n" and _finite(r.get("sigma_n")):
            note = f"{r['sigma_n']:g}" + label.replace(", compensated", "c").replace(", lr=", " lr ")
            ax.annotate(note, (r["copy_frac"], r["quality"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=color)
        elif label:
            ax.annotate(label.lstrip(", "), (r["copy_frac"], r["quality"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=color)


def _plot_fronts(ax: Any, group: list[dict[str, Any]]) -> None:
    """The Pareto front of each evaluation context (points measured differently are never joined)."""
    labelled = False
    for ctx in dict.fromkeys(context(r) for r in group):
        members = [r for r in group if context(r) == ctx]
        front = pareto_front(members)
        if front:
            fx = [members[i]["copy_frac"] for i in front]
            fy = [members[i]["quality"] for i in front]
            ax.plot(fx, fy, "-", color="gray", lw=1.2, zorder=2, label=None if labelled else "Pareto front")
            labelled = True
