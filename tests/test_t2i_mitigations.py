"""S23 caption / embedding corruptions and W24's score, filter and prompt optimisation do what they say."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from diffmem.errors import DiffmemError
from diffmem.t2i.mitigations import (S23Config, insert_word, parse_mitigation, s23_caption, s23_captions,
                                     s23_embedding_noise, w24_keep, w24_kept_mean, w24_optimize_prompt, w24_score)

try:
    from t2i_fixtures import captioned, tiny_sd, tiny_tokenizer  # noqa: F401 (pytest fixtures)
except ImportError:  # tests/ collected as a package
    from tests.t2i_fixtures import captioned, tiny_sd, tiny_tokenizer  # noqa: F401

CAPTION = "a photo of the red cat"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def test_parse_mitigation() -> None:
    assert parse_mitigation("s23-add-words") == "add-words"
    assert parse_mitigation("none") is None and parse_mitigation("w24") is None
    with pytest.raises(DiffmemError, match="--mitigation"):
        parse_mitigation("s23-shuffle")


class DecodeSpy:
    """A tokenizer that records what `decode` is called with."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.calls = tokenizer, []
        self.all_special_ids = tokenizer.all_special_ids

    def __len__(self) -> int:
        return len(self.tokenizer)

    def decode(self, ids: list[int]) -> str:
        self.calls.append(list(ids))
        return self.tokenizer.decode(ids)


def test_replace_decodes_its_random_token_ids_together(tokenizer) -> None:
    """DCR's randrepl: 4 random non-special ids decoded in ONE call. The toy vocabulary has sub-word pieces
    (letters without </w>) that join the next token, so some captions have fewer than 4 words; decoding
    each id alone would always give 4."""
    spy = DecodeSpy(tokenizer)
    lengths = []
    for seed in range(30):
        spy.calls.clear()
        new = s23_caption(CAPTION, S23Config("replace", prob=1.0), spy, gen(seed))
        assert len(spy.calls) == 1 and len(spy.calls[0]) == 4
        assert not set(spy.calls[0]) & set(tokenizer.all_special_ids)
        assert new == tokenizer.decode(spy.calls[0]).strip() and new != CAPTION
        lengths.append(len(new.split()))
    assert min(lengths) < 4 and max(lengths) <= 4
    assert s23_caption(CAPTION, S23Config("replace", prob=0.0), tokenizer, gen()) == CAPTION
    spy.calls.clear()
    s23_caption(CAPTION, S23Config("replace", prob=1.0, words=7), spy, gen())
    assert [len(c) for c in spy.calls] == [7]


def test_add_words_inserts_random_words_and_keeps_the_caption(tokenizer) -> None:
    new = s23_caption(CAPTION, S23Config("add-words", prob=1.0), tokenizer, gen(1)).split(" ")
    assert len(new) == len(CAPTION.split(" ")) + 2
    assert is_subsequence(CAPTION.split(" "), new)


def test_repeat_words_inserts_words_of_the_caption(tokenizer) -> None:
    new = s23_caption(CAPTION, S23Config("repeat-words", prob=1.0, words=3), tokenizer, gen(2)).split(" ")
    old = CAPTION.split(" ")
    assert len(new) == len(old) + 3 and set(new) == set(old) and is_subsequence(old, new)
    extra = Counter(new) - Counter(old)
    assert sum(extra.values()) == 3


def test_caption_changes_happen_with_the_given_probability(tokenizer) -> None:
    cfg = S23Config("add-words", prob=0.3)
    out = s23_captions([CAPTION] * 2000, cfg, tokenizer, gen(3))
    share = sum(c != CAPTION for c in out) / len(out)
    assert share == pytest.approx(0.3, abs=0.04)
    assert out == s23_captions([CAPTION] * 2000, cfg, tokenizer, gen(3))  # explicit generator: reproducible


def test_embed_noise_has_the_given_std_and_leaves_captions(tokenizer) -> None:
    cfg = S23Config("embed-noise", noise_std=0.25)
    assert s23_caption(CAPTION, cfg, tokenizer, gen()) == CAPTION
    noise = s23_embedding_noise((64, 16, 32), cfg, gen(4))
    assert noise.std().item() == pytest.approx(0.25, rel=0.03) and abs(noise.mean().item()) < 0.01
    assert s23_embedding_noise((2, 3), S23Config("add-words"), gen()) is None


