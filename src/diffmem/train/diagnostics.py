"""Optimizer diagnostics logged beside the loss: how far Adam moved the weights on the last step.

The size of Adam's step is what sets a run's effective clock: a loss whose gradients are dominated by
rare, huge per-sample values makes Adam's second-moment estimate large and every other step small
(docs/results.md, "The loss weighting"). Read from the optimizer's own state, so logging it costs no
extra pass and changes nothing in training.
"""

from __future__ import annotations

import math

import torch

__all__ = ["adam_update_rms"]


@torch.no_grad()
def adam_update_rms(opt: torch.optim.Optimizer) -> float | None:
    """Root mean square over all parameters of Adam's last gradient step, lr m_hat / (sqrt(v_hat) + eps).

    (Kingma & Ba 2015, Alg. 1; AdamW's decoupled weight decay, lr * wd * theta, is left out: it does
    not depend on the loss.) None before the first step or for an optimizer without Adam's state.
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
