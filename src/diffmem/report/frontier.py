"""The frontier's table, plot and verdict: does a candidate copy less than every control at equal quality?

Paths are averaged over seeds checkpoint by checkpoint (mean, standard deviation, and the standard
error of the copy fraction: the larger of the binomial one and the seed-to-seed one).

Verdict of candidate A against control B, per subset (docs/method.md, "Deciding between methods by safe quality", the earlier rule). Copies are counted
as excess over the held-out rate (what unseen images score). Take every point of B's path where B's
excess is above 2 standard errors. At each, A must reach B's quality within `tolerance`
(FD_A <= (1 + tolerance) FD_B) somewhere on its path (checkpoints, or between two consecutive ones,
interpolated in log quality), and there its excess must be at most `factor` (1/3) of B's or within 2
standard errors of zero: then A "removes" copying relative to B. If A's excess is lower by 2 standard
errors at each such point it "reduces" copying; otherwise it "does not beat" B. A candidate passes when
it removes copying against every control.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from diffmem.utils.atomic import save_atomic, write_text_atomic

__all__ = ["aggregate", "compare_paths", "verdicts", "summary_rows", "markdown", "plot_frontier", "write_report"]


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One mean path per (subset, variant): per checkpoint step, mean/std over seeds of quality and copies."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["subset"], r["slug"]), []).append(r)
    out = []
    for (subset, slug), rs in groups.items():
        steps = sorted({p["step"] for r in rs for p in r["path"]})
        pts = []
        for st in steps:
            at = [p for r in rs for p in r["path"] if p["step"] == st
                  and p["quality"] is not None and p["copies"] is not None]
            if not at:
                continue
            q = np.array([p["quality"] for p in at], float)
            c = np.array([p["copies"] for p in at], float)
            n = sum(int(p["n"] or 0) for p in at)
            p_bar = float(c.mean())
            se_binom = math.sqrt(max(p_bar * (1 - p_bar), 1.0 / max(n, 1)) / max(n, 1))
            se_seed = float(c.std(ddof=1) / math.sqrt(len(c))) if len(c) > 1 else 0.0
            pts.append({"step": st, "epoch": at[0]["epoch"], "seeds": len(at), "quality": float(q.mean()),
                        "quality_std": float(q.std(ddof=1)) if len(q) > 1 else 0.0, "copies": p_bar,
                        "copies_std": float(c.std(ddof=1)) if len(c) > 1 else 0.0,
                        "copies_se": max(se_binom, se_seed),
                        "heldout": float(np.mean([p["heldout_copies"] or 0.0 for p in at]))})
        mech = {k: _mean([r.get(k) for r in rs]) for k in ("loss_std", "update_rms", "loss")}
        out.append({"subset": subset, "slug": slug, "variant": rs[0]["variant"], "role": rs[0]["role"],
                    "seeds": sorted({r["seed"] for r in rs}), "points": pts, **mech})
    return out


def _mean(vals: Sequence[Any]) -> float | None:
    v = [float(x) for x in vals if isinstance(x, (int, float))]
    return float(np.mean(v)) if v else None


def reachable(points: Sequence[dict[str, Any]], q_max: float) -> list[dict[str, Any]]:
    """The path's points with quality <= q_max, plus where its segments cross q_max.

    A path is a curve through its checkpoints: between two consecutive checkpoints, copies (and their
    standard errors) are interpolated linearly in log quality, so a candidate is not judged only at the
    checkpoints it happened to save.
    """
    out = [a for a in points if a["quality"] <= q_max]
    for a, b in zip(points, points[1:]):
        if (a["quality"] - q_max) * (b["quality"] - q_max) < 0:
            t = (math.log(a["quality"]) - math.log(q_max)) / (math.log(a["quality"]) - math.log(b["quality"]))
            mix = {k: a[k] + t * (b[k] - a[k]) for k in ("copies", "copies_se", "heldout")}
            out.append({**a, **mix, "quality": q_max, "step": f"{a['step']}-{b['step']}"})
    return out


def compare_paths(cand: dict[str, Any], ctrl: dict[str, Any], tolerance: float = 0.1,
                  factor: float = 1 / 3) -> dict[str, Any]:
    """Candidate against one control (see the module docstring); returns the verdict and the worst point.

    Copies are compared as excess over the held-out rate (unseen images score that much by construction).
    """
    worst: dict[str, Any] | None = None
    status = "removes"
    checked = 0
    for b in ctrl["points"]:
        e_b = b["copies"] - b["heldout"]
        if e_b <= 2 * b["copies_se"]:
            continue  # the control does not copy beyond unseen images here: nothing to remove
        checked += 1
        reach = reachable(cand["points"], (1 + tolerance) * b["quality"])
        if not reach:
            return {"verdict": "does not beat", "checked": checked, "at": b, "candidate": None,
                    "why": f"never reaches the control's quality {b['quality']:.3g} (step {b['step']}) within "
                           f"{tolerance:.0%}"}
        a = min(reach, key=lambda p: p["copies"] - p["heldout"])
        e_a = a["copies"] - a["heldout"]
        ratio = max(e_a, 0.0) / e_b
        if worst is None or ratio > worst["ratio"]:
            worst = {"ratio": ratio, "at": b, "candidate": a}
        if e_a > factor * e_b and e_a > 2 * a["copies_se"]:
            status = "reduces" if status == "removes" else status
            if e_b - e_a <= 2 * math.hypot(a["copies_se"], b["copies_se"]):
                status = "does not beat"
    if checked == 0:
        return {"verdict": "no copying to remove", "checked": 0, "at": None, "candidate": None,
                "why": "the control never copies more than held-out images"}
    assert worst is not None
    why = (f"worst at the control's step {worst['at']['step']} (quality {worst['at']['quality']:.3g}, copies "
           f"{worst['at']['copies']:.3f}): the candidate copies {worst['candidate']['copies']:.3f} at quality "
           f"{worst['candidate']['quality']:.3g} (step {worst['candidate']['step']}); excess-copy ratio "
           f"{worst['ratio']:.2f}")
    return {"verdict": status, "checked": checked, "at": worst["at"], "candidate": worst["candidate"],
            "ratio": worst["ratio"], "why": why}


def verdicts(paths: Sequence[dict[str, Any]], tolerance: float = 0.1) -> list[dict[str, Any]]:
    """Every candidate against every control of the same subset; `passes`: removes against all."""
    out = []
    for cand in [p for p in paths if p["role"] == "candidate"]:
        ctrls = [p for p in paths if p["role"] == "control" and p["subset"] == cand["subset"]]
        res = {c["variant"]: compare_paths(cand, c, tolerance) for c in ctrls}
        passes = bool(res) and all(r["verdict"] in ("removes", "no copying to remove") for r in res.values()) \
            and any(r["verdict"] == "removes" for r in res.values())
        out.append({"subset": cand["subset"], "candidate": cand["variant"], "against": res, "passes": passes})
    return out


def _pm(m: float | None, s: float | None, digits: int = 3) -> str:
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s else "")


def summary_rows(paths: Sequence[dict[str, Any]], tolerance: float = 0.1) -> tuple[float | None, list[dict[str, Any]]]:
    """One row per variant of one subset's paths: its last checkpoint, its best quality, and the fewest copies
    it has at a checkpoint whose quality is within `tolerance` of the first control's last (the reference:
    the baseline at full speed). Returns (that quality bound, rows); (None, []) without a control."""
    ref = next((p for p in paths if p["role"] == "control" and p["points"]), None)
    if ref is None:
        return None, []
    bound = (1 + tolerance) * ref["points"][-1]["quality"]
    rows = []
    for p in paths:
        if not p["points"]:
            continue
        near = [a for a in p["points"] if a["quality"] <= bound]
        rows.append({"variant": p["variant"], "seeds": len(p["seeds"]), "final": p["points"][-1],
                     "best": min(p["points"], key=lambda a: a["quality"]),
                     "least": min(near, key=lambda a: a["copies"]) if near else None})
    return bound, rows


def _summary_lines(paths: Sequence[dict[str, Any]], tolerance: float, q: str = "FD") -> list[str]:
    bound, rows = summary_rows(paths, tolerance)
    if bound is None:
        return []
    lines = [f"| variant | seeds | final {q} | final copies | best {q} (step) | copies there | fewest copies at {q} <= "
             f"{bound:.2f} ({1 + tolerance:g} x the reference's final) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f, b, m = r["final"], r["best"], r["least"]
        least = (f"{_pm(m['copies'], m['copies_std'])} ({q} {m['quality']:.2f}, step {m['step']})" if m
                 else "never reached")
        lines.append(f"| {r['variant']} | {r['seeds']} | {_pm(f['quality'], f['quality_std'], 2)} | "
                     f"{_pm(f['copies'], f['copies_std'])} | {b['quality']:.2f} ({b['step']}) | {b['copies']:.3f} | "
                     f"{least} |")
    return lines + [""]


def qstar_verdicts_of(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """diffmem.sweep.safe_quality.qstar_verdicts over the runs that have a q* (computed once per report,
    then passed to qstar_lines and plot_qstar)."""
    from diffmem.sweep.safe_quality import qstar_verdicts

    rows = [r for r in runs if r.get("qstar")]
    return qstar_verdicts(rows) if rows else []


def qstar_lines(runs: Sequence[dict[str, Any]], qstar_verdicts: Sequence[dict[str, Any]]) -> list[str]:
    """The verdict by safe quality (docs/method.md, "Deciding between methods by safe quality"): per
    candidate, the paired comparison of q* with the best control (`qstar_verdicts`, from
    qstar_verdicts_of(runs)), then q* per variant and seed."""
    rows = [r for r in runs if r.get("qstar")]
    if not rows:
        return []
    lines = ["## Verdict by safe quality (q*: the best quality of a safe check; lower is better)", ""]
    for v in qstar_verdicts:
        c = v["verdict"]
        if c.get("change") is None:
            lines.append(f"- **{v['subset']} images, {v['candidate']}: {c['verdict']}** against "
                         f"{v['best_control']} (seeds {c['seeds']})")
            continue
        lines.append(f"- **{v['subset']} images, {v['candidate']}: {c['verdict']}** against the best control, "
                     f"{v['best_control']}: q* {100 * c['change']:+.1f}% (90% interval {100 * c['change_low']:+.1f}% "
                     f"to {100 * c['change_high']:+.1f}%; {len(c['seeds'])} seeds, paired)")
        for name, r in v["against"].items():
            if name != v["best_control"] and r.get("change") is not None:
                lines.append(f"  - vs {name}: {r['verdict']}, q* {100 * r['change']:+.1f}% "
                             f"({100 * r['change_low']:+.1f}% to {100 * r['change_high']:+.1f}%)")
    seeds = sorted({r["seed"] for r in rows})
    lines += ["", "| subset | variant | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    for key in dict.fromkeys((r["subset"], r["variant"]) for r in rows):
        cells = []
        for s in seeds:
            r = next((r for r in rows if (r["subset"], r["variant"], r["seed"]) == (*key, s)), None)
            q = r["qstar"] if r else None
            cells.append("-" if not q or q["qstar"] is None else
                         f"{q['qstar']:.4g} (step {q['step']}{'' if q['safe_found'] else ', none safe'})")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return lines + ["", "Cells: q* and the step of the released check; 'none safe': no check passed the "
                        "safety test, so the run's worst checked quality stands in.", ""]


def markdown(paths: Sequence[dict[str, Any]], verdict_rows: Sequence[dict[str, Any]], title: str = "",
             tolerance: float = 0.1, runs: Sequence[dict[str, Any]] = (), quality: str = "FD",
             qstar_verdicts: Sequence[dict[str, Any]] | None = None) -> str:
    """The verdict by safe quality (with `runs`; `qstar_verdicts` from qstar_verdicts_of(runs), computed
    here when not given), the earlier path rule's verdict, then per subset a summary per variant, the path
    table and the mechanism table; `quality` names the quality metric (FD or KID)."""
    lines = [f"# {title or 'Frontier over training'}", ""]
    lines += qstar_lines(runs, qstar_verdicts_of(runs) if qstar_verdicts is None else qstar_verdicts)
    if verdict_rows:
        lines += ["## The earlier rule: excess copies at equal quality (reported for comparison)", ""]
    for v in verdict_rows:
        word = "PASSES" if v["passes"] else "does not pass"
        lines.append(f"- **{v['subset']} images, {v['candidate']}: {word}** (copies at most 1/3 of every "
                     "control's at equal quality within 10%).")
        for ctrl, r in v["against"].items():
            lines.append(f"  - vs {ctrl}: {r['verdict']}; {r['why']}")
    for subset in sorted({p["subset"] for p in paths}):
        lines += ["", f"## {subset} training images", ""]
        lines += _summary_lines([p for p in paths if p["subset"] == subset], tolerance, quality)
        lines += [f"| variant | step | epochs | seeds | quality ({quality}, lower is better) | copies | held-out |",
                  "|---|---|---|---|---|---|---|"]
        for p in [p for p in paths if p["subset"] == subset]:
            for a in p["points"]:
                lines.append(f"| {p['variant']} | {a['step']} | {a['epoch']:.0f} | {a['seeds']} | "
                             f"{_pm(a['quality'], a['quality_std'], 2)} | {_pm(a['copies'], a['copies_std'])} | "
                             f"{a['heldout']:.3f} |")
        lines += ["", "| variant | mean loss | spread of the batch loss (std over logged windows) | "
                      "Adam update RMS |", "|---|---|---|---|"]
        for p in [p for p in paths if p["subset"] == subset]:
            lines.append(f"| {p['variant']} | {_g(p['loss'])} | {_g(p['loss_std'])} | {_g(p['update_rms'])} |")
    lines += _cost_lines(runs)
    lines += ["", f"Quality: {QUALITY_WORDS.get(quality, quality)} of the samples to the held-out images (mean ± std over seeds). "
              "Copies: share of samples more similar to their nearest training image than 99% of held-out "
              "images are (mean ± std over seeds); held-out: the same share for held-out images."]
    return "\n".join(lines) + "\n"


def _cost_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    """What the runs cost, from their own logs (`seconds`: training plus checks of each, one process per run,
    pauses between sessions left out)."""
    timed = [r for r in runs if r.get("seconds")]
    if not timed:
        return []
    total = sum(r["seconds"] for r in timed)
    return ["", f"Run time (from the runs' logs, one process each): {len(timed)} runs, {total:,.0f} s "
                f"({total / 3600:.1f} process-hours; longest {max(r['seconds'] for r in timed):,.0f} s)."]


QUALITY_WORDS = {"FD": "Frechet distance", "KID": "the unbiased kernel distance (KID, in the quality features)"}


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def plot_frontier(paths: Sequence[dict[str, Any]], out: str | Path, quality: str = "FD") -> Path:
    """One panel per subset: each variant's mean path (quality on x, copies on y), seed std as error bars;
    hollow markers where only some of its seeds reached that checkpoint."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    subsets = sorted({p["subset"] for p in paths})
    fig = Figure(figsize=(6.2 * len(subsets), 4.6), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(subsets)))
    for ax, subset in zip(axes, subsets):
        ci = 0
        for p in [p for p in paths if p["subset"] == subset]:
            pts = p["points"]
            if not pts:
                continue
            ctrl = p["role"] == "control"
            color = f"{0.15 + 0.25 * ci}" if ctrl else f"C{ci}"
            ax.errorbar([a["quality"] for a in pts], [a["copies"] for a in pts],
                        xerr=[a["quality_std"] for a in pts], yerr=[a["copies_std"] for a in pts],
                        fmt="--o" if ctrl else "-o", ms=3, lw=1.2, capsize=2, color=color, label=p["variant"])
            # once the guard has stopped some seeds, the mean is over the seeds still training: hollow
            # markers say so, since such a mean can jump back and forth (its survivors differ)
            few = [a for a in pts if a["seeds"] < len(p["seeds"])]
            if few:
                ax.plot([a["quality"] for a in few], [a["copies"] for a in few], "o", ms=5, mfc="white",
                        color=color, zorder=3)
            ax.annotate("end", (pts[-1]["quality"], pts[-1]["copies"]), fontsize=6, color=color,
                        xytext=(3, 3), textcoords="offset points")
            ci += 1
        held = [a["heldout"] for p in paths if p["subset"] == subset for a in p["points"]]
        if held:
            ax.axhline(float(np.mean(held)), color="k", lw=0.8, ls=":", label="held-out images")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"quality: {quality} to held-out images (log scale; lower is better)")
        ax.set_ylabel("copies: share above held-out p99")
        ax.set_title(f"{subset} training images: paths over training (dashed: controls)\nhollow: the "
                     "mean of only the seeds not yet stopped", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_atomic(out, fig.savefig)


def plot_qstar(qstar_verdicts: Sequence[dict[str, Any]], out: str | Path) -> Path | None:
    """The q* verdicts (from qstar_verdicts_of) as a picture: per candidate and control, each seed's
    relative change of q* (dots; below 0: the candidate's safe quality is better) and the mean with its 90%
    interval (bar); None when no comparison has a q*."""
    from matplotlib.figure import Figure

    rows = [(v, name, r) for v in qstar_verdicts
            for name, r in sorted(v["against"].items(), key=lambda kv: kv[0] != v["best_control"])
            if r.get("change") is not None]
    if not rows:
        return None
    fig = Figure(figsize=(7.2, 0.9 + 0.42 * len(rows)), dpi=110)
    ax = fig.subplots()
    for y, (v, name, r) in enumerate(rows):
        best = name == v["best_control"]
        ax.scatter(100 * np.expm1(r["log_ratios"]), np.full(len(r["log_ratios"]), y), s=9, color="0.55", zorder=2)
        ax.errorbar(100 * r["change"], y, xerr=[[100 * (r["change"] - r["change_low"])],
                                                [100 * (r["change_high"] - r["change"])]],
                    fmt="D", ms=5, capsize=4, color="tab:red" if best else "tab:blue", zorder=3)
        ax.annotate(r["verdict"], (100 * r["change_high"], y), xytext=(6, -3), textcoords="offset points",
                    fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{v['candidate']}\nvs {name}{' (best control)' if name == v['best_control'] else ''}"
                                     for v, name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("q* of the candidate relative to the control, % (below 0: better safe quality)")
    ax.set_title("safe quality, paired by seed: dots are seeds, bars the 90% interval of the mean", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_atomic(out, fig.savefig)


def write_report(data: dict[str, Any], out: str | Path, tolerance: float = 0.1) -> dict[str, Path]:
    """frontier.md (verdict, tables) and frontier.png from run_frontier's data."""
    out = Path(out)
    paths = aggregate(data["runs"])
    rows = verdicts(paths, tolerance)
    md = out / "frontier.md"
    quality = str((data.get("config") or {}).get("quality_metric") or "fd").upper()  # "KID" or "FD"
    qv = qstar_verdicts_of(data["runs"])
    write_text_atomic(md, markdown(paths, rows, tolerance=tolerance, runs=data["runs"], quality=quality,
                                   qstar_verdicts=qv))
    files = {"markdown": md, "plot": plot_frontier(paths, out / "frontier.png", quality)}
    qplot = plot_qstar(qv, out / "qstar.png")
    return {**files, "qstar_plot": qplot} if qplot is not None else files
