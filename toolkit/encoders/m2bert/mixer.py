"""M2-BERT's sequence mixer: implicit long filters, the short convolution, the gated block.

`MonarchMixerSequenceMixing` runs the reference's unfused order when autograd is on or on
the CPU; in inference on CUDA (or in Triton's interpreter) it runs the fused block
`kernels.gated_long_conv` with both filters' FFT spectra kept between calls (they depend
on the weights only), so the implicit-filter MLPs and the filters' FFTs run once per
weight change instead of in every forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.common import use_triton
from toolkit.errors import LoomError

CACHE_BYTES = 64 * 2**20  # per filter: 768 channels x 2L float32 fits up to L = 8192
#: a layer's cached filter spectra may take this share of the GPU's memory (32k: 0.4 GB)
SPECTRA_MEMORY_SHARE = 0.01


def weights_key(module: nn.Module, *extra: Any) -> tuple:
    """Changes whenever any tensor of `module` is replaced, moved, cast or updated in place."""
    tensors = [*module.parameters(), *module.buffers()]
    return (*extra, *((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))


def module_caches(model: nn.Module) -> list[torch.Tensor]:
    """The tensors `model`'s modules keep beside their parameters and buffers (filter spectra,
    transposed Monarch blocks): what a captured CUDA graph reads besides its input."""
    found: list[torch.Tensor] = []

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)

    for m in model.modules():
        for name, v in vars(m).items():
            if name.startswith("_") and name not in ("_parameters", "_buffers", "_modules"):
                walk(v)
    return found


def fft_long_conv(
    u: torch.Tensor,
    k: torch.Tensor,
    bias: torch.Tensor,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """((u * pre_gate) conv k + (u * pre_gate) * bias) * gate, FFT size 2L, float32 inside.

    u: (B, H, L); k: (H, L) causal filter or (H, 2L) with the reversed half of a
    bidirectional filter in the second half; bias: (H,). The reference's `fftconv_ref`
    (gelu off, no dropout) with its gates fused: `kernels.fft_conv` (Triton on CUDA,
    PyTorch on CPU).
    """
    return kernels.fft_conv(u, k.to(torch.float32), d_bias=bias, gate=gate, pre_gate=pre_gate)


class _Sin(nn.Module):
    def __init__(self, dim: int, w: float, w_mod: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))
        self.w_mod = w_mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w_mod * self.freq * x)


class _PositionalEmbedding(nn.Module):
    """Time t in [0, 1] and complex-exponential features z for the implicit filters."""

    def __init__(self, emb_dim: int, seq_len: int) -> None:
        super().__init__()
        t = torch.linspace(0, 1, seq_len)[None, :, None]
        bands = (emb_dim - 1) // 2
        t_rescaled = torch.linspace(0, seq_len - 1, seq_len)[None, :, None]
        w = 2 * math.pi * t_rescaled / seq_len
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]
        z = torch.exp(-1j * f * w)
        self.z = nn.Parameter(torch.cat([t, z.real, z.imag], dim=-1))
        self.register_buffer("t", t)


class _ExponentialModulation(nn.Module):
    def __init__(self, d_model: int, fast: float = 0.3, slow: float = 1.5, target: float = 1e-2):
        super().__init__()
        deltas = torch.linspace(math.log(target) / slow, math.log(target) / fast, d_model)
        self.register_buffer("deltas", deltas[None, None])

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(-t * self.deltas.abs())


class HyenaFilter(nn.Module):
    """Implicit long filter: MLP(positional features) times an exponential decay."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        d, order, emb = cfg.hidden_size, cfg.hyena_filter_order, cfg.hyena_emb_dim
        self.bidirectional = cfg.bidirectional
        self.bias = nn.Parameter(torch.randn(d))
        self.pos_emb = _PositionalEmbedding(emb, cfg.long_conv_l_max)
        self.implicit_filter = self._mlp(emb, order, d, cfg)
        if self.bidirectional:
            self.implicit_filter_rev = self._mlp(emb, order, d, cfg)
        self.modulation = _ExponentialModulation(d)
        self._cache: dict[str, tuple[tuple, torch.Tensor]] = {}

    @staticmethod
    def _mlp(emb: int, order: int, d: int, cfg: Any) -> nn.Sequential:
        def act() -> _Sin:
            return _Sin(order, cfg.hyena_w, cfg.hyena_w_mod)

        return nn.Sequential(
            nn.Linear(emb, order),
            act(),
            nn.Linear(order, order),
            act(),
            nn.Linear(order, order),
            act(),
            nn.Linear(order, d, bias=False),
        )

    def kernel(self, seqlen: int) -> torch.Tensor:
        """(H, L) causal filter, or (H, 2L) forward half + flipped reverse half.

        The filter depends on the weights only, not on the input: without autograd it is
        kept between calls (for filters up to CACHE_BYTES; the 32k models recompute it),
        keyed by the length and every tensor's storage and version, so any change to the
        weights (loading, in-place updates, moving, casting) recomputes it.
        """
        if torch.is_grad_enabled() or self.training:
            return self._kernel(seqlen)
        key = weights_key(self, seqlen)
        hit = self._cache.get("k")
        if hit is not None and hit[0] == key:
            return hit[1]
        k = self._kernel(seqlen)
        self._cache.clear()
        if k.numel() * k.element_size() <= CACHE_BYTES:
            self._cache["k"] = (key, k)
        return k

    def filter(self, seqlen: int) -> torch.Tensor:
        """`kernel` computed now, never cached."""
        return self._kernel(seqlen)

    def _kernel(self, seqlen: int) -> torch.Tensor:
        if seqlen > self.pos_emb.z.shape[1]:
            raise LoomError(
                f"sequence of {seqlen} tokens is longer than the model's long_conv_l_max "
                f"({self.pos_emb.z.shape[1]}): truncate or chunk the text"
            )
        z = self.pos_emb.z[:, :seqlen].float()
        t = self.pos_emb.t[:, :seqlen].float()
        with torch.autocast(z.device.type, enabled=False):
            k = self.modulation(t, self.implicit_filter(z))[0].transpose(0, 1)
            if not self.bidirectional:
                return k
            k_rev = self.modulation(t, self.implicit_filter_rev(z))[0].transpose(0, 1)
        return F.pad(k, (0, seqlen)) + F.pad(k_rev.flip(-1), (seqlen, 0))

    def forward(
        self,
        x: torch.Tensor,
        gate: torch.Tensor | None = None,
        pre_gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return fft_long_conv(x, self.kernel(x.shape[-1]), self.bias, gate, pre_gate)


def short_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The reference's causal depthwise conv (width 3, padding 2, first L outputs).

    Written as shifted multiply-adds: the same sum as `conv(x)[..., :L]`, but elementwise
    (a depthwise Conv1d over 3 x hidden channels is slow on GPUs).
    """
    w = conv.weight[:, 0].to(x.dtype)  # (C, 3)
    y = x * w[:, 2:3] + conv.bias.to(x.dtype)[:, None]
    y[..., 1:] += x[..., :-1] * w[:, 1:2]
    y[..., 2:] += x[..., :-2] * w[:, 0:1]
    return y


class MonarchMixerSequenceMixing(nn.Module):
    """Gated long convolution: in-projection, short conv, v*x1 -> long conv -> *x2 (+ residual conv)."""

    #: inference runs the fused block where it applies; False keeps the reference order
    fused = True
    #: the fused block's FFT precision (`kernels.m2_mixer.fft_signal_dtype`): "auto" runs
    #: float16 signals / complex32 spectra under bf16/fp16 autocast on CUDA at power-of-two
    #: lengths (M2's 2k/8k/32k), "float32" always float32, "float16" always half
    fft_precision = "auto"

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.d_model = d
        self.residual_long_conv = cfg.residual_long_conv
        self.training_additions = cfg.hyena_training_additions
        self.filter_fn = HyenaFilter(cfg)
        if self.residual_long_conv:
            self.filter_fn2 = HyenaFilter(cfg)
        self.in_linear = nn.Linear(d, 3 * d)
        self.out_linear = nn.Linear(d, d)
        if self.training_additions:
            self.layernorm = nn.LayerNorm(d)
        self.short_filter = nn.Conv1d(3 * d, 3 * d, kernel_size=3, groups=3 * d, padding=2)
        self._spectra: tuple[tuple, torch.Tensor] | None = None

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.fused_ok(u):
            z = self.in_linear(u)
            bias2 = self.filter_fn2.bias if self.residual_long_conv else None
            w, b = self.short_filter.weight, self.short_filter.bias
            y = kernels.gated_long_conv(
                z, u, self.spectra(u.shape[1]), self.filter_fn.bias, bias2, w, b,
                fft_precision=self.fft_precision,
            )  # fmt: skip
            return self.out_linear(y)
        if self.training_additions:
            u = self.layernorm(u)
        u_orig = u
        uc = short_conv(self.in_linear(u).transpose(1, 2), self.short_filter)
        x1, x2, v = uc.split(self.d_model, dim=1)
        y = self.filter_fn(v, gate=x2, pre_gate=x1)
        if self.residual_long_conv:
            y = y + self.filter_fn2(u_orig.transpose(1, 2))
        return self.out_linear(y.transpose(1, 2))

    def fused_ok(self, u: torch.Tensor) -> bool:
        """Inference on CUDA (or in Triton's interpreter): the fused block applies."""
        return (
            self.fused
            and not (torch.is_grad_enabled() or self.training or self.training_additions)
            and u.dim() == 3
            and use_triton("auto", u)
        )

    def spectra(self, seqlen: int) -> torch.Tensor:
        """Both filters' FFT spectra at `seqlen` (`kernels.filter_spectra`), kept between
        calls while the weights stay the same and they fit SPECTRA_MEMORY_SHARE of the GPU."""
        key = weights_key(self, seqlen)
        hit = self._spectra
        if hit is not None and hit[0] == key:
            return hit[1]
        self._spectra = None
        fns = [self.filter_fn] + ([self.filter_fn2] if self.residual_long_conv else [])
        spec = kernels.filter_spectra([f.filter(seqlen) for f in fns], seqlen)
        nbytes = spec.numel() * spec.element_size()
        if spec.is_cuda:
            room = torch.cuda.get_device_properties(spec.device).total_memory
            keep = nbytes <= SPECTRA_MEMORY_SHARE * room
        else:
            keep = nbytes <= 2 * CACHE_BYTES
        if keep:
            self._spectra = (key, spec)
        return spec
