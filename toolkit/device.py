"""One rule for choosing a torch device, used by every package."""

from __future__ import annotations


def resolve_device(device: str | None = None) -> str:
    """'cuda' when a GPU is present and no device was asked for, else the given one or 'cpu'."""
    if device:
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
