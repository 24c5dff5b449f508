"""Constrained decoding over a finite set of options: the exact log-likelihood of each.

When the answer must be one of a few known strings (an anchor that occurs in a document, a
pattern from a fixed menu), scoring every option by its sequence log-likelihood and taking
the argmax *is* exact constrained greedy decoding over that finite language: the model can
only "emit" an allowed option, and every allowed option gets a score (so the best few are
known too, not only the best one).

The options' token sequences (each followed by the end-of-turn token, so a short option that
is the prefix of a longer one is not favoured for free) are walked as a trie: the prompt is
evaluated once, then every trie node once, one token at a time, on the key/value cache of
its parent (cropped back between siblings). The same walk runs on both local backends:
`transformers` (a `DynamicCache`, cropped) and llama.cpp (its context, truncated to the
parent's length). A server behind a URL cannot do this: it has no `score_options`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def log_softmax(logits: Any) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    m = float(x.max())
    return x - (m + float(np.log(np.exp(x - m).sum())))


def score_trie(
    first: np.ndarray,
    seqs: Sequence[Sequence[int]],
    step: Callable[[int], np.ndarray],
    truncate: Callable[[int], None],
    base: int,
) -> tuple[list[float], int]:
    """Sum of log-probabilities of every token sequence in `seqs`, all continuing a prompt of
    `base` tokens whose next-token log-probabilities are `first`.

    step(token) feeds one token after the current state and returns the next log-probs;
    truncate(n) drops the state back to its first n tokens. Returns the scores and the
    number of tokens fed (the trie's inner nodes)."""
    scores = [0.0] * len(seqs)
    fed = 0

    def walk(members: list[int], pos: int, logp: np.ndarray, acc: float) -> None:
        nonlocal fed
        groups: dict[int, list[int]] = {}
        for i in members:
            groups.setdefault(int(seqs[i][pos]), []).append(i)
        for tok, group in groups.items():
            total = acc + float(logp[tok])
            rest = []
            for i in group:
                if len(seqs[i]) == pos + 1:
                    scores[i] = total
                else:
                    rest.append(i)
            if rest:
                truncate(base + pos)
                nxt = step(tok)
                fed += 1
                walk(rest, pos + 1, nxt, total)

    nonempty = [i for i, s in enumerate(seqs) if len(s)]
    if nonempty:
        walk(nonempty, 0, first, 0.0)
    return scores, fed


def score_transformers(
    model: Any, tokenizer: Any, device: str, prompt: str, options: Sequence[str]
) -> tuple[list[float], int, int]:
    """(log-likelihood of each option after `prompt`, prompt tokens, tokens fed) with a
    transformers causal LM; `prompt` is already chat-formatted."""
    import torch
    from transformers import DynamicCache

    end = _end_ids(tokenizer.eos_token_id)
    seqs = [tokenizer(o, add_special_tokens=False)["input_ids"] + end for o in options]
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    cache = DynamicCache()
    # transformers >= 5.x names the argument `cache` (`past_key_values` is deprecated)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), use_cache=True, **{name: cache})
        first = log_softmax(out.logits[0, -1].float().cpu().numpy())

        def step(tok: int) -> np.ndarray:
            x = torch.tensor([[tok]], device=device)
            o = model(input_ids=x, use_cache=True, **{name: cache})
            return log_softmax(o.logits[0, -1].float().cpu().numpy())

        def truncate(n: int) -> None:
            extra = cache.get_seq_length() - n
            if extra > 0:
                cache.crop(-extra)

        scores, fed = score_trie(first, seqs, step, truncate, ids.shape[1])
    return scores, int(ids.shape[1]), fed


def score_llamacpp(llama: Any, prompt: str, options: Sequence[str]) -> tuple[list[float], int, int]:
    """The same with a llama-cpp-python `Llama` (its context is reused and left at the
    prompt, so the next completion keeps the common prefix); `prompt` is chat-formatted."""
    import llama_cpp

    n_vocab = llama.n_vocab()
    end = _end_ids(llama.token_eos())
    seqs = [llama.tokenize(o.encode(), add_bos=False, special=False) + end for o in options]
    ids = llama.tokenize(prompt.encode(), add_bos=False, special=True)

    def last_logits() -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        return log_softmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,)))

    def truncate(n: int) -> None:
        llama.n_tokens = n  # the next eval drops the cache past n

    def step(tok: int) -> np.ndarray:
        llama.eval([tok])
        return last_logits()

    # the prompt's prefix already in the context (the same document asked about another
    # attribute, or the calibration prompt) is kept; one token is always re-evaluated so the
    # last logits are the prompt's
    held = list(llama.input_ids[: llama.n_tokens])
    same = 0
    while same < min(len(held), len(ids) - 1) and held[same] == ids[same]:
        same += 1
    llama.n_tokens = same
    llama.eval(ids[same:])
    first = last_logits()
    scores, fed = score_trie(first, seqs, step, truncate, len(ids))
    truncate(len(ids))
    return scores, len(ids), fed


def _end_ids(eos: Any) -> list[int]:
    if isinstance(eos, (list, tuple)):
        return [int(eos[0])] if eos else []
    return [] if eos is None or int(eos) < 0 else [int(eos)]
