"""Nearest neighbours by cosine similarity: chunked torch matmul with bounded memory, or FAISS.

Memory: one `[chunk_size, ref_chunk_size]` float32 block of similarities at a time (default
4096 x 16384 = 256 MiB) plus the normalized reference features; the search runs on the queries' device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffmem.errors import DiffmemError

__all__ = ["nearest_neighbours"]


def nearest_neighbours(
    queries: torch.Tensor,
    refs: torch.Tensor,
    k: int = 1,
    chunk_size: int = 4096,
    progress: bool = False,
    *,
    ref_chunk_size: int = 16384,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` most cosine-similar references of every query.

    queries `[N, D]`, refs `[M, D]` -> (similarities `[N, k]` float32, descending; indices `[N, k]` int64),
    both on the CPU. Ties keep the lower reference index. `backend="faiss"` uses an exact FAISS inner
    product index (worth it beyond about a million references; needs `pip install faiss-cpu`).
    """
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise ValueError(f"need queries [N, D] and refs [M, D], got {tuple(queries.shape)} and {tuple(refs.shape)}")
    n, m = queries.shape[0], refs.shape[0]
    if m == 0:
        raise DiffmemError("the reference set is empty: there is nothing to compare the images with")
    if not 1 <= k <= m:
        raise ValueError(f"k must be in 1..{m} (the number of references), got {k}")
    if backend == "faiss":
        return _faiss_search(queries, refs, k)
    if backend != "torch":
        raise DiffmemError(f"unknown nearest-neighbour backend '{backend}'; choose torch or faiss")

    device = queries.device
    q_all = F.normalize(queries.float(), dim=1)  # cosine similarity = dot product of unit vectors
    r_all = F.normalize(refs.float(), dim=1)
    out_s = torch.empty(n, k, dtype=torch.float32)
    out_i = torch.empty(n, k, dtype=torch.int64)
    cq, cr = max(1, int(chunk_size)), max(1, int(ref_chunk_size))
    buf = torch.empty(min(cq, n) * min(cr, m), dtype=torch.float32, device=device)  # reused block
    total = -(-n // cq) * -(-m // cr)
    with torch.no_grad(), tqdm(total=total, disable=not progress, desc="nearest neighbours", unit="block") as bar:
        for qs in range(0, n, cq):
            q = q_all[qs : qs + cq]
            best_s = torch.full((q.shape[0], k), -float("inf"), device=device)
            best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=device)
            for rs in range(0, m, cr):
                r = r_all[rs : rs + cr].to(device, non_blocking=True)
                sims = buf[: q.shape[0] * r.shape[0]].view(q.shape[0], r.shape[0])
                torch.mm(q, r.T, out=sims)  # [cq, cr]
                best_s, best_i = _merge(best_s, best_i, sims, rs, k)
                bar.update(1)
            out_s[qs : qs + cq] = best_s.clamp_(-1.0, 1.0).cpu()
            out_i[qs : qs + cq] = best_i.cpu()
    return out_s, out_i


def _merge(best_s: torch.Tensor, best_i: torch.Tensor, sims: torch.Tensor, offset: int,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block's top-k into the running top-k (earlier blocks win ties: lower index first)."""
    if k == 1:
        s, i = sims.max(dim=1, keepdim=True)
        better = s > best_s
        return torch.where(better, s, best_s), torch.where(better, i + offset, best_i)
    kk = min(k, sims.shape[1])
    s, i = sims.topk(kk, dim=1, sorted=True)
    cat_s = torch.cat([best_s, s], dim=1)
    cat_i = torch.cat([best_i, i + offset], dim=1)
    # stable sort on -similarity keeps the running (lower-index) entries ahead of equal new ones
    order = torch.sort(-cat_s, dim=1, stable=True).indices[:, :k]
    return cat_s.gather(1, order), cat_i.gather(1, order)


def _faiss_search(queries: torch.Tensor, refs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import faiss  # optional: only for very large reference sets
    except ImportError:
        raise DiffmemError(
            "the faiss nearest-neighbour backend needs the faiss package: pip install faiss-cpu "
            "(or faiss-gpu), or use the default torch backend"
        ) from None
    q = np.ascontiguousarray(F.normalize(queries.float(), dim=1).cpu().numpy())
    r = np.ascontiguousarray(F.normalize(refs.float(), dim=1).cpu().numpy())
    index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    s, i = index.search(q, k)
    return torch.from_numpy(s).clamp_(-1.0, 1.0), torch.from_numpy(i.astype(np.int64))
