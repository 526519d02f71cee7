"""The CLI under torchrun (gloo on CPU): `audit` ranks share embedding and search and report what one
process reports; two "nodes" on loopback train, sample and audit like one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import write_npz


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _launch(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    """`diffmem ARGS` in one process, or under `torchrun --standalone --nproc_per_node NPROC -m diffmem -- ARGS`
    (the `--` keeps torchrun's own parser off our options: it would read `--run` as its `--run-path`)."""
    launch = [sys.executable, "-m", "diffmem"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "diffmem", "--"]
    return subprocess.run(launch + args, capture_output=True, text=True, env=ENV, timeout=300)


def _two_nodes(args: list[str]) -> list[subprocess.CompletedProcess]:
    """`diffmem ARGS` as two single-process nodes on loopback (LOCAL_RANK is 0 on both; global ranks 0 and 1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # c10d rendezvous (torchrun's recommended multi-node setting); the static one left the host agent
    # waiting in its exit barrier for minutes now and then
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=diffmem-test-{port}",
         "--rdzv_conf=is_host=" + ("1" if r == 0 else "0"), "-m", "diffmem", "--", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for r in (0, 1)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _audit(tmp: Path, out: str, nproc: int, cache: list[str]) -> subprocess.CompletedProcess:
    return _launch(["audit", "--samples", str(tmp / "s.npz"), "--train", str(tmp / "t.npz"), "--heldout",
                    str(tmp / "h.npz"), "--features", "pixels", "--ratio-k", "3", "--out", str(tmp / out),
                    "--quiet", "--device", "cpu", *cache], nproc)


def test_two_ranks_audit_like_one(tmp_path: Path) -> None:
    write_npz(tmp_path / "s.npz", n=7, seed=1)  # 7 samples: ranks get 4 and 3
    write_npz(tmp_path / "t.npz", n=9, seed=2)
    write_npz(tmp_path / "h.npz", n=1, seed=3)  # one held-out image: rank 1 has no share of it
    one = _audit(tmp_path, "one", 1, ["--no-cache"])
    assert one.returncode == 0, one.stderr
    cache = ["--cache-dir", str(tmp_path / "cache")]
    cold = _audit(tmp_path, "cold", 2, cache)  # cache miss: embedded in shares, saved by rank 0
    assert cold.returncode == 0, cold.stderr
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2  # train + held-out
    warm = _audit(tmp_path, "warm", 2, cache)  # cache hit: rank 0 reads and shares
    assert warm.returncode == 0, warm.stderr
    assert one.stdout.count("wrote") == 1 and cold.stdout.count("wrote") == 1  # only rank 0 reports

    ref = json.loads((tmp_path / "one" / "report.json").read_text())
    ref_arrays = np.load(tmp_path / "one" / "nearest.npz")
    assert ref["n_samples"] == 7 and ref["heldout"]["n"] == 1
    for run in ("cold", "warm"):
        got = json.loads((tmp_path / run / "report.json").read_text())
        assert got["fraction_above"] == ref["fraction_above"]
        assert np.allclose(got["similarity"]["mean"], ref["similarity"]["mean"], atol=1e-6)
        assert np.allclose(got["calibrated_thresholds"]["heldout_p99"], ref["calibrated_thresholds"]["heldout_p99"])
        arrays = np.load(tmp_path / run / "nearest.npz")
        assert sorted(arrays.files) == sorted(ref_arrays.files)
        for key in ("nn_index", "heldout_nn_index"):
            assert np.array_equal(arrays[key], ref_arrays[key]), key
        for key in ("nn_similarity", "ratio", "heldout_nn_similarity"):
            assert np.allclose(arrays[key], ref_arrays[key], atol=1e-6), key
        assert (tmp_path / run / "neighbours.png").is_file()


def test_each_rank_embeds_and_searches_only_its_share(monkeypatch) -> None:
    """Rank 1 of 2 embeds images 4..6 of 7 and searches only those queries (gathering stubbed out)."""
    import torch

    import diffmem.evaluate.memorization as memo
    import diffmem.utils.distributed as distributed
    from diffmem.evaluate.features import PixelFeatures, embed_dataset
    from diffmem.utils.distributed import World

    seen: list[int] = []

    class Counting(PixelFeatures):
        def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return super().embed_batch(x)

    monkeypatch.setattr(distributed, "broadcast_object", lambda obj, world: obj)
    monkeypatch.setattr(distributed, "gather_in_order", lambda local, world: local)
    monkeypatch.setattr(memo, "gather_in_order", lambda local, world: local)
    images = np.random.default_rng(0).integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
    rank1 = World(1, 2, 1)
    share = embed_dataset(Counting(), images, None, world=rank1)
    assert seen == [3]
    full = embed_dataset(PixelFeatures(), images, None)
    assert torch.equal(share, full[4:])
    report, arrays = memo.memorization_analysis(full, full, None, ratio_k=2, world=rank1)
    assert arrays["nn_index"].tolist() == [4, 5, 6]  # its own queries only, each nearest to itself


def test_two_nodes_train_sample_and_audit_like_one_process(tmp_path: Path) -> None:
    """Global rank decides who writes (not LOCAL_RANK, which is 0 on every node), and results match."""
    write_npz(tmp_path / "d.npz", n=16, seed=4)
    run = tmp_path / "run"
    nodes = _two_nodes(["train", "--data", str(tmp_path / "d.npz"), "--subset", "12", "--channels", "8,16", "--layers-per-block", "1",
                        "--steps", "4", "--batch", "8", "--log-every", "1", "--checkpoint-every", "2",
                        "--out", str(run), "--device", "cpu", "--quiet"])
    assert all(p.returncode == 0 for p in nodes), [p.stderr[-2000:] for p in nodes]
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one writer: every step logged once
    sample = ["sample", "--run", str(run), "--n", "7", "--seed", "5", "--no-grid", "--device", "cpu", "--quiet"]
    nodes = _two_nodes(sample + ["--out", str(tmp_path / "two.npz")])
    assert all(p.returncode == 0 for p in nodes), [p.stderr[-2000:] for p in nodes]
    one = _launch(sample + ["--out", str(tmp_path / "one.npz")])
    assert one.returncode == 0, one.stderr
    assert np.array_equal(np.load(tmp_path / "two.npz")["images"], np.load(tmp_path / "one.npz")["images"])
    audit = ["audit", "--samples", str(tmp_path / "two.npz"), "--run", str(run), "--features", "pixels",
             "--ratio-k", "3", "--no-cache", "--quiet", "--device", "cpu"]
    nodes = _two_nodes(audit + ["--out", str(tmp_path / "audit2")])
    assert all(p.returncode == 0 for p in nodes), [p.stderr[-2000:] for p in nodes]
    assert sum("wrote" in p.stdout for p in nodes) == 1  # only global rank 0 reports (either node may get it)
    single = _launch(audit + ["--out", str(tmp_path / "audit1")])
    assert single.returncode == 0, single.stderr
    a, b = np.load(tmp_path / "audit1" / "nearest.npz"), np.load(tmp_path / "audit2" / "nearest.npz")
    assert np.array_equal(a["nn_index"], b["nn_index"]) and np.array_equal(a["heldout_nn_index"], b["heldout_nn_index"])
