"""Text-conditional memorization mitigations (docs/method.md): S23 and W24.

S23 (Somepalli et al. 2023, "Understanding and mitigating copying in diffusion models"; their code is the
DCR repository, github.com/somepago/DCR), training time. With probability `prob` per training sample
(DCR's --trainspecial_prob, default 0.1) the caption is changed:
    replace       the caption becomes `words` random vocabulary token ids (default 4) decoded TOGETHER,
                  as DCR's randrepl does (`tokenizer.decode(ids)`): a sub-word piece joins the next token, so
                  the caption can have fewer than `words` space-separated words
    add-words     `words` random vocabulary tokens, each decoded alone, are inserted at random positions
                  (default 2; DCR's randwordadd)
    repeat-words  `words` words of the caption itself are inserted at random positions (default 2; DCR's
                  wordrepeat)
or, for every sample, Gaussian noise is added to the text embedding:
    embed-noise   c <- c + noise_std * n,  n ~ N(0, I)   (DCR's --rand_noise_lam, whose default is 0, i.e.
                  off; noise_std's default 0.1 is this library's choice, not DCR's)
One difference: DCR draws ids from [0, 49400) of CLIP's 49408 (the two special tokens among the 8 left
out); here they are drawn from all non-special ids of the tokenizer (for CLIP 49406 ids), so any
tokenizer works.

W24 (Wen et al. 2024, "Detecting, explaining, and mitigating memorization in diffusion models"):
the memorization score of a prompt embedding c at x_t is the norm of the text-conditional noise prediction
    d(x_t, c) = |eps(x_t, c) - eps(x_t, empty)|_2      (per sample, over all latent elements)
Training drops the samples whose score exceeds a threshold; at inference the score (averaged over the
sampling steps) detects memorized prompts, and minimizing d over the prompt embedding at the first
sampling step mitigates them.
All randomness comes from an explicit torch.Generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffmem.errors import DiffmemError

S23_VARIANTS = ("replace", "add-words", "repeat-words", "embed-noise")
S23_DEFAULT_WORDS = {"replace": 4, "add-words": 2, "repeat-words": 2}
MITIGATIONS = ("none", "w24") + tuple(f"s23-{v}" for v in S23_VARIANTS)


@dataclass(frozen=True)
class S23Config:
    """One S23 variant and its strength."""

    variant: str
    prob: float = 0.1  # caption variants: probability that a sample's caption is changed
    words: int | None = None  # words inserted / token ids of a replacement caption (None: S23's default)
    noise_std: float = 0.1  # embed-noise: std of the noise added to the text embedding (DCR's default: 0, off)

    @property
    def n_words(self) -> int:
        return self.words if self.words is not None else S23_DEFAULT_WORDS.get(self.variant, 0)


def parse_mitigation(name: str) -> str | None:
    """`s23-<variant>` -> the variant; `none`/`w24` -> None. Raises on anything else."""
    if name not in MITIGATIONS:
        raise DiffmemError(f"--mitigation {name!r} is not one of {', '.join(MITIGATIONS)}")
    return name[4:] if name.startswith("s23-") else None


def _randint(high: int, g: torch.Generator) -> int:
    return int(torch.randint(0, high, (), generator=g))


def insert_word(caption: str, word: str, g: torch.Generator) -> str:
    """Insert `word` between two space-separated words of `caption` (or at either end), uniformly."""
    words = caption.split(" ") if caption else []
    words.insert(_randint(len(words) + 1, g), word)
    return " ".join(words)


def random_token_ids(tokenizer: Any, n: int, g: torch.Generator) -> list[int]:
    """`n` vocabulary ids of `tokenizer` drawn uniformly from the non-special ones (with repetition)."""
    special = set(getattr(tokenizer, "all_special_ids", []))
    size = len(tokenizer)
    out: list[int] = []
    while len(out) < n:
        tok = _randint(size, g)
        if tok not in special:
            out.append(tok)
    return out


def random_words(tokenizer: Any, n: int, g: torch.Generator) -> list[str]:
    """`n` random vocabulary tokens of `tokenizer`, each decoded alone to text (special and empty ones skipped)."""
    out: list[str] = []
    while len(out) < n:
        word = tokenizer.decode(random_token_ids(tokenizer, 1, g)).strip()
        if word:
            out.append(word)
    return out


def s23_caption(caption: str, cfg: S23Config, tokenizer: Any, g: torch.Generator) -> str:
    """S23's caption transform of one training caption (unchanged with probability 1 - prob)."""
    if cfg.variant == "embed-noise" or float(torch.rand((), generator=g)) >= cfg.prob:
        return caption
    if cfg.variant == "replace":  # DCR's randrepl: the ids decoded together
        return tokenizer.decode(random_token_ids(tokenizer, cfg.n_words, g)).strip()
    if cfg.variant == "add-words":
        for word in random_words(tokenizer, cfg.n_words, g):
            caption = insert_word(caption, word, g)
        return caption
    if cfg.variant == "repeat-words":
        words = caption.split(" ") if caption else []
        for _ in range(cfg.n_words if words else 0):
            caption = insert_word(caption, words[_randint(len(words), g)], g)
        return caption
    raise ValueError(f"unknown S23 variant {cfg.variant!r}")


