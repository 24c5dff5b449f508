"""Tokenizer worker processes: the same chunks as the threads, and a dead worker is named."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from toolkit.embed.pipeline import rust_tokenizer, tokenized_chunks, use_processes
from toolkit.embed.tokenize_procs import TokenizerProcesses, tokenizer_processes
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from toolkit.embed import default_model_path

    return rust_tokenizer(AutoTokenizer.from_pretrained(str(default_model_path())))


def chunks(tok, texts, truncate, monkeypatch, mode):
    monkeypatch.setenv("LOOM_TOKENIZE", mode)
    out = list(tokenized_chunks(tok, texts, 254, 32, [101], [102], truncate))
    return {
        f: np.concatenate([getattr(c, f) for c in out])
        for f in ("flat", "lengths", "owner", "counts")
    }


@pytest.mark.parametrize("truncate", [True, False])
def test_processes_give_the_threads_chunks(tok, bbc_sample, monkeypatch, truncate):
    texts = list(bbc_sample["summary"][:300]) + ["", "naïve café 😀", "word " * 700]
    a = chunks(tok, texts, truncate, monkeypatch, "threads")
    b = chunks(tok, texts, truncate, monkeypatch, "processes")
    for field in a:
        assert np.array_equal(a[field], b[field]), field
    assert len(a["lengths"]) > len(texts) or truncate  # the long text was windowed


def test_a_dead_worker_is_named_and_threads_take_over(tok, monkeypatch):
    pool = TokenizerProcesses(tok, 2)
    try:
        assert len(pool.submit(["hello world"], 0, 254, 32, [101], [102], True).result().flat) == 4
        for proc in pool.procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with pytest.raises(LoomError, match="tokenizer worker process .* stopped"):
            pool.submit(["hello"], 0, 254, 32, [101], [102], True).result()
        assert pool.closed
    finally:
        pool.close()


def test_a_failed_pool_falls_back_to_threads(tok, monkeypatch):
    pool = tokenizer_processes(tok, 2)
    assert pool is not None
    pool.close()
    assert tokenizer_processes(tok, 2) is None  # closed: the caller tokenizes on threads
    monkeypatch.setenv("LOOM_TOKENIZE", "processes")
    out = list(tokenized_chunks(tok, ["a b c"] * 40, 254, 32, [101], [102], True))
    assert sum(len(c.owner) for c in out) == 40


def test_unknown_mode_is_named(monkeypatch):
    monkeypatch.setenv("LOOM_TOKENIZE", "fibers")
    with pytest.raises(LoomError, match="LOOM_TOKENIZE='fibers'"):
        use_processes(1000)
