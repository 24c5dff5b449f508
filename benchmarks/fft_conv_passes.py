"""GPU time of each kernel of `kernels.fft_conv` (cuFFT path) and of its torch.fft reference.

PYTHONPATH=. python -m benchmarks.fft_conv_passes > benchmarks/results/fft-conv-passes-<gpu>.jsonl

Per L (B = 4, H = 768, bf16 u and gate, float32 filter (H, L), D; as the fft section of
benchmarks/kernels.py), one JSON line per pipeline: "half" (fft_precision="float16": float16
signals, complex32 spectra), "float32" (the default), "reference"
(kernels.reference.fft_conv_reference, M2's fftconv_ref) and "filter_rfft" (the filter's
float32 rfft, which every call of all three makes): the median GPU time of every
kernel launch of one call in launch order (torch.profiler, 20 calls), their sum, and the
ratio reference / ours on the kernels' sum (GPU time, no host launch cost). Needs a CUDA GPU.
"""

# ruff: noqa: B023 (each timed lambda runs inside its own loop iteration)

from __future__ import annotations

import json
import math
import sys

import torch

from benchmarks.gpu_timing import per_kernel
from kernels import fft_conv
from kernels.reference import fft_conv_reference

B, H = 4, 768
LENGTHS = [4096, 8192, 16384, 32768]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("benchmarks.fft_conv_passes needs a CUDA GPU (it reads the profiler's events)")
    print(json.dumps({"label": "env", "gpu": torch.cuda.get_device_name(0), "B": B, "H": H}))
    for L in LENGTHS:
        torch.manual_seed(0)
        u, g = (torch.randn(B, H, L, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        k = torch.randn(H, L, device="cuda") / math.sqrt(L)
        d = torch.randn(H, device="cuda")
        runs = {
            "half": lambda: fft_conv(u, k, d, g, fft_precision="float16"),
            "float32": lambda: fft_conv(u, k, d, g, fft_precision="float32"),
            "reference": lambda: fft_conv_reference(u, k, d, g),
            "filter_rfft": lambda: torch.fft.rfft(k.float(), n=2 * L),  # inside both above
        }
        total = {}
        for name, fn in runs.items():
            ks = per_kernel(fn)
            total[name] = sum(t for _, t in ks)
            row = {"label": name, "L": L, "kernels": ks, "ms": round(total[name], 4)}
            print(json.dumps(row), flush=True)
        print(json.dumps({"label": "ratios", "L": L,
                          "half": round(total["reference"] / total["half"], 3),
                          "float32": round(total["reference"] / total["float32"], 3)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