def s23_captions(captions: list[str], cfg: S23Config, tokenizer: Any, g: torch.Generator) -> list[str]:
    """S23 applied to a batch of captions, in order (one generator draws for all of them)."""
    return [s23_caption(c, cfg, tokenizer, g) for c in captions]


def s23_embedding_noise(shape: tuple[int, ...], cfg: S23Config, g: torch.Generator) -> torch.Tensor | None:
    """noise_std * n for `embed-noise` (drawn on the CPU from `g`), else None."""
    if cfg.variant != "embed-noise":
        return None
    return cfg.noise_std * torch.randn(shape, generator=g)


def w24_score(eps_cond: torch.Tensor, eps_uncond: torch.Tensor) -> torch.Tensor:
    """W24's memorization score per sample: |eps(x_t, c) - eps(x_t, empty)|_2, shape [B]."""
    return (eps_cond.float() - eps_uncond.float()).flatten(1).norm(dim=1)


def w24_keep(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Training filter: True for samples kept (score <= threshold), as a float mask [B]."""
    return (scores <= threshold).to(torch.float32)


def w24_kept_mean(loss: torch.Tensor, keep: torch.Tensor, processes: int = 1,
                  reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """This process's share of the mean loss over the samples W24 keeps in the GLOBAL batch.

    `reduce_sum` sums a tensor over the `processes` data-parallel processes (an all-reduce; None alone).
    Returns `processes * sum(loss * keep) / N_kept` with N_kept the global kept count, so that the
    gradient average data parallelism takes over processes is `sum over all kept samples / N_kept`: every
    kept sample weighs the same, however the kept ones fall on the processes. (Normalising by the local
    count instead weights a sample on a process that kept few more.) 0 when nothing is kept.
    """
    kept = keep.sum().detach()
    if reduce_sum is not None:
        kept = reduce_sum(kept)
    return (loss * keep).sum() * processes / kept.clamp_min(1.0)


EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, embeddings) -> eps


def w24_optimize_prompt(eps_fn: EpsFn, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                        uncond: torch.Tensor, lr: float = 0.05, iters: int = 10,
                        target: float | None = None) -> tuple[torch.Tensor, list[float]]:
    """W24's inference-time mitigation: adjust one prompt embedding `cond` [1, L, D] to lower the mean
    score of its samples `x_t` [K, C, h, w] at timestep `t`, with AdamW (lr 0.05, 10 iterations, as Wen
    et al.), stopping early once the score is <= `target`. The first token (BOS) is kept fixed.

    Returns the new embedding (detached) and the score before each iteration.
    """
    emb = cond.detach().clone().float().requires_grad_(True)
    opt = torch.optim.AdamW([emb], lr=lr)
    k = x_t.shape[0]
    with torch.no_grad():
        eps_u = eps_fn(x_t, t, uncond.expand(k, -1, -1))
    history: list[float] = []
    for _ in range(iters):
        with torch.enable_grad():
            score = w24_score(eps_fn(x_t, t, emb.to(cond.dtype).expand(k, -1, -1)), eps_u).mean()
            history.append(float(score.detach()))
            if target is not None and history[-1] <= target:
                break
            (grad,) = torch.autograd.grad(score, [emb])
        grad[:, 0] = 0  # the BOS embedding is the same for every prompt: leave it
        emb.grad = grad
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            emb[:, 0] = cond[:, 0].float()  # also undo AdamW's weight decay on it
    return emb.detach().to(cond.dtype), history
