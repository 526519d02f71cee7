"""The training loop shared by every method: data, fixed corruptions, steps, EMA, logs, checkpoints.

All per-step randomness (which images, flips, noise levels, noise) is drawn for the whole global
batch from one CPU generator that belongs to the run and is saved in every checkpoint, so a resumed
run continues the exact same sequence and the result does not depend on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffmem.config import TrainConfig, json_ready
from diffmem.data.datasets import ImageDataset, load_images, split_subset, to_model_range
from diffmem.diffusion.losses import Batch
from diffmem.diffusion.methods import Method, build_method
from diffmem.diffusion.precond import EDMPrecond
from diffmem.errors import DiffmemError, as_diffmem_error, os_error_message
from diffmem.lock import locked
from diffmem.models.denoiser import build_denoiser
from diffmem.models.unet import count_parameters
from diffmem.train import rundir
from diffmem.train.checkpoint import EMA_FILE, KEEP, MODEL, latest_checkpoint, save_checkpoint
from diffmem.train.checks import validate_config
from diffmem.train.stack import EMA, ema_beta, log_record, reduce_window, restore_training_state, training_state
from diffmem.train.watch import Watch
from diffmem.utils.atomic import save_atomic
from diffmem.utils.distributed import World, barrier, broadcast_object, check_batch, local_slice
from diffmem.utils.precision import autocast


@dataclass
class TrainData:
    x0: torch.Tensor  # [N, C, H, W] clean training images in [-1, 1]
    labels: torch.Tensor | None  # [N] int64
    fixed: dict[str, torch.Tensor]  # the method's fixed corruptions, one row per image (`Method.prepare`)


def prepare_run_dir(cfg: TrainConfig, out: Path, overwrite: bool, resume: bool) -> bool:
    """Decide between a new run, a resume and an extension, and set the folder up: returns True to resume
    from the run's last checkpoint. Refuses foreign or finished runs before anything is deleted; with
    `overwrite` (or a start killed before config.json) it clears the earlier run's own files. config.json
    is written first, so a run folder is resumable from its first byte."""
    new = json_ready(cfg.to_dict())
    plan = rundir.plan_run(out, new, overwrite, resume)
    if plan == rundir.EXTEND:
        rundir.record_extension(out, new)
        return True
    if plan == rundir.RESUME:
        return True
    if out.is_dir():
        rundir.clear_run(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise as_diffmem_error(err, out) from None
    rundir.write_json_atomic(out / rundir.CONFIG, new)
    return False


def select_train_images(cfg: TrainConfig) -> tuple[ImageDataset, np.ndarray, np.ndarray]:
    """Load the data and take the seeded subset: (source, train indices, held-out indices).

    Checks everything about the data a user can get wrong and writes nothing, so that bad input is
    refused before the run directory (perhaps an earlier run, perhaps with --overwrite) is touched.
    """
    d = cfg.data
    source = load_images(d.spec, d.resolution, resize=d.resize)
    train_idx, heldout_idx = split_subset(len(source), d.subset, d.subset_seed)
    if d.cond and source.labels is None:
        raise DiffmemError(f"--cond needs class labels, but {d.spec} has none (add dataset.json or npz 'labels')")
    h, w, _ = source.shape
    if h != w:
        raise DiffmemError(f"images are {h}x{w}; training needs square images (pass --resolution with --resize)")
    return source, train_idx, heldout_idx


def load_train_data(cfg: TrainConfig, out: Path, resuming: bool,
                    selected: tuple[ImageDataset, np.ndarray, np.ndarray] | None = None,
                    method: Method | None = None) -> TrainData:
    """Take the seeded subset, draw (or reload) the method's fixed corruptions, record all of it.

    `selected` is the result of `select_train_images(cfg)` when the caller already has it; `method` the run's
    method object (built from `cfg` when not given). A resumed run reloads corruption.safetensors (its keys
    are the method's: "y" the noisy copies, "mask" the masks), so its corruptions never change.
    """
    d = cfg.data
    source, train_idx, heldout_idx = selected if selected is not None else select_train_images(cfg)
    subset_info = {"source": d.spec, "n_source": len(source), "content_hash": source.content_hash(),
                   "train_indices": train_idx.tolist(), "heldout_indices": heldout_idx.tolist()}
    if resuming and (out / rundir.SUBSET).is_file():
        before = rundir.read_json(out / rundir.SUBSET)
        if before != subset_info:
            count = (f" ({before.get('n_source')} images when the run started, {len(source)} now)"
                     if before.get("n_source") != len(source) else " (same number of images, other pixels)")
            raise DiffmemError(f"the data at {d.spec} changed since {out} was started{count}; restore it, "
                               "or use --overwrite or another --out")
    else:
        rundir.write_json_atomic(out / rundir.SUBSET, subset_info)
    train = source.subset(train_idx)
    labels = None
    if d.cond:
        assert train.labels is not None  # checked by select_train_images
        labels = torch.from_numpy(train.labels.astype(np.int64))
    x0 = to_model_range(train.images)
    method = method if method is not None else build_method(cfg)
    path = out / rundir.CORRUPTION
    if resuming and path.is_file():
        fixed = load_file(str(path))
    else:
        fixed = method.prepare(x0, cfg.seed)  # Algorithm 1, line 1: drawn once per run
        if fixed:
            save_atomic(path, lambda tmp: save_file(fixed, str(tmp)), fixed=True)
    return TrainData(x0, labels, fixed)


def draw_batch(data: TrainData, cfg: TrainConfig, method: Method, g: torch.Generator, device: torch.device,
               part: slice = slice(None)) -> Batch:
    """One global batch, every random choice from the run's generator `g`, in this order: images, flips,
    noise-level quantiles, noise, then the method's own draws (`Method.draw`); `part` keeps this process's
    rows of it (all processes draw the same global batch, so the split never changes it)."""
    n = data.x0.shape[0]
    b = cfg.optim.batch
    idx = torch.randint(0, n, (b,), generator=g)[part]
    flip = (torch.rand(b, generator=g) < 0.5)[part] if cfg.data.xflip else None
    u = torch.rand(b, generator=g)[part]  # noise-level quantiles, turned into sigmas by the method
    noise = torch.randn((b, *data.x0.shape[1:]), generator=g)[part]
    drawn = {k: v[part] for k, v in method.draw(g, b, tuple(data.x0.shape[1:])).items()}

    def flipped(t: torch.Tensor) -> torch.Tensor:
        if flip is not None and t.ndim == 4:  # x-flip acts on the image and everything of the method alike
            t = torch.where(flip.reshape(-1, 1, 1, 1), t.flip(-1), t)
        return t.to(device)

    labels = data.labels[idx].to(device) if data.labels is not None else None
    return Batch(x0=flipped(data.x0[idx]), u=u.to(device), noise=noise.to(device), labels=labels,
                 fixed={k: flipped(v[idx]) for k, v in data.fixed.items()},
                 drawn={k: flipped(v) for k, v in drawn.items()})


def training_step(method: Method, net: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer, batch: Batch,
                  lr: float, beta: float, train_net: EDMPrecond | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """One optimizer step on one batch; returns [loss, summed high-branch loss, high-branch count] on device.

    `method` (the run's, `build_method`) gives the per-sample loss (Algorithm 1 for ambient).

    `train_net` (the same parameters behind a DDP and/or torch.compile wrapper) runs the forward pass.
    `precision="bf16"` runs the forward pass under bfloat16 autocast (weights and optimizer stay fp32).
    """
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast(batch.x0.device, precision):
        result = method(train_net if train_net is not None else net, batch)
    loss = result.loss.float().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ema.update(net, beta)
    return torch.stack([loss.detach(), (result.loss.detach() * result.high).sum(), result.high.sum().to(loss.dtype)])


def train(cfg: TrainConfig, out: str | Path, device: str | torch.device = "cpu", overwrite: bool = False,
          resume: bool = False, progress: bool = True, stop_after: int | None = None,
          monitor: Callable[[int, torch.nn.Module], dict] | None = None, monitor_every: int = 0,
          world: World = World(), precision: str = "fp32", compile: bool = False,
          channels_last: bool = False, keep_checkpoints: int = KEEP) -> Path:
    """Train (or resume) the run in `out` to cfg.optim.steps steps. `stop_after`: stop early (tests).

    `monitor(step, ema_model)`, if given, runs every `monitor_every` steps (and at the end); the dict
    it returns is written to log.jsonl as {"step": .., "monitor": {...}}. A guard (`diffmem.guard.Guard`,
    checking at every checkpoint) also keeps its best safe checkpoint and may stop training early
    (`diffmem.train.watch`); done.json then records why. `keep_checkpoints`: how many of the newest
    checkpoints stay on disk (0: all), besides the guard's.
    `world`: this process's place among torchrun's processes; the global batch is split among them,
    DDP averages their gradients, and rank 0 alone writes files.
    `precision` ("fp32" | "bf16" autocast), `compile` (torch.compile) and `channels_last` change speed,
    not the configuration: a run may resume under other settings.
    """
    method = validate_config(cfg)  # the run's method object, built once and passed down
    cfg = dataclasses.replace(cfg, method=method.config())  # its section with every setting, as config.json holds it
    out = Path(out)
    device = torch.device(device)
    check_batch(cfg.optim.batch, world)
    # Everything that can refuse bad input (data, subset, network shape) runs before `out` is touched.
    selected = select_train_images(cfg)
    h, _, c = selected[0].shape
    torch.manual_seed(cfg.seed)  # only dropout draws from global state; it is saved in checkpoints
    net = build_denoiser(cfg, h, c, method)
    start = _Start()
    held = contextlib.ExitStack()  # rank 0 holds the run's lock until training returns
    if world.main:  # rank 0 alone decides and writes; the others then read what it wrote
        try:
            held.enter_context(locked(out))
            start = _Start(resuming=prepare_run_dir(cfg, out, overwrite, resume))
            load_train_data(cfg, out, start.resuming, selected, method)
        except (DiffmemError, OSError) as err:  # every rank then raises the same one-line error
            held.close()
            message = str(err) if isinstance(err, DiffmemError) else os_error_message(err, out)
            if message is None:
                raise
            start = _Start(error=message)
    start = broadcast_object(start, world)
    if start.error is not None:
        raise DiffmemError(start.error)
    with held:
        try:
            run = _PixelRun(cfg, method, out, selected, device, world, Watch(monitor, monitor_every, cfg.optim.steps,
                       cfg.optim.batch), stop_after, progress, keep_checkpoints, precision, compile, channels_last)
            return _train_steps(run, net, start.resuming)
        except OSError as err:  # a full disk while logging: one line naming the run folder
            raise as_diffmem_error(err, out) from None


def _wrap_for_training(net: EDMPrecond, cfg: TrainConfig, device: torch.device, world: World, compile: bool,
                       channels_last: bool) -> tuple[EDMPrecond, EDMPrecond | None]:
    """(the model on `device`, and the same parameters behind DDP / torch.compile for the forward pass or None)."""
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    backbone: torch.nn.Module = net.backbone  # the forward pass may go through wrappers; weights stay in `net`
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        backbone = DistributedDataParallel(backbone, device_ids=ids)
    if compile:
        backbone = torch.compile(backbone)
    return net, (EDMPrecond(backbone, cfg.sigma_data) if backbone is not net.backbone else None)


def _restore(out: Path, resuming: bool, net: EDMPrecond, ema: EMA, opt: torch.optim.Optimizer,
             g: torch.Generator) -> int:
    """Load the newest checkpoint (weights, EMA, optimizer, both RNG streams) when resuming; returns its step."""
    ckpt = latest_checkpoint(out) if resuming else None
    if ckpt is None:
        return 0
    return restore_training_state(ckpt, {MODEL: net.load_state_dict, EMA_FILE: ema.load_state_dict}, opt, g)[0]


@dataclass(frozen=True)
class _Start:
    """Rank 0's answer to every rank: resume or start, or the one-line error all of them raise."""

    resuming: bool = False
    error: str | None = None


@dataclass(frozen=True)
class _PixelRun:
    """What the loop proper needs, once `train` has checked the input and set the run folder up."""

    cfg: TrainConfig
    method: Method
    out: Path
    selected: tuple[ImageDataset, np.ndarray, np.ndarray]
    device: torch.device
    world: World
    watch: Watch
    stop_after: int | None
    progress: bool
    keep: int  # newest checkpoints kept on disk (0: all), besides the guard's
    precision: str  # these three change speed, not the configuration
    compile: bool
    channels_last: bool


def _train_steps(run: _PixelRun, net: EDMPrecond, resuming: bool) -> Path:
    """The training loop proper, once the run folder is set up (and locked by rank 0)."""
    cfg, method, out, selected, device, world = run.cfg, run.method, run.out, run.selected, run.device, run.world
    watch, stop_after, progress, keep, precision = run.watch, run.stop_after, run.progress, run.keep, run.precision
    data = load_train_data(cfg, out, True, selected, method)  # rereads the fixed corruptions rank 0 saved
    net, train_net = _wrap_for_training(net, cfg, device, world, run.compile, run.channels_last)
    ema, opt, g, step, meta = _start(cfg, out, resuming, net, data, selected)
    o = cfg.optim
    beta = ema_beta(o.batch, o.ema_halflife_kimg, o.ema_decay)
    if world.main:
        rundir.trim_log(out / rundir.LOG, step)  # a resumed run redoes the steps after its checkpoint: log them once
    log = open(out / rundir.LOG, "a") if world.main else open(os.devnull, "w")
    part = local_slice(o.batch, world)
    assert part.stop - part.start == check_batch(o.batch, world)
    end = o.steps if stop_after is None else min(o.steps, stop_after)
    bar = tqdm(total=o.steps, initial=step, disable=not (progress and world.main), unit="step",
               desc=f"train {cfg.method.name}")
    window: list[torch.Tensor] = []
    t_last, step_last = time.perf_counter(), step
    stopped = None
    net.train()
    try:
        if world.main and watch.resume(out / rundir.LOG, step):  # the check a kill cut off after its checkpoint
            watch.check(step, ema.model, log)
            t_last = time.perf_counter()  # images/s counts training only
        stopped = _stop_reason(watch, step, world) if step > 0 else None
        while step < end and stopped is None:
            batch = draw_batch(data, cfg, method, g, device, part)
            lr = o.lr * min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else o.lr
            window.append(training_step(method, net, ema, opt, batch, lr, beta, train_net, precision))
            step += 1
            if step % cfg.log_every == 0 or step == end or step % cfg.checkpoint_every == 0:
                now = time.perf_counter()
                stats = reduce_window(window, world)  # the NaN guard: every rank stops at once, naming the step
                rec = log_record(stats, step, out, o.batch, lr, now - t_last, step - step_last, opt)
                if precision != "fp32":  # changes the numbers, so each record says how it was trained
                    rec["precision"] = precision
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['images_per_s']:.0f}")
                bar.update(step - bar.n)
                window.clear()
                t_last, step_last = now, step
            if world.main and (step % cfg.checkpoint_every == 0 or step == o.steps):
                save_checkpoint(out, step, {MODEL: net.state_dict(), EMA_FILE: ema.state_dict()},
                                training_state(opt, g, step), meta, keep, watch.keep_steps())
            if watch.due(step):
                if world.main:
                    watch.check(step, ema.model, log)
                    t_last = time.perf_counter()  # images/s counts training only
                stopped = _stop_reason(watch, step, world)
    finally:
        bar.close()
        log.close()
    barrier(world)
    if (step >= o.steps or stopped is not None) and world.main:
        watch.finish(stopped)
        rundir.write_json_atomic(out / rundir.DONE, {"step": step, "time": time.time(), "stopped": stopped})
    return out


def _start(cfg: TrainConfig, out: Path, resuming: bool, net: EDMPrecond, data: TrainData,
           selected: tuple[ImageDataset, np.ndarray, np.ndarray]):
    """The EMA, the optimizer, the run's generator and the step (restored from the newest checkpoint when
    resuming), and the meta every checkpoint records."""
    h, _, c = selected[0].shape
    ema = EMA(net)
    o = cfg.optim
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    step = _restore(out, resuming, net, ema, opt, g)
    meta = {"resolution": h, "channels": c, "n_train": int(data.x0.shape[0]),
            "parameters": count_parameters(net.backbone)}
    return ema, opt, g, step, meta


def _stop_reason(watch: Watch, step: int, world: World) -> str | None:
    """Rank 0's guard decides whether to stop at a check step; every rank gets the same answer."""
    if not watch.due(step):
        return None
    return broadcast_object(watch.stop_reason() if world.main else None, world)