def test_insert_word_positions_are_uniform() -> None:
    g = gen(5)
    positions = Counter(insert_word("a b", "X", g).split(" ").index("X") for _ in range(3000))
    assert set(positions) == {0, 1, 2} and min(positions.values()) > 900
    assert insert_word("", "X", g) == "X"


def test_w24_score_and_filter() -> None:
    g = gen(6)
    eps_c, eps_u = torch.randn((3, 4, 2, 2), generator=g), torch.randn((3, 4, 2, 2), generator=g)
    scores = w24_score(eps_c, eps_u)
    torch.testing.assert_close(scores, torch.stack([(eps_c[i] - eps_u[i]).norm() for i in range(3)]))
    keep = w24_keep(torch.tensor([0.5, 1.0, 1.5]), threshold=1.0)
    assert keep.tolist() == [1.0, 1.0, 0.0]


# Two processes' micro-batches: losses and W24 keep masks. Globally 4 samples are kept (1 + 3), and their
# mean is (1 + 5 + 6 + 7) / 4 = 4.75; per-process means averaged (as before) give (1/1 + 18/3) / 2 = 3.5.
_LOSSES = (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([5.0, 6.0, 7.0, 8.0]))
_KEEPS = (torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_w24_kept_mean_is_normalised_by_the_global_kept_count() -> None:
    """With an all-reduce stub, the process average data parallelism applies (of the loss and of its gradient)
    is the mean over the globally kept samples, each kept sample weighing 1/4."""
    total = sum(k.sum() for k in _KEEPS)
    outs, grads = [], []
    for loss, keep in zip(_LOSSES, _KEEPS):
        leaf = loss.clone().requires_grad_(True)
        out = w24_kept_mean(leaf, keep, processes=2, reduce_sum=lambda x: total.clone())
        out.backward()
        outs.append(out.detach())
        grads.append(leaf.grad)
    assert float(sum(outs) / 2) == pytest.approx(4.75)
    torch.testing.assert_close(torch.cat(grads) / 2, torch.cat(_KEEPS) / 4)
    # alone it is the mean over the kept samples; nothing kept: 0
    assert float(w24_kept_mean(_LOSSES[1], _KEEPS[1])) == pytest.approx(6.0)
    assert float(w24_kept_mean(_LOSSES[1], torch.zeros(4))) == 0.0


def test_loss_step_normalises_w24_by_the_global_count() -> None:
    """`loss_step` hands the kept count to the all-reduce: here the other process kept 3 samples."""
    from types import SimpleNamespace

    from diffmem.t2i.config import T2IConfig
    from diffmem.t2i.train import loss_step

    g = gen(9)
    x0, noise = torch.randn((4, 4, 2, 2), generator=g), torch.randn((4, 4, 2, 2), generator=g)
    cond, empty = torch.randn((4, 3, 8), generator=g), torch.zeros((1, 3, 8))

    def unet(x, t, encoder_hidden_states):  # eps = x + mean(c): conditional and unconditional differ per sample
        return SimpleNamespace(sample=x + encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1))

    alphas = torch.linspace(0.999, 0.01, 1000)
    scores = (cond.mean(dim=(1, 2)).abs() * 4).tolist()  # |eps_c - eps_u| over 16 latent elements
    cfg = T2IConfig(pretrained="x", data="y", mitigation="w24", w24_threshold=sorted(scores)[1] + 1e-4)
    loss, res, keep, score = loss_step(unet, unet, x0, None, torch.tensor([10, 200, 500, 900]), noise, cond, empty,
                                       alphas, "epsilon", cfg, processes=2, reduce_sum=lambda x: x + 3)
    torch.testing.assert_close(score, torch.tensor(scores), rtol=1e-5, atol=1e-6)
    assert keep.sum() == 2
    torch.testing.assert_close(loss, 2 * (res.loss * keep).sum() / 5)


