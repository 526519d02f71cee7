"""The demo's report: both guarded runs' releases, and an audit of the released samples.

The headline states each run's release (diffmem.release: its best safe checkpoint and certificate) and
compares their safe quality. The released samples are then audited in two feature spaces that need no
download: pixels (cosine of mean-centred pixels, i.e. Pearson correlation) and digits-net (a small
classifier's penultimate layer); quality also as the Frechet distance in digits-net space against the
held-out digits (FD_digits-net, not FID). Writes report.md/.html (headline, the two paths with their
release points, tables, one similarity chart per feature space, the released samples with copies framed)
and summary.json, whose "headline" block is what the README quotes (see `demo_headline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffmem.diffusion.methods import Ambient, Baseline
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, make_weighting
from diffmem.method_looks import short
from diffmem.utils.atomic import write_json_atomic

PIXEL_THRESHOLDS = (0.9, 0.95, 0.98, 0.99)  # 16x16 digits are close in pixel space: higher cut-offs
NET_THRESHOLDS = (0.85, 0.9, 0.95, 0.98)
SPACES = {"pixels": PIXEL_THRESHOLDS, "digits-net": NET_THRESHOLDS}
RUNS = (Baseline.name, Ambient.name)  # the demo's two runs, named by their methods
COPY_SPACE, QUALITY_SPACE = "pixels", "digits-net"  # which space answers which question (see FEATURE_ADVICE)


def _label(method: str) -> str:
    return short(method)


def _audit_method(run: Path, path: Path, space: str) -> tuple[Any, dict | None]:
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.audit import audit_to
    from diffmem.evaluate.features import embed_dataset, get_extractor
    from diffmem.evaluate.fid import quality_report
    from diffmem.report.audit import write_audit_report
    from diffmem.train.rundir import run_datasets

    train, heldout = run_datasets(run)
    images = load_images(str(path))
    extractor = get_extractor(space, resolution=int(train.images.shape[1]))
    data = audit_to(run / f"audit-{space}", images, train, heldout, extractor, thresholds=SPACES[space],
                    report=write_audit_report)
    quality = None
    if space == QUALITY_SPACE:
        quality = quality_report(embed_dataset(extractor, images), embed_dataset(extractor, heldout),
                                 features=extractor.name)
    return data, quality


def demo_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The sentences the report opens with and the README quotes, from summary.json's release records: each
    run's release, then their safe quality side by side (one seed: a comparison, not a verdict)."""
    from diffmem.release import release_sentence

    rel = summary["release"]
    parts = [release_sentence(rel[Baseline.name], "the baseline", unseen="unseen digits"),
             release_sentence(rel[Ambient.name], "Algorithm 1", unseen="unseen digits")]
    q = {m: (rel[m].get("released") or {}).get("quality") for m in RUNS}
    metric = next((r["released"]["quality_metric"] for r in rel.values() if r.get("released")), None)
    if all(v is not None for v in q.values()):
        better = "better" if q[Ambient.name] < q[Baseline.name] else "no better"
        parts.append(f"Safe quality ({metric}, lower is better): Algorithm 1 {q[Ambient.name]:.3g} against the "
                     f"baseline's {q[Baseline.name]:.3g}, {better} on this one seed; docs/results.md compares the "
                     "methods over seeds.")
    released = all(rel[m].get("released") for m in RUNS)
    return {"sentence": " ".join(parts), "verdict": "released" if released else "not released",
            "copy_space": COPY_SPACE, "safe_quality": {"metric": metric, "baseline": q[Baseline.name],
                                                       "algorithm1": q[Ambient.name]},
            "released_step": {m: (rel[m].get("released") or {}).get("step") for m in RUNS},
            "last_step": {m: (rel[m].get("last") or {}).get("step") for m in RUNS}}


