"""Shared fixtures: the default embedder is loaded once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder():
    """The default embedder: on this CPU, the int8 ONNX forward pass when it agrees (auto)."""
    from toolkit.embed import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def torch_embedder():
    """The PyTorch reference, for tests that hold vectors to sentence-transformers' numbers."""
    from toolkit.embed import get_embedder

    return get_embedder(backend="torch")


@pytest.fixture(scope="session")
def bbc_sample():
    from toolkit.datasets import sample_corpus

    return sample_corpus()
