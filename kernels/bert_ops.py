"""The glue of a packed BERT forward in one pass each: embeddings, LayerNorm, mean pooling.

A packed (unpadded) BERT encoder (`toolkit.embed.packed`) holds the tokens of many texts as
one (T, hidden) tensor with the texts' cumulative lengths `cu_seqlens` (B + 1,). Around its
matrix products PyTorch runs the glue as separate memory passes:

- embeddings: word rows gathered, position rows gathered (positions built from cu_seqlens
  in four integer passes), the token-type row added, LayerNorm: about ten passes over
  (T, hidden). `embed_layernorm` is one: each program reads its text's ids, gathers both
  rows, adds, normalises in float32 and writes once;
- `layer_norm`: LayerNorm over the rows of (T, hidden), many rows per program;
- `segment_mean`: each text's mean token vector in float32 (optionally unit length), read
  straight from the 16-bit states (no float32 copy of the whole tensor, no index_add).

Each has a plain PyTorch reference here (`*_reference`); the Triton kernels are checked
against them in the interpreter (tests/test_bert_ops.py) and on the GPU against float64
(`python -m kernels.selfcheck --device cuda`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.common import HAS_TRITON, check_float, next_pow2, use_triton

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _normalize_rows(x, m_col, w_ptr, b_ptr, cols, N, eps):
        """LayerNorm of a float32 (rows, NP) tile whose columns >= N are masked out."""
        mean = tl.sum(x, axis=1) / N
        d = tl.where(m_col[None, :], x - mean[:, None], 0.0)
        var = tl.sum(d * d, axis=1) / N
        y = d * (1.0 / tl.sqrt(var + eps))[:, None]
        w = tl.load(w_ptr + cols, mask=m_col, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=m_col, other=0.0).to(tl.float32)
        return y * w[None, :] + b[None, :]

    @triton.jit
    def _embed_ln_kernel(
        ids_ptr, cu_ptr, word_ptr, pos_ptr, type_ptr, w_ptr, b_ptr, o_ptr, N, eps,
        BT: tl.constexpr, NP: tl.constexpr,
    ):  # fmt: skip
        """Rows [j*BT, (j+1)*BT) of text i: LN(word[id] + position[p] + type0)."""
        i = tl.program_id(0)
        start = tl.load(cu_ptr + i).to(tl.int64)
        length = tl.load(cu_ptr + i + 1).to(tl.int64) - start
        r = tl.program_id(1) * BT + tl.arange(0, BT)
        if tl.program_id(1) * BT < length:
            cols = tl.arange(0, NP)
            m_col = cols < N
            m_row = r < length
            m = m_row[:, None] & m_col[None, :]
            tok = tl.load(ids_ptr + start + r, mask=m_row, other=0).to(tl.int64)
            x = tl.load(word_ptr + tok[:, None] * N + cols[None, :], mask=m, other=0.0)
            x = x.to(tl.float32)
            x += tl.load(pos_ptr + r[:, None] * N + cols[None, :], mask=m, other=0.0).to(tl.float32)
            x += tl.load(type_ptr + cols, mask=m_col, other=0.0).to(tl.float32)[None, :]
            y = _normalize_rows(x, m_col, w_ptr, b_ptr, cols, N, eps)
            dst = o_ptr + (start + r)[:, None] * N + cols[None, :]
            tl.store(dst, y.to(o_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _layer_norm_kernel(
        x_ptr, w_ptr, b_ptr, o_ptr, M, N, eps, BT: tl.constexpr, NP: tl.constexpr
    ):
        r = tl.program_id(0).to(tl.int64) * BT + tl.arange(0, BT)
        cols = tl.arange(0, NP)
        m_col = cols < N
        m = (r < M)[:, None] & m_col[None, :]
        x = tl.load(x_ptr + r[:, None] * N + cols[None, :], mask=m, other=0.0).to(tl.float32)
        y = _normalize_rows(x, m_col, w_ptr, b_ptr, cols, N, eps)
        tl.store(o_ptr + r[:, None] * N + cols[None, :], y.to(o_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _segment_mean_kernel(
        x_ptr, cu_ptr, o_ptr, N, NORMALIZE: tl.constexpr, BT: tl.constexpr, NP: tl.constexpr
    ):
        i = tl.program_id(0)
        start = tl.load(cu_ptr + i).to(tl.int64)
        stop = tl.load(cu_ptr + i + 1).to(tl.int64)
        cols = tl.arange(0, NP)
        m_col = cols < N
        acc = tl.zeros((NP,), dtype=tl.float32)
        for r0 in range(start, stop, BT):
            r = r0 + tl.arange(0, BT)
            m = (r < stop)[:, None] & m_col[None, :]
            x = tl.load(x_ptr + r[:, None] * N + cols[None, :], mask=m, other=0.0)
            acc += tl.sum(x.to(tl.float32), axis=0)
        acc = acc / tl.maximum(stop - start, 1).to(tl.float32)
        if NORMALIZE:  # F.normalize: x / max(||x||, 1e-12)
            acc = acc / tl.maximum(tl.sqrt(tl.sum(acc * acc, axis=0)), 1e-12)
        tl.store(o_ptr + i * N + cols, acc, mask=m_col)


def _check_cu(cu_seqlens: torch.Tensor) -> None:
    """cu_seqlens is (B + 1,) int32/int64; the kernels trust it to start at 0, never to
    decrease and to end at the number of packed rows (what the packing code builds)."""
    int_types = (torch.int32, torch.int64)
    if cu_seqlens.dim() != 1 or len(cu_seqlens) < 1 or cu_seqlens.dtype not in int_types:
        raise ValueError(
            "cu_seqlens must be a 1-D int32/int64 tensor of cumulative text lengths (B + 1,), "
            f"got dtype {cu_seqlens.dtype} and shape {tuple(cu_seqlens.shape)}"
        )


def segment_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """For each of `total` packed tokens, the index of the text it belongs to."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(
        torch.arange(len(lengths), device=lengths.device), lengths, output_size=total
    )


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Each packed token's position inside its own text (0 at every text's first token)."""
    seg = segment_ids(cu_seqlens, total)
    return torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seg]


def embed_layernorm_reference(
    ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    word: torch.Tensor,
    position: torch.Tensor,
    type0: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """LayerNorm(word[ids] + position[positions] + type0), in word's dtype."""
    x = word[ids] + position[packed_positions(cu_seqlens, ids.shape[0])] + type0
    return F.layer_norm(x, (word.shape[1],), weight, bias, eps)


