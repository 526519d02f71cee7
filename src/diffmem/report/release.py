"""A guarded run's release as a page to show: RUN/release/report.html and report.md.

`train --guard` and `diffmem release` write it at their end, from the certificate (RUN/release.json,
docs/method.md "The release and safe quality") and an audit of the released samples in the guard's copy
features (RUN/release/audit/). It states the release in one sentence, shows the run's checks over training
with the release starred, the released samples with copies framed red, the closest samples beside their
nearest training images, every check, and the settings and training the certificate holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["paths_figure", "release_document", "finish_release_document", "write_release_report", "RELEASE_REPORT"]

RELEASE_REPORT = "report"  # RUN/release/report.html, .md


def paths_figure(path: Path, release: dict[str, dict[str, Any]], heldout_word: str = "unseen images") -> Path:
    """Copies (top) and quality (bottom) at each run's checks against the step, one line per run (label ->
    its release record): safe checks filled, the release starred, the dashed line what held-out images score."""
    from matplotlib.figure import Figure

    from diffmem.utils.atomic import save_atomic

    fig = Figure(figsize=(4.8, 4.6), dpi=110)  # narrow enough to be shown at >= 0.7 of its size on a phone
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (label, rec) in enumerate(release.items()):
        checks, best, color = rec["checks"], rec.get("released"), f"C{i}"
        steps = [c["step"] for c in checks]
        top.plot(steps, [c["copy_rate"] for c in checks], "-", color=color, label=label)
        bottom.plot(steps, [c["quality"] for c in checks], "-", color=color)
        for ax, key in ((top, "copy_rate"), (bottom, "quality")):
            ax.scatter(steps, [c[key] for c in checks], s=18, color=color,
                       facecolors=[color if c["safe"] else "white" for c in checks], zorder=3)
            if best is not None:
                value = best["safety"]["copy_rate"] if key == "copy_rate" else best["quality"]
                ax.scatter([best["step"]], [value], marker="*", s=160, color=color, edgecolors="k", zorder=4)
        held = ((best or rec.get("last") or {}).get("safety") or {}).get("heldout_rate")
        if held is not None:
            top.axhline(held, color="k", ls="--", lw=0.8, label=heldout_word if i == 0 else None)
    metric = next((r["released"]["quality_metric"] for r in release.values() if r.get("released")), "quality")
    top.set_ylabel("copies (share of samples)")
    bottom.set_ylabel(f"{metric} (lower is better)")
    bottom.set_xlabel("training step")
    top.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_atomic(path, fig.savefig)


def _audit_released(run: Path, released: dict[str, Any], device: Any) -> Any:
    """An audit of the released samples against the run's training and held-out images, into release/audit/,
    with the guard's reference: its copy features and its seeded subset of the held-out images
    (`diffmem.monitor.CopyMonitor`, seed 0), so that the audit counts the copies the certificate counts."""
    from diffmem.data.datasets import load_images
    from diffmem.evaluate.audit import audit_to
    from diffmem.evaluate.features import get_extractor
    from diffmem.release import RELEASE_DIR
    from diffmem.report.audit import write_audit_report
    from diffmem.train.rundir import run_datasets

    train, heldout = run_datasets(run)
    images = load_images(str(run / RELEASE_DIR / "released.npz"))
    extractor = get_extractor(released.get("features") or "pixels", resolution=int(train.images.shape[1]),
                              device=device)
    return audit_to(run / RELEASE_DIR / "audit", images, train, heldout, extractor, report=write_audit_report,
                    device=device, max_heldout=released["safety"].get("n_heldout"), seed=0)


def _check_rows(record: dict[str, Any]) -> list[list[Any]]:
    released = (record.get("released") or {}).get("step")
    return [[c["step"], f"{100 * c['copy_rate']:.1f}%", f"{c['p_value']:.3g}", "yes" if c["safe"] else "no",
             "-" if c["quality"] is None else f"{c['quality']:.4g}", "released" if c["step"] == released else ""]
            for c in record["checks"]]


def release_document(run: Path, record: dict[str, Any], label: str, what: str) -> Any:
    """The page's head, shared by pixel and t2i releases: the release in one sentence, what the guard checked
    (`what`: the samples of each check, "400 samples each") and certifies, and the paths figure; returns the Document."""
    from diffmem.release import RELEASE_DIR, release_sentence
    from diffmem.report.document import Document
    from diffmem.report.findings import COPY_DEFINITION

    settings, released = record.get("settings") or {}, record.get("released")
    verdict = "none beyond unseen images" if released else "copies" if record["checks"] else None
    doc = Document(f"diffmem release: {run.name}", release_sentence(record, label), verdict)
    doc.para(f"{COPY_DEFINITION} The guard checked the run at its checkpoints ({what}: their copies, the "
             "safety test against what held-out images score, and their quality) and releases the safe check of "
             "best quality."
             + (" What it certifies: at these copy features and this threshold, the released samples were not "
                "shown to copy more than unseen images score; the excess is at most the upper end of the "
                "interval above. It does not certify other feature spaces, or samples drawn with other settings."
                if released else " No check was safe, so nothing is released: check earlier (a smaller "
                "--checkpoint-every), or train on more images." if record["checks"] else ""))
    doc.figure(paths_figure(run / RELEASE_DIR / "paths.png", {label: record}),
               "Copy fraction (top) and quality (bottom) at each check over training. Filled: safe checks; the "
               "star is the release; the dashed line is what unseen images score.")
    return doc


def finish_release_document(doc: Any, run: Path, record: dict[str, Any]) -> Path:
    """The page's tail, shared by pixel and t2i releases: every check, what the certificate records, the
    glossary; writes RUN/release/report.html and .md and returns the HTML's path."""
    from diffmem.release import RELEASE_DIR
    from diffmem.report.findings import GLOSSARY

    settings, released = record.get("settings") or {}, record.get("released")
    doc.heading("Every check")
    doc.table(["step", "copies", "p-value", "safe", (released or {}).get("quality_metric", "quality"), ""],
              _check_rows(record))
    doc.heading("What the certificate records")
    trained = record.get("trained") or {}
    doc.table(["setting", "value"], [[k, v] for k, v in settings.items()] +
              [["training precision", ", ".join(trained.get("precision") or ["-"])],
               ["diffmem", trained.get("diffmem", "-")], ["stopped", record.get("stopped") or "no"]])
    doc.heading("Glossary")
    doc.glossary(GLOSSARY)
    return doc.write(run / RELEASE_DIR, RELEASE_REPORT)[1]


