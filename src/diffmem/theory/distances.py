"""Exact Euclidean nearest neighbours (float64), used to measure where closed-form samples land."""

from __future__ import annotations

import torch

__all__ = ["median_nn_distance", "nearest"]

_BLOCK = 1 << 21


@torch.no_grad()
def nearest(
    x: torch.Tensor,  # [B, ...] queries
    points: torch.Tensor,  # [N, ...]
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to and index of the nearest point for every query: (float64 [B], int64 [B]).

    With `exclude_self`, `x` must be `points` itself and query i ignores point i (nearest *other* point).
    The argmin uses the float64 expansion |x|^2 - 2 x.p + |p|^2; the returned distance is recomputed exactly.
    """
    b, n = x.shape[0], points.shape[0]
    if n == 0 or (exclude_self and n < 2):
        raise ValueError("nearest needs at least one candidate point per query")
    if exclude_self and x.shape != points.shape:
        raise ValueError("exclude_self needs x to be the point set itself")
    q = x.reshape(b, -1).to(torch.float64)
    p_all = points.reshape(n, -1)
    chunk = max(1, _BLOCK // max(b, 1))
    best = torch.full((b,), torch.inf, dtype=torch.float64)
    idx = torch.zeros(b, dtype=torch.int64)
    qn = (q * q).sum(1, keepdim=True)
    for start in range(0, n, chunk):
        p = p_all[start : start + chunk].to(torch.float64)
        d2 = qn - 2.0 * q @ p.T + (p * p).sum(1)[None, :]  # [B, n_c]
        if exclude_self:
            rows = torch.arange(b)
            cols = rows - start
            ok = (cols >= 0) & (cols < p.shape[0])
            d2[rows[ok], cols[ok]] = torch.inf
        c_min, c_arg = d2.min(dim=1)
        better = c_min < best
        best = torch.where(better, c_min, best)
        idx = torch.where(better, c_arg + start, idx)
    dist = (q - p_all[idx].reshape(b, -1).to(torch.float64)).norm(dim=1)
    return dist, idx


def median_nn_distance(points: torch.Tensor) -> float:
    """Median over the set of each point's Euclidean distance to its nearest other point."""
    dist, _ = nearest(points, points, exclude_self=True)
    return float(dist.median())
