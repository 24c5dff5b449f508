"""One rule for choosing a torch device, used by every package."""

from __future__ import annotations

from typing import Any

from toolkit.errors import LoomError

FIX = "use 'cpu', 'cuda' or 'cuda:N', or None for a GPU when one is present"


def resolve_device(device: Any = None) -> str:
    """'cuda' when a GPU is present and no device was asked for, else the given one or 'cpu'.

    A device torch does not know, or a GPU that is not there, is a LoomError naming it (not
    an error from deep inside a model load); an int N means 'cuda:N', as in torch.
    """
    if device is None or device == "":
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"
    given = device
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        device = f"cuda:{device}"
    if not isinstance(device, str):
        raise LoomError(f"device={device!r} is not a device name: {FIX}")
    if device == "cpu":
        return device
    try:
        import torch
    except ImportError:
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise LoomError(f"device={device!r} is not a torch device ({e}): {FIX}") from None
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise LoomError(
                f"device={given!r} but this torch has no usable MPS (Apple GPU) backend: "
                "use device='cpu'"
            )
    elif parsed.type != "cuda":  # xpu, meta, ...: no code path of loom runs there
        raise LoomError(f"device={given!r}: loom runs on 'cpu', 'cuda[:N]' or 'mps'")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LoomError(f"device={given!r} but no CUDA GPU is visible: use device='cpu'")
        if parsed.index is not None and parsed.index >= count:
            raise LoomError(
                f"device={given!r} but only {count} CUDA GPU(s) are visible: use 'cuda:0' "
                f"to 'cuda:{count - 1}'"
            )
    return device