def write_release_report(run: str | Path, device: Any = "cpu") -> Path:
    """Write RUN/release/report.html and .md from the run's certificate (and an audit of its released samples,
    when it released one); returns the HTML's path."""
    from diffmem.evaluate.audit import copy_threshold
    from diffmem.evaluate.pictures import marked_grid
    from diffmem.release import RELEASE_DIR, read_release
    from diffmem.train.rundir import CONFIG, read_json

    run = Path(run)
    record = read_release(run)
    label = ((read_json(run / CONFIG) if (run / CONFIG).is_file() else {}).get("method") or {}).get("name", run.name)
    out, released = run / RELEASE_DIR, record.get("released")
    doc = release_document(run, record, label, f"{(record.get('settings') or {}).get('n_samples')} samples each")
    if released is not None and (out / "released.npz").is_file():
        data = _audit_released(run, released, device)
        thr = copy_threshold(data.report)
        copies = None if thr is None else data.arrays["nn_similarity"] >= thr
        marked_grid(out / "released_grid.png", data.sample_images[:64], None if copies is None else copies[:64],
                    ncol=8)
        doc.figure(out / "released_grid.png", f"The first {min(64, len(data.sample_images))} released samples; "
                   "copies framed red (from the audit below).")
        doc.figure(out / "audit" / "neighbours.png", "The most similar released samples (left of each pair) "
                   "beside their nearest training images; every sample's nearest image is in audit/nearest.csv, "
                   "and audit/report.html is the full audit.")
    return finish_release_document(doc, run, record)
