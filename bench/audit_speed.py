"""Speed of the audit's nearest-neighbour search against a bare float32 matmul of the same size.

    python bench/audit_speed.py                       # 20,000 queries x 50,000 references, D = 1024
    python bench/audit_speed.py --queries 2000 --refs 5000 --repeats 1   # quick

Prints throughputs (GFLOP/s, counting 2*N*M*D) and ratios (target >= 70%). Two baselines: one bare
`torch.mm` writing the whole [N, M] similarity matrix (4 GB at the default size), and the same products
done block by block into one reused buffer (the search's own GEMM work, without its reduction). The
search keeps one block at a time and reduces it to the nearest neighbour. Best of `--repeats` runs,
interleaved, on one device.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffmem.evaluate.search import nearest_neighbours


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--refs", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--ref-chunk-size", type=int, default=16384)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(args.queries, args.dim, generator=gen).to(device)
    r = torch.randn(args.refs, args.dim, generator=gen).to(device)
    flops = 2.0 * args.queries * args.refs * args.dim
    print(f"device {device}, torch threads {torch.get_num_threads()}, N={args.queries} M={args.refs} D={args.dim}")

    qn, rn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(r, dim=1)
    torch.mm(qn[:256], rn[:256].T)  # warm-up (BLAS threads, allocator)
    cq, cr = min(args.chunk_size, args.queries), min(args.ref_chunk_size, args.refs)
    buf = torch.empty(cq * cr, device=device)
    bare, blocked, search = [], [], []
    for _ in range(args.repeats):
        _sync(device)
        t = time.perf_counter()
        full = torch.mm(qn, rn.T)  # [N, M]
        _sync(device)
        bare.append(time.perf_counter() - t)
        del full
        t = time.perf_counter()
        for qs in range(0, args.queries, cq):
            for rs in range(0, args.refs, cr):
                a, b = qn[qs : qs + cq], rn[rs : rs + cr]
                torch.mm(a, b.T, out=buf[: a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0]))
        _sync(device)
        blocked.append(time.perf_counter() - t)
        t = time.perf_counter()
        nearest_neighbours(q, r, k=1, chunk_size=args.chunk_size, ref_chunk_size=args.ref_chunk_size)
        _sync(device)
        search.append(time.perf_counter() - t)
    for label, runs in (("bare matmul, full [N, M]", bare), ("bare matmul, blocked", blocked),
                        ("nearest_neighbours k=1", search)):
        best = min(runs)
        print(f"{label:26s}: {best:8.2f} s  {flops / best / 1e9:7.1f} GFLOP/s   (runs: "
              + ", ".join(f"{x:.2f}" for x in runs) + ")")
    ts = min(search)
    print(f"search / bare full matmul throughput: {min(bare) / ts:.1%} (target >= 70%)")
    print(f"search / bare blocked matmul throughput: {min(blocked) / ts:.1%}")


if __name__ == "__main__":
    main()
