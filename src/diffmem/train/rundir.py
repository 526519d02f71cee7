"""The layout of a run directory, and reading one back.

```
RUN/
  config.json              resolved TrainConfig (JSON), written first; "extensions" records more steps asked later
  subset.json              {"source", "n_source", "content_hash", "train_indices", "heldout_indices"}
  corruption.safetensors   the fixed noisy copies / masks of Algorithm 1 (drawn once)
  log.jsonl                one JSON object per logged step
  checkpoints/LATEST       name of the newest complete checkpoint folder
  checkpoints/step-00001000/{model.safetensors, ema.safetensors, state.pt, meta.json}
  done.json                written when training finished
  samples.npz, audit-*/, quality.json, result.json, monitor.png   written by evaluation (demo, sweep)
.RUN.lock                  beside RUN: flock held by the process training it (diffmem.lock)
```
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffmem.config import EXTENSIONS, RELEASE_DIR, RELEASE_JSON, TrainConfig, json_ready
from diffmem.errors import DiffmemError
from diffmem.train.checks import validate_config
from diffmem.utils import atomic
from diffmem.utils.outdir import OWN, check_apart, check_out_folder

CONFIG = "config.json"
SUBSET = "subset.json"
CORRUPTION = "corruption.safetensors"
LOG = "log.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
DONE = "done.json"
# Inside checkpoints/step-XXXXXXXX/ (written by train/checkpoint.py): the files a resume reads back.
WEIGHT_FILES = ("model.safetensors", "ema.safetensors")
STATE_FILE = "state.pt"
STATE_KEYS = ("optimizer", "generator", "torch_rng", "step")
# What evaluation writes into a run (demo, sweep, monitor): stale once the run is retrained.
DERIVED_FILES = ("samples.npz", "samples.json", "quality.json", "result.json", "monitor.png")
DERIVED_GLOBS = ("audit-*",)
# Everything a run start writes before config.json existed (older versions wrote subset.json first):
# a folder holding only these is a start that was killed, and is started again.
OWN_FILES = (CONFIG, SUBSET, CORRUPTION, LOG, DONE, CHECKPOINTS)

NEW, RESUME, EXTEND = "new", "resume", "extend"


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a missing or broken file into a DiffmemError that names it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DiffmemError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise DiffmemError(f"{path} is not valid JSON ({err})") from None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file.
    A permission or disk-full error becomes a DiffmemError naming the file."""
    atomic.write_json_atomic(path, obj, fixed=True)  # NAME.tmp: a resumed run knows it as its own


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


