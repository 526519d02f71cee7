"""Chunked nearest-neighbour search agrees with brute force; bad inputs give clear errors."""

from __future__ import annotations

import builtins

import pytest
import torch
import torch.nn.functional as F

from diffmem.errors import DiffmemError
from diffmem.evaluate.search import nearest_neighbours


def _brute(q: torch.Tensor, r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    sims = F.normalize(q, dim=1) @ F.normalize(r, dim=1).T
    return sims.topk(k, dim=1)


@pytest.mark.parametrize("k", [1, 3])
def test_matches_brute_force_across_chunks(k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    q, r = torch.randn(37, 8, generator=gen), torch.randn(53, 8, generator=gen)
    s, i = nearest_neighbours(q, r, k=k, chunk_size=10, ref_chunk_size=7)  # many partial blocks
    bs, bi = _brute(q, r, k)
    assert s.shape == (37, k) and i.shape == (37, k) and i.dtype == torch.int64
    torch.testing.assert_close(s, bs, atol=1e-5, rtol=0)
    assert torch.equal(i, bi)
    assert (s[:, :-1] >= s[:, 1:]).all()  # descending


def test_self_search_finds_itself() -> None:
    r = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    s, i = nearest_neighbours(r * 3.0, r, k=1, chunk_size=6, ref_chunk_size=4)  # scale does not matter
    assert torch.equal(i[:, 0], torch.arange(20))
    torch.testing.assert_close(s[:, 0], torch.ones(20))


def test_bad_inputs() -> None:
    q = torch.randn(3, 4)
    with pytest.raises(DiffmemError, match="empty"):
        nearest_neighbours(q, torch.empty(0, 4))
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(q, torch.randn(2, 4), k=3)
    with pytest.raises(ValueError):
        nearest_neighbours(q, torch.randn(2, 5))
    with pytest.raises(DiffmemError, match="backend"):
        nearest_neighbours(q, torch.randn(2, 4), backend="annoy")


def test_faiss_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(DiffmemError, match="pip install faiss-cpu"):
        nearest_neighbours(torch.randn(3, 4), torch.randn(5, 4), backend="faiss")
