"""Exponential moving average of the weights (EDM convention: half-life in images)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch: int, halflife_kimg: float, decay: float | None) -> float:
    """Per-step EMA decay: fixed `decay`, or 0.5 ** (batch / half-life in images)."""
    if decay is not None:
        return decay
    return 0.5 ** (batch / max(halflife_kimg * 1000, 1e-8))


class EMA:
    """A frozen copy of a module whose parameters track the live ones: p_ema <- p + beta (p_ema - p)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
