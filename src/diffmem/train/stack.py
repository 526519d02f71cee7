"""The training stack shared by the pixel loop (`train/loop.py`) and the latent one (`t2i/train.py`).

One EMA, one training state in every checkpoint (written by `train/checkpoint.py:save_checkpoint`), one
log record and one NaN guard. Both trainers keep their window of logged steps in one format: a row
per optimizer step and process, `[mean loss of the process's share, sum of the high-branch losses,
high-branch count, *extra sums]`; `reduce_window` sums the rows over processes (torch.distributed,
which accelerate drives underneath too) and turns the first column into the global mean, as every
process holds an equal share of the global batch. docs/architecture.md, "One training stack".
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from diffmem.errors import DiffmemError
from diffmem.train.checkpoint import STATE, latest_checkpoint, load_state, load_weights
from diffmem.train.rundir import CHECKPOINTS
from diffmem.utils.distributed import World

__all__ = ["EMA", "ema_beta", "ema_warmup_beta", "adam_update_rms", "training_state", "restore_training_state",
           "reduce_window", "nan_guard", "log_record", "world_of"]


# ------------------------------------------------------------------------------------------------
# the EMA and its two decay rules


def ema_beta(batch: int, halflife_kimg: float, decay: float | None) -> float:
    """Per-step EMA decay of a pixel run: fixed `decay`, or 0.5 ** (batch / half-life in images) (EDM's
    convention, Karras et al. 2022, a half-life in thousands of images)."""
    if decay is not None:
        return decay
    return 0.5 ** (batch / max(halflife_kimg * 1000, 1e-8))


def ema_warmup_beta(step: int, decay: float) -> float:
    """Per-step EMA decay of a t2i run after `step` steps: min(decay, (1 + step) / (10 + step)) (diffusers'
    EMAModel warm-up), so the early average is not dominated by the pretrained start."""
    return min(decay, (1 + step) / (10 + step))


def _named_parameters(source: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return dict(source.named_parameters()) if isinstance(source, nn.Module) else source


class EMA:
    """Exponential moving average of trained weights: p_ema <- p + beta (p_ema - p).

    Of a whole module (a frozen copy, `model`, that can be sampled; its buffers are copied), or of a dict
    of the trained parameters by name (float32 copies, `model` None: LoRA trains a subset of the UNet).
    """

    def __init__(self, source: nn.Module | Mapping[str, torch.Tensor]) -> None:
        self.model: nn.Module | None = None
        if isinstance(source, nn.Module):
            self.model = copy.deepcopy(source).eval().requires_grad_(False)
            self.shadow: dict[str, torch.Tensor] = dict(self.model.named_parameters())
        else:
            self.shadow = {k: v.detach().float().clone() for k, v in source.items()}

    @torch.no_grad()
    def update(self, source: nn.Module | Mapping[str, torch.Tensor], beta: float) -> None:
        """One step towards the live weights `source` (the module or dict the EMA was built from)."""
        for k, p in _named_parameters(source).items():
            ema = self.shadow[k]
            ema.lerp_(p.detach().to(ema.dtype), 1 - beta)
        if self.model is not None and isinstance(source, nn.Module):
            for b_ema, b in zip(self.model.buffers(), source.buffers()):
                b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What the checkpoint's EMA file holds: the module's state dict, or the averaged parameters."""
        return self.model.state_dict() if self.model is not None else self.shadow

    @torch.no_grad()
    def load_state_dict(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Take the averages of a checkpoint's EMA file (the names must be the same)."""
        if self.model is not None:
            self.model.load_state_dict(weights)
            return
        if set(weights) != set(self.shadow):
            raise DiffmemError(f"the checkpoint's EMA holds other parameters than the run trains "
                               f"(missing {sorted(set(self.shadow) - set(weights))[:3]}, "
                               f"unexpected {sorted(set(weights) - set(self.shadow))[:3]})")
        for k, v in weights.items():
            self.shadow[k].copy_(v)


@torch.no_grad()
def adam_update_rms(opt: torch.optim.Optimizer) -> float | None:
    """Root mean square over all parameters of Adam's last gradient step, lr m_hat / (sqrt(v_hat) + eps).

    The size of Adam's step sets a run's effective clock: rare, huge per-sample losses make the second
    moment large and every other step small (docs/results.md, "The loss weighting"). Read from the
    optimizer's state, so logging it costs no extra pass. (Kingma & Ba 2015, Alg. 1; AdamW's decoupled
    weight decay is left out: it does not depend on the loss.) None before the first step.
    """
    total, count = 0.0, 0
    for group in opt.param_groups:
        b1, b2 = group["betas"]
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "exp_avg" not in state or "exp_avg_sq" not in state:
                continue
            t = float(state["step"])
            m_hat = state["exp_avg"] / (1 - b1**t)
            v_hat = state["exp_avg_sq"] / (1 - b2**t)
            upd = group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])
            total += float((upd.double() ** 2).sum())
            count += upd.numel()
    return math.sqrt(total / count) if count else None


