"""loom kernels: Triton linear attention, sliding-window attention, Monarch matmul, FFT conv.

Each primitive dispatches to a Triton kernel on CUDA (or in Triton's interpreter when
TRITON_INTERPRET=1 is set before import) and to its plain PyTorch reference otherwise.
"""

import importlib.metadata
import os

from kernels.fftconv import fft_conv
from kernels.linear_attn import linear_attention
from kernels.m2_mixer import filter_spectra, gated_long_conv, gated_long_conv_reference
from kernels.monarch import blockdiag_matmul, monarch_matmul
from kernels.reference import (
    blockdiag_matmul_reference,
    fft_conv_reference,
    hedgehog_feature_map,
    linear_attention_reference,
    monarch_matmul_bmm,
    monarch_matmul_reference,
    sliding_window_attention_reference,
    taylor_feature_map,
)
from kernels.sliding_window import sliding_window_attention

__all__ = [
    "linear_attention",
    "sliding_window_attention",
    "monarch_matmul",
    "blockdiag_matmul",
    "fft_conv",
    "gated_long_conv",
    "gated_long_conv_reference",
    "filter_spectra",
    "linear_attention_reference",
    "sliding_window_attention_reference",
    "monarch_matmul_reference",
    "monarch_matmul_bmm",
    "blockdiag_matmul_reference",
    "fft_conv_reference",
    "taylor_feature_map",
    "hedgehog_feature_map",
]


def hub_kernels_version() -> str | None:
    """Version of HuggingFace's `kernels` distribution if one is installed (None otherwise).
    Its import name is this package's, so Python imports loom's kernels in its place."""
    try:
        return importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return None


def __getattr__(name: str):
    """A clear error for code that wanted HuggingFace's `kernels` (transformers >= 5.25 imports
    `from kernels import CUDAProperties, ...` when that distribution is installed)."""
    submodule = os.path.exists(os.path.join(os.path.dirname(__file__), f"{name}.py"))
    version = None if name.startswith("__") or submodule else hub_kernels_version()
    if version is not None:
        raise ImportError(
            f"cannot import {name!r} from loom's `kernels` package: HuggingFace's `kernels` "
            f"{version} is installed too (transformers >= 5.25 depends on it) and its import name "
            "is loom's. Fix: pip install 'transformers<5.25' && pip uninstall -y kernels"
        )
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
