"""The demo's report: audit both models against their training digits and the held-out digits.

Memorization in two feature spaces that need no download: pixels (cosine of mean-centred pixels, i.e.
Pearson correlation) and digits-net (a small classifier's penultimate layer); quality as the Frechet
distance in digits-net space against the held-out digits (FD_digits-net, not FID). Writes report.md/.html
(headline, verdict, tables, one similarity chart per feature space, sample grids with copies framed) and
summary.json, whose "headline" block is what the README quotes (see `demo_headline`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffmem.diffusion.methods import METHOD_CLASSES, Ambient, Baseline
from diffmem.diffusion.weighting import DEFAULT_WEIGHT_CAP, make_weighting
from diffmem.utils.atomic import write_json_atomic

PIXEL_THRESHOLDS = (0.9, 0.95, 0.98, 0.99)  # 16x16 digits are close in pixel space: higher cut-offs
NET_THRESHOLDS = (0.85, 0.9, 0.95, 0.98)
SPACES = {"pixels": PIXEL_THRESHOLDS, "digits-net": NET_THRESHOLDS}
RUNS = (Baseline.name, Ambient.name)  # the demo's two runs, named by their methods
COPY_SPACE, QUALITY_SPACE = "pixels", "digits-net"  # which space answers which question (see FEATURE_ADVICE)


def _label(method: str) -> str:
    cls = METHOD_CLASSES.get(method)
    return cls.short if cls is not None else method


def _audit_method(run: Path, path: Path, space: str) -> tuple[Any, dict | None]:
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.audit import audit_to
    from diffmem.evaluate.features import embed_dataset, get_extractor
    from diffmem.evaluate.fid import quality_report
    from diffmem.train.rundir import run_datasets

    train, heldout = run_datasets(run)
    images = load_images(str(path))
    extractor = get_extractor(space, resolution=int(train.images.shape[1]))
    data = audit_to(run / f"audit-{space}", images, train, heldout, extractor, thresholds=SPACES[space])
    quality = None
    if space == QUALITY_SPACE:
        quality = quality_report(embed_dataset(extractor, images), embed_dataset(extractor, heldout),
                                 features=extractor.name)
    return data, quality


def demo_headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers and sentence the report opens with and the README quotes, from summary.json's entries."""
    from diffmem.report.findings import copy_numbers, headline

    base, alg = (summary[m][COPY_SPACE]["audit"] for m in RUNS)
    fd = {m: summary[m][QUALITY_SPACE]["quality"] for m in RUNS}
    cb, ca = copy_numbers(base), copy_numbers(alg)
    sentence, word = headline("Algorithm 1", ca, baseline=cb, unseen="unseen digits",
                              quality=(fd[Ambient.name]["fd_name"], fd[Ambient.name]["fd"], fd[Baseline.name]["fd"]))
    return {"sentence": sentence, "verdict": word, "copy_space": COPY_SPACE, "n_samples": ca.n,
            "copies": {"baseline": cb.frac, "algorithm1": ca.frac, "heldout": ca.heldout_frac},
            "quality": {"name": fd[Ambient.name]["fd_name"], "baseline": fd[Baseline.name]["fd"],
                        "algorithm1": fd[Ambient.name]["fd"]}}


def audit_demo(out: Path, samples: dict[str, Path], sigma_n: float | None = None,
               echo: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Audit each method's samples; write `out/report.md`, `out/report.html`, `out/summary.json`; return the reports."""
    out = Path(out)
    results: dict[str, dict[str, tuple[Any, dict | None]]] = {}
    for method, path in samples.items():
        results[method] = {space: _audit_method(path.parent, path, space) for space in SPACES}
    summary: dict[str, Any] = {m: {s: {"audit": d.report, "quality": q} for s, (d, q) in r.items()}
                               for m, r in results.items()}
    summary["headline"] = demo_headline(summary)
    write_json_atomic(out / "summary.json", summary, default=float)
    setting = ""
    if Ambient.name in samples:  # the run says which sigma_n and weighting it was trained with
        from diffmem.train.rundir import read_json

        m = read_json(samples[Ambient.name].parent / "config.json").get("method") or {}
        sigma_n = m.get("sigma_n") if sigma_n is None else sigma_n
        setting = make_weighting(m.get("ambient_weight", "plain"), m.get("weight_cap", DEFAULT_WEIGHT_CAP)).label()
        setting += " weighting"
    md, html = _write_report(out, results, summary["headline"], sigma_n, setting)
    echo(f"[demo] {summary['headline']['sentence']}")
    echo(f"[demo] report: {html} (and {md.name})")
    return md, html


def _write_report(out: Path, results: dict[str, dict[str, tuple[Any, dict | None]]], head: dict[str, Any],
                  sigma_n: float | None, setting: str = "") -> tuple[Path, Path]:
    from diffmem.report.audit import SUMMARY_COLUMNS, feature_advice, fixed_rows, summary_rows
    from diffmem.report.document import Document
    from diffmem.report.findings import COPY_DEFINITION, GLOSSARY

    doc = Document("diffmem demo: baseline vs Algorithm 1 on built-in digits", head["sentence"], head["verdict"])
    sn = f" (sigma_n = {sigma_n:g}{', ' + setting if setting else ''})" if sigma_n is not None else ""
    doc.para(f"Both models trained with the same data, budget and seed; Algorithm 1{sn} sees only noisy copies at high "
             f"noise. {COPY_DEFINITION} Copies are counted in pixels (Pearson correlation), quality in digits-net.")
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
        panels[f"{_label(method)}: first {shown} samples, {n_copies} copies framed red"] = (method, data.sample_images,
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
    the demo-headline markers; returns the sentence. `python -m diffmem.demo_report runs/demo/summary.json`."""
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


if __name__ == "__main__":  # python -m diffmem.demo_report runs/demo/summary.json
    import sys

    print(publish_summary(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/summary.json"))
