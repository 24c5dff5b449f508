"""loom kernels: Triton linear attention, sliding-window attention, Monarch matmul, FFT conv.

Each primitive dispatches to a Triton kernel on CUDA (or in Triton's interpreter when
TRITON_INTERPRET=1 is set before import) and to its plain PyTorch reference otherwise.
"""

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