# ------------------------------------------------------------------------------------------------
# the training state of a checkpoint


def training_state(opt: torch.optim.Optimizer, g: torch.Generator, step: int, scaler: Any = None) -> dict[str, Any]:
    """The state.pt of a checkpoint: optimizer, the run's generator (every batch is drawn from it),
    torch's global RNG (dropout), the step, and the loss scaler of fp16 training (if any)."""
    state = {"optimizer": opt.state_dict(), "generator": g.get_state(), "torch_rng": torch.get_rng_state(),
             "step": torch.tensor(step)}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def restore_training_state(ckpt: Path, loaders: Mapping[str, Callable[[dict[str, torch.Tensor]], Any]],
                           opt: torch.optim.Optimizer, g: torch.Generator) -> tuple[int, dict[str, Any]]:
    """Resume from checkpoint folder `ckpt`: each weights file of `loaders` into its loader (the model, the
    EMA), then the optimizer, the run's generator and torch's RNG. Returns (step, the whole state)."""
    for file, load in loaders.items():
        load(load_weights(ckpt / file))
    state = load_state(ckpt / STATE)
    opt.load_state_dict(state["optimizer"])
    g.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), state


# ------------------------------------------------------------------------------------------------
# the log record and the NaN guard


def world_of(accelerator: Any) -> World:
    """The `World` of an accelerate Accelerator (its processes share torch.distributed's process group)."""
    return World(accelerator.process_index, accelerator.num_processes, accelerator.local_process_index)


def reduce_window(window: list[torch.Tensor], world: World) -> torch.Tensor:
    """The window's rows `[S, k]` (see the module docstring) summed over processes, column 0 the global
    mean loss of each step; every process gets the same figures, so all stop together on a NaN."""
    stats = torch.stack(window)
    if world.size > 1:
        dist.all_reduce(stats)
        stats[:, 0] /= world.size
    return stats


def nan_guard(losses: torch.Tensor, step: int, run_dir: Path) -> None:
    """Refuse a non-finite loss among the last `len(losses)` steps up to `step`, in one line naming the
    first bad step and the last good checkpoint (a bad step's checkpoint is never written)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if not len(bad):
        return
    i = int(bad[0])
    try:
        ckpt = latest_checkpoint(Path(run_dir))
    except DiffmemError:
        ckpt = None
    kept = f"the last good checkpoint is {ckpt}" if ckpt is not None else \
        f"no checkpoint was written before it (in {Path(run_dir) / CHECKPOINTS})"
    raise DiffmemError(f"the loss became {float(losses[i])} at step {step - len(losses) + i + 1}; {kept}. "
                       "Lower --lr or check the data")


def log_record(stats: torch.Tensor, step: int, run_dir: Path, batch: int, lr: float, seconds: float,
               steps_timed: int, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The log.jsonl record of a reduced window (`reduce_window`) ending at `step`, after the NaN guard:
    mean loss, its spread over steps, the high-branch (ambient) loss and share, lr, speed, Adam's step."""
    device = stats.device
    stats = stats.detach().cpu()
    nan_guard(stats[:, 0], step, run_dir)
    n_high, steps = float(stats[:, 2].sum()), len(stats)
    rec = {"step": step, "kimg": step * batch / 1000, "loss": float(stats[:, 0].mean()),
           "loss_high": float(stats[:, 1].sum() / n_high) if n_high else None,
           "frac_high": n_high / (steps * batch), "lr": lr,
           "images_per_s": steps_timed * batch / max(seconds, 1e-9),
           "loss_std": float(stats[:, 0].std()) if steps > 1 else None,
           "update_rms": adam_update_rms(opt), "time": time.time()}
    if device.type == "cuda":
        rec["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return rec