def _kept_mean_worker(rank: int, store: str, result: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)

    def reduce_sum(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    out = w24_kept_mean(_LOSSES[rank], _KEEPS[rank], processes=2, reduce_sum=reduce_sum)
    avg = reduce_sum(out) / 2  # what DDP's gradient average does to the loss
    if rank == 0:
        torch.save(avg, result)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_w24_kept_mean_with_two_gloo_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_kept_mean_worker, args=(str(tmp_path / "store"), str(tmp_path / "avg.pt")), nprocs=2, join=True)
    assert float(torch.load(tmp_path / "avg.pt")) == pytest.approx(4.75)


def test_w24_prompt_optimisation_lowers_the_score_and_keeps_bos() -> None:
    """A toy text-conditional noise predictor: eps(x, c) = x + mean(c) * 1; the optimisation shrinks mean(c)."""
    g = gen(7)
    x, cond = torch.randn((3, 4, 2, 2), generator=g), torch.randn((1, 5, 8), generator=g) + 1.0
    uncond = torch.zeros(1, 5, 8)

    def eps_fn(x_t, t, emb):
        return x_t + emb.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)

    new, history = w24_optimize_prompt(eps_fn, x, torch.tensor(10), cond, uncond, lr=0.05, iters=20)
    after = w24_score(eps_fn(x, None, new.expand(3, -1, -1)), eps_fn(x, None, uncond.expand(3, -1, -1))).mean()
    assert after < 0.5 * history[0]
    torch.testing.assert_close(new[:, 0], cond[:, 0])  # BOS untouched
    # early stop at the target
    _, hist = w24_optimize_prompt(eps_fn, x, torch.tensor(10), cond, uncond, lr=0.05, iters=50, target=history[0] * 0.9)
    assert len(hist) < 50 and hist[-1] <= history[0] * 0.9


def test_w24_training_filter_skips_high_score_samples(tiny_sd: str, captioned: str, tmp_path: Path) -> None:
    """Threshold below every score: all samples skipped and the UNet does not move; above: it trains."""
    from safetensors.torch import load_file

    from diffmem.t2i.config import T2IConfig
    from diffmem.t2i.train import read_log, train_t2i

    base = dict(pretrained=tiny_sd, data=captioned, steps=2, batch=2, lr=1e-3, weight_decay=0.0,
                checkpoint_every=2, log_every=1, mitigation="w24")
    pre = load_file(str(Path(tiny_sd) / "unet" / "diffusion_pytorch_model.safetensors"))
    for thr, moved in ((1e-9, False), (1e9, True)):
        out = train_t2i(T2IConfig(**base, w24_threshold=thr), tmp_path / f"run{thr}", progress=False, cpu=True)
        log = read_log(out)
        assert [r["w24_frac_dropped"] for r in log] == ([1.0, 1.0] if not moved else [0.0, 0.0])
        assert all(r["w24_score_mean"] > 0 for r in log)
        weights = load_file(str(out / "checkpoints" / "step-00000002" / "unet.safetensors"))
        changed = any(not torch.equal(weights[k], pre[k]) for k in weights)
        assert changed == moved



def test_training_draws_apply_s23_to_the_batch(tokenizer) -> None:
    """The per-step draw edits the batch's captions (caption variants) or adds embedding noise (embed-noise),
    from the run generator alone: the same generator state gives the same batch."""
    from diffmem.t2i.train import draw_step

    captions = ("a photo of the red cat", "the blue house")
    args = (captions, 8, 1000, (4, 8, 8))
    plain = draw_step(gen(8), *args, None, tokenizer, (16, 32))
    assert plain.captions == [captions[int(i)] for i in plain.idx] and plain.emb_noise is None
    edited = draw_step(gen(8), *args, S23Config("add-words", prob=1.0), tokenizer, (16, 32))
    assert torch.equal(edited.idx, plain.idx) and torch.equal(edited.noise, plain.noise)
    assert all(len(e.split(" ")) == len(p.split(" ")) + 2 for e, p in zip(edited.captions, plain.captions))
    noisy = draw_step(gen(8), *args, S23Config("embed-noise", noise_std=0.1), tokenizer, (16, 32))
    assert noisy.captions == plain.captions and noisy.emb_noise.shape == (8, 16, 32)
    again = draw_step(gen(8), *args, S23Config("embed-noise", noise_std=0.1), tokenizer, (16, 32))
    assert torch.equal(noisy.emb_noise, again.emb_noise)