def log_records(run_or_log: str | Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl (a run folder or the log itself), in order; [] when there is none.
    A line cut short by a crash, or being appended right now, is skipped: the log is read while it grows."""
    path = Path(run_or_log)
    path = path / LOG if path.is_dir() else path
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def trim_log(path: Path, step: int) -> None:
    """Keep only the records of log.jsonl up to `step` (and drop a line half written by a crash)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            kept.append(line + "\n")
    atomic.write_text_atomic(path, "".join(kept), fixed=True)


def check_run_dir(run_dir: str | Path) -> Path:
    """Return the run directory as a Path, or raise if it is not a diffmem run."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise DiffmemError(f"{run} is not a diffmem run directory (no {CONFIG}); pass the --out of `diffmem train`")
    return run


def load_train_config(run_dir: str | Path) -> TrainConfig:
    """The run's configuration as a TrainConfig, type- and range-checked; a hand-edited config.json with
    a bad value is refused naming the file and the key."""
    path = check_run_dir(run_dir) / CONFIG
    stored = read_json(path)
    try:
        cfg = TrainConfig.from_dict(stored)
        validate_config(cfg)
    except DiffmemError as err:
        if str(err).startswith(str(path)):
            raise
        keys = _faulty_keys(stored)
        where = f" (key {', '.join(keys)})" if keys and not any(k in str(err) for k in keys) else ""
        raise DiffmemError(f"{path}: {err}{where}; correct the value (or train the run again)") from None
    return cfg


def _faulty_keys(stored: Any) -> list[str]:
    """The dotted keys of a stored configuration whose value alone makes it fail its check: each leaf is
    put back to its default in turn, and the keys whose reset lets the check pass are the culprits (none
    for a configuration that passes)."""
    if not isinstance(stored, dict) or _passes(stored):
        return []
    default = json_ready(TrainConfig().to_dict())
    found = []
    for part, value in stored.items():
        if isinstance(value, dict) and isinstance(default.get(part), dict):
            keys: list[str | None] = [k for k in value if k in default[part]]
        else:
            keys = [None] if part in default else []
        for key in keys:
            trial = json.loads(json.dumps(stored))
            if key is None:
                trial[part] = default[part]
            else:
                trial[part][key] = default[part][key]
            if _passes(trial):
                found.append(part if key is None else f"{part}.{key}")
    return found


def _passes(stored: dict) -> bool:
    try:
        validate_config(TrainConfig.from_dict(stored))
    except (DiffmemError, TypeError, ValueError):
        return False
    return True


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


def _starts_new(out: Path, overwrite: bool, resume: bool, kind: str, partial_is_empty: bool = False) -> bool:
    """The part of the `--out` decision every trainer shares: True for a new run (absent or empty folder,
    with `partial_is_empty` also a start killed before config.json, or `overwrite` of an earlier run);
    False when `out` holds a run to compare with. Refuses a file and a folder that is not a diffmem `kind`."""
    state = check_out_folder(out, kind=f"diffmem {kind}", is_own=lambda p: (p / CONFIG).is_file() or (
        partial_is_empty and only_own_partial_files(p)))
    if state != OWN or not (out / CONFIG).is_file():  # absent, empty, or a start killed before config.json
        if resume:
            raise DiffmemError(f"--resume: {out} holds no run to resume")
        return True
    return overwrite


def stored_config(path: Path, config_class: Any = TrainConfig) -> Any:
    """A run's config.json as `config_class.to_dict` writes it today (TrainConfig or T2IConfig): a field an
    older diffmem did not write (e.g. weight_cap) takes its default, which by design reproduces the older
    behaviour, so a run an older diffmem started resumes; the record of extensions is left out. A file this
    version cannot read is returned as it is, to be compared (and refused) key by key."""
    stored = read_json(path)
    if not isinstance(stored, dict):
        return stored
    try:
        return json_ready(config_class.from_dict(stored).to_dict())
    except (DiffmemError, TypeError):
        return {k: v for k, v in stored.items() if k != EXTENSIONS}


def resume_or_refuse(out: Path, new: dict, overwrite: bool, resume: bool, *, kind: str = "run",
                     sample_cmd: str = "diffmem sample", config_class: Any = TrainConfig) -> bool:
    """Read-only decision on `--out` for training a configuration `new`: True to resume the run there;
    False for a new run (a missing or empty folder, or `overwrite` of an earlier run, which the caller
    clears). Refuses a file, a folder that is not a diffmem `kind`, another configuration and a finished
    run; the stored configuration is read as `config_class` (`stored_config`). Every process of a
    distributed job can call it and raise the same error."""
    if _starts_new(out, overwrite, resume, kind):
        return False
    old = stored_config(out / CONFIG, config_class)
    if old != new:
        raise _other_configuration(out, kind, config_diff(old, new))
    if (out / DONE).is_file():
        raise _finished(out, kind, sample_cmd)
    return True


def _other_configuration(out: Path, kind: str, diff: list[str]) -> DiffmemError:
    return DiffmemError(f"{out} holds a {kind} with another configuration ({'; '.join(diff[:6])}); "
                        "use another --out, or --overwrite to replace it")


def _finished(out: Path, kind: str, sample_cmd: str, extend: str = "") -> DiffmemError:
    return DiffmemError(f"the {kind} in {out} already finished; sample it with `{sample_cmd} --run {out}`, "
                        f"{extend}or pass --overwrite to train it again")


def only_own_partial_files(out: Path) -> bool:
    """Does `out` hold nothing but files a run start writes (and their .tmp), without config.json?"""
    own = set(OWN_FILES) | {name + ".tmp" for name in OWN_FILES}
    return not (out / CONFIG).exists() and all(p.name in own for p in out.iterdir())


def clear_run(out: Path) -> None:
    """Delete a run's own files (weights, logs, the evaluations of its weights, a guard's release); leave
    anything else."""
    for name in (*OWN_FILES, *DERIVED_FILES, RELEASE_JSON, RELEASE_DIR):
        for path in (out / name, out / (name + ".tmp")):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    clear_derived(out)


def clear_derived(out: Path) -> None:
    """Delete the evaluations of a run's weights (samples, audits, results): stale once it trains on."""
    for name in DERIVED_FILES:
        (out / name).unlink(missing_ok=True)
    for pattern in DERIVED_GLOBS:
        for path in out.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def plan_run(out: Path, new: dict, overwrite: bool, resume: bool) -> str:
    """Read-only decision on `--out` for training the configuration `new` (a JSON-ready dict): NEW (an
    absent or empty folder, a start killed before config.json, or `overwrite`), RESUME (the same
    configuration, unfinished) or EXTEND (the same configuration but for more optim.steps). Refuses an
    `--out` inside the data folder (or holding it), a file, a folder that is not a run, a stored
    configuration that fails its check, another configuration, fewer steps, a finished run, and a newest
    checkpoint that cannot be resumed from: all before anything is changed."""
    check_apart(out, {"--data": (new.get("data") or {}).get("spec")})
    if _starts_new(out, overwrite, resume, "run", partial_is_empty=True):
        return NEW
    load_train_config(out)  # a hand-edited config.json (e.g. optim.steps -5) is refused, naming the key
    old = stored_config(out / CONFIG)
    if old != new:
        diff = config_diff(old, new)
        steps_old, steps_new = (old.get("optim") or {}).get("steps"), (new.get("optim") or {}).get("steps")
        if len(diff) == 1 and diff[0].startswith("optim.steps:") and isinstance(steps_old, int):
            if steps_new > steps_old:
                check_checkpoint(out)
                return EXTEND
            raise DiffmemError(f"{out} holds a run of {steps_old} steps; it cannot be shortened to {steps_new}. "
                               f"Sample its last checkpoint, ask for more steps to extend it, or use --overwrite")
        raise _other_configuration(out, "run", diff)
    if (out / DONE).is_file():
        raise _finished(out, "run", "diffmem sample", extend="ask for more --steps (or --kimg) to extend it, ")
    check_checkpoint(out)
    return RESUME