def audit_demo(out: Path, samples: dict[str, Path], sigma_n: float | None = None,
               echo: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Audit each method's samples; write `out/report.md`, `out/report.html`, `out/summary.json`; return the reports."""
    out = Path(out)
    results: dict[str, dict[str, tuple[Any, dict | None]]] = {}
    for method, path in samples.items():
        results[method] = {space: _audit_method(path.parent.parent, path, space) for space in SPACES}
    from diffmem.release import read_release

    summary: dict[str, Any] = {m: {s: {"audit": d.report, "quality": q} for s, (d, q) in r.items()}
                               for m, r in results.items()}
    summary["release"] = {m: {k: v for k, v in read_release(p.parent.parent).items() if k != "time"}
                          for m, p in samples.items()}
    summary["headline"] = demo_headline(summary)
    write_json_atomic(out / "summary.json", summary, default=float)
    setting = ""
    if Ambient.name in samples:  # the run says which sigma_n and weighting it was trained with
        from diffmem.train.rundir import read_json

        m = read_json(samples[Ambient.name].parent.parent / "config.json").get("method") or {}
        sigma_n = m.get("sigma_n") if sigma_n is None else sigma_n
        setting = make_weighting(m.get("ambient_weight", "plain"), m.get("weight_cap", DEFAULT_WEIGHT_CAP)).label()
        setting += " weighting"
    _framed_side_by_side(out, results)
    md, html = _write_report(out, results, summary["headline"], sigma_n, setting, summary["release"])
    echo(f"[demo] {summary['headline']['sentence']}")
    echo(f"[demo] report: {html} (and {md.name})")
    return md, html


def _framed_side_by_side(out: Path, results: dict[str, dict[str, tuple[Any, dict | None]]]) -> Path:
    """side_by_side.png again, now with the audited copies (pixels) framed red."""
    from diffmem.demo import side_by_side
    from diffmem.evaluate.audit import copy_threshold

    first = next(iter(results.values()))[COPY_SPACE][0]
    panels: dict[str, np.ndarray] = {"training digits": first.train_images}
    frames: dict[str, np.ndarray | None] = {"training digits": None}
    for method, r in results.items():
        data = r[COPY_SPACE][0]
        thr = copy_threshold(data.report)
        label = f"{_label(method)}, released"
        panels[label] = data.sample_images
        frames[label] = None if thr is None else data.arrays["nn_similarity"] >= thr
    return side_by_side(panels, out / "side_by_side.png", is_copy=frames)


def _write_report(out: Path, results: dict[str, dict[str, tuple[Any, dict | None]]], head: dict[str, Any],
                  sigma_n: float | None, setting: str = "",
                  release: dict[str, dict[str, Any]] | None = None) -> tuple[Path, Path]:
    from diffmem.report.audit import SUMMARY_COLUMNS, feature_advice, fixed_rows, summary_rows
    from diffmem.report.document import Document
    from diffmem.report.findings import COPY_DEFINITION, GLOSSARY
    from diffmem.report.release import paths_figure

    doc = Document("diffmem demo: baseline vs Algorithm 1 on built-in digits", head["sentence"], head["verdict"])
    sn = f" (sigma_n = {sigma_n:g}{', ' + setting if setting else ''})" if sigma_n is not None else ""
    doc.para(f"Both models trained with the same data, budget and seed, each with the guard; Algorithm 1{sn} sees "
             f"only noisy copies at high noise. {COPY_DEFINITION} At its checkpoints each run was checked (copies "
             "against the held-out digits, safety test, quality); its best safe checkpoint is released, and "
             "training stopped once copying had set in. Below: the released samples, audited.")
    doc.figure(paths_figure(out / "paths.png", {_label(m): r for m, r in release.items()}, "unseen digits"),
               "Copy fraction and quality at each run's checks over training: copies "
               "(top; the dashed line is what unseen digits score) and quality (bottom; lower is better). Filled: "
               "safe checks; the star is the release.")
    pics, grids = _pictures(out, results)
    doc.figure_row([(p, c) for c, p in grids.items()])
    for space in SPACES:
        doc.heading(f"{space}" + (" (Pearson correlation of pixels)" if space == "pixels" else ""))
        rows: list[list[Any]] = []
        for method, per_space in results.items():
            data, quality = per_space[space]
            rows += summary_rows(_label(method), data.report, quality["fd"] if quality else None)[:1]
        rows += summary_rows("held-out", next(iter(results.values()))[space][0].report)[1:]
        qcol = [next(iter(results.values()))[space][1]["fd_name"]] if space == QUALITY_SPACE else []
        doc.table(SUMMARY_COLUMNS + qcol, [r + (["-"] if qcol and len(r) < len(SUMMARY_COLUMNS) + 1 else [])
                                           for r in rows])
        doc.figure(pics[space], f"Similarity to the nearest training digit ({space}): each model and the unseen "
                                "digits, with the copy threshold.")
    doc.heading("The closest samples, with the training digits they are nearest to (pixels)")
    for method, per_space in results.items():
        doc.figure(out / method / f"audit-{COPY_SPACE}" / "neighbours.png",
                   f"{_label(method)}: most similar samples (left) and their nearest training digits (right); "
                   "every sample's nearest training digit is in "
                   f"{method}/audit-{COPY_SPACE}/nearest.csv.")
    doc.heading("Fixed thresholds")
    for space in SPACES:
        cols, fixed = [], []
        for method, per_space in results.items():
            cols, rows = fixed_rows(_label(method), per_space[space][0].report)
            fixed += rows[:1]
        fixed += fixed_rows("x", next(iter(results.values()))[space][0].report)[1][1:]
        doc.table([f"{space}: images"] + cols[1:], fixed)
    doc.heading("Which feature space to trust")
    doc.bullets([feature_advice(s) for s in SPACES])
    doc.heading("Glossary")
    doc.glossary(GLOSSARY)
    doc.warnings([f"{_label(m)}, {s}: {w}" for m, r in results.items() for s, (d, _) in r.items()
                  for w in d.report.get("warnings") or []])
    return doc.write(out)


def _pictures(out: Path, results: dict[str, dict[str, tuple[Any, dict | None]]]
              ) -> tuple[dict[str, Path], dict[str, Path]]:
    """(similarity chart per feature space, marked sample grid per caption)."""
    from diffmem.evaluate.audit import copy_threshold
    from diffmem.evaluate.pictures import similarity_chart

    pics: dict[str, Path] = {}
    first = next(iter(results.values()))
    for space in SPACES:
        series = {_label(m): r[space][0].arrays["nn_similarity"] for m, r in results.items()}
        series["held-out real images"] = first[space][0].arrays.get("heldout_nn_similarity")
        cal = first[space][0].report.get("calibrated_thresholds") or {}
        pics[space] = similarity_chart(out / f"similarity-{space}.png", series, cal, features=space)
    panels = {"Training digits": ("training", first[COPY_SPACE][0].train_images, None)}
    for method, r in results.items():
        data = r[COPY_SPACE][0]
        thr = copy_threshold(data.report)
        copies = None if thr is None else data.arrays["nn_similarity"] >= thr
        shown = len(data.sample_images[:48])
        n_copies = int(copies[:48].sum()) if copies is not None else 0
        panels[f"{_label(method)}, released: first {shown} samples, {n_copies} copies framed red"] = (method, data.sample_images,
                                                                                          copies)
    return pics, _panels(out, panels)


def _panels(out: Path, panels: dict[str, tuple[str, np.ndarray, np.ndarray | None]], n: int = 48) -> dict[str, Path]:
    """One marked grid per panel (caption -> PNG), so that a browser lays them side by side or stacks them."""
    from diffmem.evaluate.pictures import marked_grid

    pics = {}
    for caption, (name, imgs, is_copy) in panels.items():
        path = out / f"grid-{name}.png"
        marked_grid(path, imgs[:n], None if is_copy is None else is_copy[:n], ncol=8, size=28)
        pics[caption] = path
    return pics


README_START, README_END = "<!-- demo-headline -->", "<!-- /demo-headline -->"
COMMITTED_SUMMARY = Path("docs/figures/demo_summary.json")


def _without_sources(obj: Any) -> Any:
    """summary.json without the `sources` entries (they name paths on the machine that ran the demo)."""
    if isinstance(obj, dict):
        return {k: _without_sources(v) for k, v in obj.items() if k != "sources"}
    return obj


def publish_summary(summary_path: str | Path, root: str | Path = ".") -> str:
    """Copy a demo's summary.json to docs/figures/demo_summary.json and put its headline into README.md between
    the demo-headline markers; returns the sentence. `python -m diffmem.report.demo runs/demo/summary.json`."""
    from diffmem.errors import DiffmemError

    root = Path(root)
    summary = _without_sources(json.loads(Path(summary_path).read_text()))
    summary["headline"] = demo_headline(summary)
    readme = (root / "README.md").read_text()
    if README_START not in readme or README_END not in readme:
        raise DiffmemError(f"README.md has no {README_START} ... {README_END} markers around the demo's finding")
    before, rest = readme.split(README_START, 1)
    sentence = summary["headline"]["sentence"]
    (root / "README.md").write_text(before + README_START + sentence + README_END + rest.split(README_END, 1)[1])
    (root / COMMITTED_SUMMARY).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return sentence


if __name__ == "__main__":  # python -m diffmem.report.demo runs/demo/summary.json
    import sys

    print(publish_summary(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/summary.json"))
