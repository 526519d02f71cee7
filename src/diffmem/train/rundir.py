"""The layout of a run directory, and reading one back.

```
RUN/
  config.json              resolved TrainConfig (JSON), written once at the start
  subset.json              {"source", "n_source", "content_hash", "train_indices", "heldout_indices"}
  corruption.safetensors   the fixed noisy copies / masks of Algorithm 1 (drawn once)
  log.jsonl                one JSON object per logged step
  checkpoints/LATEST       name of the newest complete checkpoint folder
  checkpoints/step-00001000/{model.safetensors, ema.safetensors, state.pt, meta.json}
  done.json                written when training finished
  samples.npz, audit-*/, quality.json, result.json, monitor.png   written by evaluation (demo, sweep)
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from diffmem.errors import DiffmemError

CONFIG = "config.json"
SUBSET = "subset.json"
CORRUPTION = "corruption.safetensors"
LOG = "log.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
DONE = "done.json"
# What evaluation writes into a run (demo, sweep, monitor): stale once the run is retrained.
DERIVED_FILES = ("samples.npz", "samples.json", "quality.json", "result.json", "monitor.png")
DERIVED_GLOBS = ("audit-*",)


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a missing or broken file into a DiffmemError that names it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DiffmemError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise DiffmemError(f"{path} is not valid JSON ({err})") from None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Lines 'key: old -> new' for every (nested, dotted) key whose value differs."""
    keys = []
    for k in sorted(set(old) | set(new)):
        va, vb = old.get(k), new.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += config_diff(va, vb, prefix + k + ".")
        elif va != vb:
            keys.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return keys


def check_run_dir(run_dir: str | Path) -> Path:
    """Return the run directory as a Path, or raise if it is not a diffmem run."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise DiffmemError(f"{run} is not a diffmem run directory (no {CONFIG}); pass the --out of `diffmem train`")
    return run


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved training configuration of a run, as a dict."""
    return read_json(check_run_dir(run_dir) / CONFIG)


def run_datasets(run_dir: str | Path):
    """(train, heldout) ImageDatasets of a run: its training subset and the rest of its source data.

    The source is reloaded from the spec recorded in config.json and checked against the recorded
    content hash, so a changed data folder is reported instead of silently auditing other images.
    """
    from diffmem.data.datasets import load_images

    run = check_run_dir(run_dir)
    cfg = read_json(run / CONFIG)
    sub = read_json(run / SUBSET)
    data = cfg["data"]
    source = load_images(data["spec"], data.get("resolution"), resize=data.get("resize", False))
    if source.content_hash() != sub["content_hash"]:
        raise DiffmemError(
            f"the data at {data['spec']} changed since run {run} was trained (content hash differs); "
            "audit with --train/--heldout instead"
        )
    train = source.subset(np.asarray(sub["train_indices"], dtype=np.int64))
    heldout = source.subset(np.asarray(sub["heldout_indices"], dtype=np.int64))
    return train, heldout


def resume_or_refuse(out: Path, new: dict, overwrite: bool, resume: bool, *, kind: str = "run",
                     sample_cmd: str = "diffmem sample") -> bool:
    """Read-only decision on `--out` for training a configuration `new`: True to resume the run there;
    False for a new run (a missing or empty folder, or `overwrite` of an earlier run, which the caller
    clears). Refuses a file, a folder that is not a diffmem `kind`, another configuration and a finished
    run. Every process of a distributed job can call it and raise the same error."""
    if out.exists() and not out.is_dir():
        raise DiffmemError(f"--out {out} is a file, not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        if resume:
            raise DiffmemError(f"--resume: {out} holds no run to resume")
        return False
    if not (out / CONFIG).is_file():
        raise DiffmemError(f"--out {out} is a non-empty folder that is not a diffmem {kind}; choose another --out")
    if overwrite:
        return False
    old = read_json(out / CONFIG)
    if old != new:
        diff = "; ".join(config_diff(old, new)[:6])
        raise DiffmemError(f"{out} holds a {kind} with another configuration ({diff}); "
                           "use another --out, or --overwrite to replace it")
    if (out / DONE).is_file():
        raise DiffmemError(f"the {kind} in {out} already finished; sample it with `{sample_cmd} --run {out}`, "
                           "or pass --overwrite to train it again")
    return True
