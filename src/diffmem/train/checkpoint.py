"""Checkpoints: weights in safetensors, training state in a tensors-only file, written atomically.

A checkpoint is a folder `checkpoints/step-XXXXXXXX/` written under a temporary name and renamed
when complete (`diffmem.utils.atomic.atomic_dir`); `checkpoints/LATEST` (replaced atomically) names the newest. A crash at any moment
leaves the previous checkpoint intact. Loading never executes code: safetensors for weights and
`torch.load(weights_only=True)` for optimizer / RNG state. Pixel runs (`model.safetensors`, `ema.safetensors`)
and t2i runs (`unet.safetensors`, `ema.safetensors`) both write through `save_checkpoint`, with the state
of `diffmem.train.stack.training_state`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffmem.config import RELEASE_JSON, TrainConfig
from diffmem.diffusion.precond import EDMPrecond
from diffmem.errors import DiffmemError, as_diffmem_error
from diffmem.models.denoiser import build_denoiser
from diffmem.train.rundir import CHECKPOINTS, LATEST, load_train_config, read_json
from diffmem.utils.atomic import atomic_dir, write_text_atomic

MODEL = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE = "state.pt"
META = "meta.json"
KEEP = 2  # complete checkpoints kept on disk (besides those a guard protects); 0 keeps every one
CHECKPOINT_CHOICES = "release, latest or step-N"


def save_checkpoint(run_dir: Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict[str, Any], meta: dict[str, Any], keep: int = KEEP,
                    protect: frozenset[int] = frozenset()) -> Path:
    """The one checkpoint writer of pixel and t2i runs: write `checkpoints/step-XXXXXXXX/` (a safetensors
    file per `weights` entry, STATE, META) into `step-XXXXXXXX.tmp`, rename it into place, point LATEST at
    it and prune all but the newest `keep` (0: none pruned) and the steps in `protect` (a guard's release).

    A failed write (a full disk: one line naming the temporary) removes the temporary; an interrupt or
    a kill leaves it, and the next save (or a resumed run) clears it. The previous checkpoint stays intact."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp, tmp_error = root / (name + ".tmp"), lambda err: as_diffmem_error(err, root / (name + ".tmp"))
    with atomic_dir(root / name, tmp_name=tmp.name, fsync=True, clean_on=(Exception,), on_os_error=tmp_error):
        try:
            for file, tensors in weights.items():
                save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / file))
            torch.save(state, tmp / STATE)
            (tmp / META).write_text(json.dumps({"step": step, **meta}, indent=2) + "\n")
        except OSError as err:  # a full disk: one line naming the checkpoint; the previous one stays intact
            raise tmp_error(err) from None
    write_text_atomic(root / LATEST, name + "\n", fixed=True)
    prune_checkpoints(run_dir, keep, protect)
    return root / name


def prune_checkpoints(run_dir: Path, keep: int = KEEP, protect: frozenset[int] = frozenset()) -> None:
    """Remove all complete checkpoints but the newest `keep` (0: none removed) and the steps in `protect`."""
    root = Path(run_dir) / CHECKPOINTS
    complete = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    kept = {f"step-{s:08d}" for s in protect}
    for old in (complete[:-keep] if keep > 0 else []):
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of a run's complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    steps = []
    for p in root.glob("step-*"):
        if p.is_dir() and not p.name.endswith(".tmp") and (p / META).is_file():
            try:
                steps.append(int(p.name[len("step-"):]))
            except ValueError:
                continue
    return sorted(steps)


def resolve_checkpoint(run_dir: str | Path, which: str = "latest") -> Path:
    """The checkpoint folder `which` names: "latest", "release" (the step release.json certifies) or
    "step-N"; a name that is not there is refused, listing those that are."""
    run = Path(run_dir)
    which = str(which).strip()
    if which == "latest":
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise DiffmemError(f"run {run} has no checkpoint yet; train it first (diffmem train --out {run})")
        return ckpt
    steps = checkpoint_steps(run)
    have = ", ".join(f"step-{s}" for s in steps) or "none"
    if which == "release":
        path = run / RELEASE_JSON
        if not path.is_file():
            raise DiffmemError(f"run {run} has no release ({RELEASE_JSON}); train it with --guard or run "
                               f"`diffmem release --run {run}`, or pass --checkpoint latest")
        released = (read_json(path).get("released") or {})
        if "step" not in released:
            raise DiffmemError(f"run {run} has no safe checkpoint to release (see {path}); "
                               f"pass --checkpoint latest or step-N ({have})")
        step = int(released["step"])
    else:
        try:
            if not which.startswith("step-"):
                raise ValueError
            step = int(which[len("step-"):])
        except ValueError:
            raise DiffmemError(f"--checkpoint must be {CHECKPOINT_CHOICES}, got {which!r}") from None
    ckpt = run / CHECKPOINTS / f"step-{step:08d}"
    if step not in steps:
        raise DiffmemError(f"run {run} has no checkpoint at step {step}; it has {have} "
                           "(pass --checkpoint latest, release or one of those)")
    return ckpt


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    ckpt = root / pointer.read_text().strip()
    if not (ckpt / META).is_file():
        raise DiffmemError(f"{pointer} names {ckpt.name}, which is incomplete; delete {pointer} to start over")
    return ckpt


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file (no code execution possible)."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DiffmemError(f"{path} does not exist") from None
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise DiffmemError(f"{path} is not a readable safetensors file ({err})") from None


def load_state(path: Path) -> dict[str, Any]:
    """Training state, loaded with weights_only=True: a file holding pickled code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DiffmemError(f"{path} does not exist") from None
    except Exception as err:  # UnpicklingError for anything beyond tensors and plain containers
        raise DiffmemError(f"{path} could not be loaded safely ({type(err).__name__}: {err})") from None


def load_denoiser(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu",
                  checkpoint: str = "latest") -> tuple[EDMPrecond, TrainConfig, dict]:
    """The denoiser of one of a run's checkpoints (`checkpoint`: "latest", "release" or "step-N"; EMA
    weights by default), its config and meta (with the checkpoint's "step")."""
    run = Path(run_dir)
    cfg = load_train_config(run)
    ckpt = resolve_checkpoint(run, checkpoint)
    meta = read_json(ckpt / "meta.json")
    net = build_denoiser(cfg, meta["resolution"], meta["channels"])
    weights = load_weights(ckpt / (EMA_FILE if ema else MODEL))
    missing, unexpected = net.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise DiffmemError(f"{ckpt} does not match the run's network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net.to(device).eval(), cfg, meta