def check_checkpoint(out: Path) -> None:
    """The newest checkpoint of the run in `out` can be resumed from: LATEST names a complete folder whose
    weights are safetensors files and whose training state loads with `weights_only` (tensors and plain
    containers, never code) and holds what a resume restores. One line otherwise; reads, writes nothing.
    Run before a resume or an extension changes the run, so that a bad file leaves the run as it was."""
    pointer = out / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return  # killed before its first checkpoint: the run starts from step 0
    ckpt = out / CHECKPOINTS / pointer.read_text().strip()
    if not (ckpt / "meta.json").is_file():
        raise DiffmemError(f"{pointer} names {ckpt.name}, which is incomplete; delete {pointer} to start over")
    from safetensors import safe_open

    for name in WEIGHT_FILES:
        try:
            with safe_open(str(ckpt / name), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise _bad_checkpoint(ckpt / name, f"it is not a readable safetensors file ({_first_line(err)})") from None
    state = _load_state_quietly(ckpt / STATE_FILE)
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise _bad_checkpoint(ckpt / STATE_FILE,
                              f"it is not a training state diffmem wrote (no {', '.join(missing)})")


def _load_state_quietly(path: Path) -> Any:
    """torch.load(weights_only=True) without torch's warnings; a file it refuses becomes one line."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _bad_checkpoint(path, "the file is missing") from None
    except Exception as err:  # UnpicklingError for anything beyond tensors and plain containers
        what = ("it holds pickled objects other than tensors, which could run code, so it was not loaded"
                if isinstance(err, pickle.UnpicklingError) else f"it cannot be read ({_first_line(err)})")
        raise _bad_checkpoint(path, what) from None


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n")[0].split())
    return f"{type(err).__name__}: {text[:160]}"


def _bad_checkpoint(path: Path, what: str) -> DiffmemError:
    return DiffmemError(f"cannot resume from {path}: {what}; the run was left unchanged. Restore the "
                        "checkpoint, or train again with --overwrite")


def record_extension(out: Path, new: dict) -> None:
    """Turn a run into one of more steps: done.json goes first (a kill then leaves an unfinished run of
    the old length, which the same command extends again), then config.json gets the new length and a
    record of the extension; the evaluations of the old weights are deleted."""
    old = read_json(out / CONFIG)
    history = list(old.get(EXTENSIONS, [])) + [{"from_steps": old["optim"]["steps"],
                                                "to_steps": new["optim"]["steps"], "time": time.time()}]
    (out / DONE).unlink(missing_ok=True)
    clear_derived(out)
    write_json_atomic(out / CONFIG, {**new, EXTENSIONS: history})