def embed_layernorm(
    ids: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    word: torch.Tensor,
    position: torch.Tensor,
    type0: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    backend: str = "auto",
) -> torch.Tensor:
    """BERT's embedding block over packed texts: (T,) ids -> (T, hidden) in word's dtype.

    `max_len` is the longest text's length (a host int: it sizes the grid); it must not
    exceed the position table.
    """
    check_float("word", word)
    _check_cu(cu_seqlens)
    if max_len > position.shape[0]:
        raise ValueError(
            f"a text of {max_len} tokens is longer than the {position.shape[0]} positions of "
            "the model; split texts into windows first"
        )
    if not use_triton(backend, ids, word):
        return embed_layernorm_reference(ids, cu_seqlens, word, position, type0, weight, bias, eps)
    total, n = ids.shape[0], word.shape[1]
    out = torch.empty(total, n, device=word.device, dtype=word.dtype)
    texts = len(cu_seqlens) - 1
    if total == 0 or texts == 0:
        return out
    BT = 16 if word.is_cuda else 8
    _embed_ln_kernel[(texts, triton.cdiv(max(max_len, 1), BT))](
        ids, cu_seqlens, word, position, type0, weight, bias, out, n, eps,
        BT=BT, NP=next_pow2(n), num_warps=4,
    )  # fmt: skip
    return out


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, backend: str = "auto"
) -> torch.Tensor:
    """LayerNorm over the last dim of a contiguous (M, N) tensor, float32 inside, x's dtype."""
    check_float("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be (M, N), got shape {tuple(x.shape)}")
    if not use_triton(backend, x):
        return F.layer_norm(x, (x.shape[1],), weight, bias, eps)
    x = x.contiguous()
    M, N = x.shape
    out = torch.empty_like(x)
    BT = 8 if x.is_cuda else 4
    if M:
        _layer_norm_kernel[(triton.cdiv(M, BT),)](
            x, weight, bias, out, M, N, eps, BT=BT, NP=next_pow2(N), num_warps=4
        )
    return out


def segment_mean_reference(
    x: torch.Tensor, cu_seqlens: torch.Tensor, normalize: bool = False
) -> torch.Tensor:
    """Each text's mean row of packed (T, N) states, float32 (B, N); unit length if asked."""
    n = len(cu_seqlens) - 1
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seg = segment_ids(cu_seqlens, x.shape[0])
    sums = torch.zeros(n, x.shape[1], device=x.device).index_add_(0, seg, x.float())
    out = sums / lengths.clamp(min=1)[:, None].float()
    return F.normalize(out, dim=1) if normalize else out


def segment_mean(
    x: torch.Tensor, cu_seqlens: torch.Tensor, normalize: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """Mean pooling of packed states: (T, N) and cu_seqlens (B + 1,) -> float32 (B, N)."""
    check_float("x", x)
    _check_cu(cu_seqlens)
    if not use_triton(backend, x):
        return segment_mean_reference(x, cu_seqlens, normalize)
    x = x.contiguous()
    texts, n = len(cu_seqlens) - 1, x.shape[1]
    out = torch.empty(texts, n, device=x.device, dtype=torch.float32)
    if texts:
        _segment_mean_kernel[(texts,)](
            x, cu_seqlens, out, n, NORMALIZE=normalize, BT=16 if x.is_cuda else 4,
            NP=next_pow2(n), num_warps=4,
        )  # fmt: skip
    return out
