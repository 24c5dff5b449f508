"""CPU path of the kernels: references against naive definitions, dispatch, input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import (
    blockdiag_matmul,
    fft_conv,
    fft_conv_reference,
    linear_attention,
    linear_attention_reference,
    monarch_matmul,
    monarch_matmul_bmm,
    monarch_matmul_reference,
    sliding_window_attention,
    taylor_feature_map,
)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def naive_linear_attention(q, k, v, phi, causal, eps=1e-6):
    a = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        a = a.tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


def test_taylor_map_is_exp_taylor_series():
    q, k = torch.randn(5, 16, dtype=torch.float64), torch.randn(7, 16, dtype=torch.float64)
    s = q @ k.T / 4.0
    got = taylor_feature_map(q) @ taylor_feature_map(k).T
    assert taylor_feature_map(q).shape[-1] == 273
    torch.testing.assert_close(got, 1 + s + s * s / 2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fm", ["taylor", "hedgehog"])
def test_linear_attention_cpu_matches_quadratic_form(fm, causal):
    torch.manual_seed(0)
    B, H, N, D, E = 2, 3, 70, 8, 5  # N not a multiple of the chunk size
    q, k = torch.randn(B, H, N, D), torch.randn(B, H, N, D)
    v = torch.randn(B, H, N, E)
    w, b = torch.randn(H, D, 6) / 3, torch.randn(H, 6)
    out = linear_attention(q, k, v, fm, causal, hedgehog_weight=w, hedgehog_bias=b)
    assert out.shape == (B, H, N, E) and out.dtype == torch.float32
    if fm == "taylor":

        def phi(x):
            return taylor_feature_map(x)
    else:

        def phi(x):
            z = torch.einsum("bhnd,hdf->bhnf", x, w.double()) + b.double()[None, :, None]
            return torch.cat([z.softmax(-1), (-z).softmax(-1)], -1)

    want = naive_linear_attention(q.double(), k.double(), v.double(), lambda x: phi(x), causal)
    assert _rel(out, want) < 1e-5


def test_linear_attention_callable_feature_map_and_grads():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 20, 4, requires_grad=True) for _ in range(3))
    out = linear_attention(q, k, v, feature_map=F.elu, causal=True)  # elu+... any positive-ish map
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_linear_attention_bad_inputs():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="hedgehog_weight"):
        linear_attention(q, q, q, "hedgehog")
    with pytest.raises(ValueError, match="same shape"):
        linear_attention(q, torch.randn(1, 2, 9, 4), q)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, q, q, "cosine")
    with pytest.raises(ValueError, match="project q, k"):
        big = torch.randn(1, 1, 4, 128)
        linear_attention(big, big, big)
    with pytest.raises(TypeError, match="floating"):
        linear_attention(q.long(), q.long(), q.long())
    with pytest.raises(RuntimeError, match="backend='triton'"):
        linear_attention(q, q, q, backend="triton")  # CPU tensors, no interpreter


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_refuses_mixed_dtypes_and_bad_eps(causal):
    # the reference would promote silently (float32 out of a bfloat16 k) and the Triton path
    # fail to compile: both refuse up front, naming the odd input and the fix
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(TypeError, match=r"q float32, k bfloat16, v float32.*k = k\.to\(q\.dtype\)"):
        linear_attention(q, q.bfloat16(), q, causal=causal)
    with pytest.raises(TypeError, match=r"v = v\.to\(q\.dtype\)"):
        linear_attention(q.half(), q.half(), q, causal=causal)
    for eps in (-1e-6, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            linear_attention(q, q, q, causal=causal, eps=eps)
    assert linear_attention(q, q, q, causal=causal, eps=0.0).isfinite().all()  # Taylor: > 0


def test_sliding_window_refuses_mixed_dtypes_and_takes_empty_n():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(TypeError, match=r"k = k\.to\(q\.dtype\)"):
        sliding_window_attention(q, q.half(), q, window=4)
    empty = q[:, :, :0]
    for causal in (True, False):
        out = sliding_window_attention(empty, empty, empty, window=4, causal=causal)
        assert out.shape == (1, 2, 0, 4) and out.dtype == q.dtype


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [1, 6, 50])
def test_sliding_window_cpu_matches_masked_softmax(window, causal):
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, 37, 8, dtype=torch.float64) for _ in range(3))
    i, j = torch.arange(37)[:, None], torch.arange(37)[None, :]
    ok = (i - j < window) & ((j <= i) if causal else (j - i < window))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=ok)
    got = sliding_window_attention(q, k, v, window, causal)
    torch.testing.assert_close(got, want)


def m2_version3(x, w1, w2):
    """M2's dense reference (block_diag + explicit permutations)."""
    l, s, _ = w2.shape  # noqa: E741
    out1 = F.linear(x, torch.block_diag(*w1.unbind(0)))
    out1 = out1.reshape(x.shape[0], -1, l).transpose(1, 2).reshape(x.shape[0], -1)
    out2 = F.linear(out1, torch.block_diag(*w2.unbind(0)))
    return out2.reshape(x.shape[0], l, s).transpose(1, 2).reshape(x.shape[0], -1)


@pytest.mark.parametrize("shape", [(4, 4, 4, 4, 4, 4), (3, 6, 7, 6, 5, 3), (4, 8, 8, 4, 8, 8)])
def test_monarch_cpu_matches_m2_dense_reference(shape):
    k, q, p, l, s, r = shape  # noqa: E741
    torch.manual_seed(3)
    x = torch.randn(9, k * p, dtype=torch.float64)
    w1, w2 = torch.randn(k, q, p, dtype=torch.float64), torch.randn(l, s, r, dtype=torch.float64)
    want = m2_version3(x, w1, w2)
    torch.testing.assert_close(monarch_matmul(x, w1, w2), want)
    torch.testing.assert_close(monarch_matmul_reference(x, w1, w2), want)
    torch.testing.assert_close(monarch_matmul_bmm(x, w1, w2), want)
    # leading batch dims are kept
    assert monarch_matmul(x.reshape(3, 3, -1), w1, w2).shape == (3, 3, l * s)


def test_monarch_square_is_a_dense_linear_map_and_differentiable():
    torch.manual_seed(4)
    n, m = 16, 4
    w1 = torch.randn(m, m, m, requires_grad=True)
    w2 = torch.randn(m, m, m, requires_grad=True)
    dense = monarch_matmul(torch.eye(n), w1, w2)  # rows: images of the unit vectors
    x = torch.randn(5, n)
    torch.testing.assert_close(monarch_matmul(x, w1, w2), x @ dense, rtol=1e-4, atol=1e-4)
    monarch_matmul(x, w1, w2).square().sum().backward()
    assert w1.grad.abs().sum() > 0 and w2.grad.abs().sum() > 0


def test_monarch_and_blockdiag_bad_shapes():
    with pytest.raises(ValueError, match="k\\*p"):
        monarch_matmul(torch.randn(2, 15), torch.randn(4, 4, 4), torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="l\\*r"):
        monarch_matmul(torch.randn(2, 16), torch.randn(4, 4, 4), torch.randn(4, 4, 3))
    with pytest.raises(ValueError, match="nblocks"):
        blockdiag_matmul(torch.randn(2, 10), torch.randn(4, 3, 3))


def test_blockdiag_matches_dense_block_diag():
    x, w = torch.randn(3, 2, 12), torch.randn(4, 5, 3)
    want = x @ torch.block_diag(*w.unbind(0)).T
    torch.testing.assert_close(blockdiag_matmul(x, w), want, rtol=1e-5, atol=1e-5)


def direct_conv(u, k, d, gate, pre):
    """Definition: y[t] = sum_s k[(t - s) mod 2L] v[s] (zero beyond len(k)), then skip, gate."""
    B, H, L = u.shape
    v = u * pre
    kk = F.pad(k, (0, 2 * L - k.shape[-1]))
    idx = (torch.arange(L)[:, None] - torch.arange(L)[None, :]) % (2 * L)
    T = kk[:, idx]  # (H, L, L) Toeplitz / circulant blocks
    y = torch.einsum("hts,bhs->bht", T, v)
    return (y + v * d[:, None]) * gate


@pytest.mark.parametrize("L,Lk", [(1, 1), (9, 9), (33, 66), (20, 7)])
def test_fft_conv_cpu_matches_direct_convolution(L, Lk):
    torch.manual_seed(5)
    u = torch.randn(2, 3, L, dtype=torch.float64)
    k = torch.randn(3, Lk, dtype=torch.float64)
    d = torch.randn(3, dtype=torch.float64)
    g, pg = torch.randn_like(u), torch.randn_like(u)
    torch.testing.assert_close(fft_conv(u, k, d, g, pg), direct_conv(u, k, d, g, pg))


def test_fft_conv_matches_m2_fftconv_ref_semantics():
    """M2: out = irfft(rfft(u,2L) * rfft(k,2L)/2L, norm='forward')[:L] + u * D[None,:,None]."""
    torch.manual_seed(6)
    u = torch.randn(2, 4, 50).to(torch.bfloat16)
    k = torch.randn(4, 50)
    D = torch.randn(1, 4, 1)
    n = 100
    y = torch.fft.irfft(
        torch.fft.rfft(u.float(), n=n) * (torch.fft.rfft(k, n=n) / n), n=n, norm="forward"
    )[..., :50]
    want = (y + u * D).to(torch.bfloat16)
    got = fft_conv(u, k, D)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fft_conv_reference(u, k, D), want)


def test_fft_conv_bad_inputs():
    u = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match="2L"):
        fft_conv(u, torch.randn(3, 21))
    with pytest.raises(ValueError, match="k must be"):
        fft_conv(u, torch.randn(4, 10))
    with pytest.raises(ValueError, match="gate"):
        fft_conv(u, torch.randn(3, 10), gate=torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="d_bias"):
        fft_conv(u, torch.randn(3, 10), d_bias=torch.randn(5))
    # the Triton-only arguments are checked on every path (a typo on the CPU is not ignored)
    with pytest.raises(ValueError, match="method='nope'"):
        fft_conv(u, torch.randn(3, 10), method="nope")
    with pytest.raises(ValueError, match="precision='fp32'"):
        fft_conv(u, torch.randn(3, 10), precision="fp32")
    with pytest.raises(ValueError, match="fft_precision='half'"):
        fft_conv(u[:0], torch.randn(3, 10), fft_precision="half")


@pytest.mark.parametrize("shape", [(0, 3, 10), (2, 0, 10), (2, 3, 0)])
def test_fft_conv_empty_inputs(shape):
    # FFT libraries refuse size-0 transforms; an empty batch, channel or length is no error
    u = torch.randn(*shape, requires_grad=True)
    k = torch.randn(shape[1], shape[2])
    out = fft_conv(u, k, d_bias=torch.randn(shape[1]))
    assert out.shape == shape
    out.sum().backward()
    assert u.grad.shape == shape


def test_public_api():
    for name in ("linear_attention", "sliding_window_attention", "monarch_matmul", "fft_conv"):
        assert callable(getattr(kernels, name))
        assert callable(getattr(kernels, name + "_reference"))
    assert math.isfinite(float(linear_attention_reference(*(torch.randn(1, 1, 3, 2),) * 3).sum()))


@pytest.mark.parametrize("fm", ["taylor", "hedgehog"])
def test_key_mask_equals_dropping_the_padding(fm):
    """Padded keys (key_mask == 0) must not change the real tokens' outputs."""
    torch.manual_seed(7)
    B, H, N, n, D = 2, 2, 30, 19, 8
    q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(3))
    w = torch.randn(H, D, 6, dtype=torch.float64)
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[:, :n] = True
    got = linear_attention(q, k, v, fm, hedgehog_weight=w, key_mask=mask)[:, :, :n]
    want = linear_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], fm, hedgehog_weight=w)
    torch.testing.assert_close(got, want)
    got = sliding_window_attention(q, k, v, 7, causal=False, key_mask=mask)[:, :, :n]
    want = sliding_window_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], 7, causal=False)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="key_mask"):
        linear_attention(q, k, v, key_mask=mask[:, :5])


def test_taylor_forward_launch_rules_fill_the_gpu_and_grow_with_n():
    """Non-causal Taylor forward (kernels/linear_attn_fwd.py), launch rules on a 132-SM GPU:
    state splits and output runs tile the sequence exactly; the modelled time (rounds of
    resident programs x (rows + fixed cost)) never drops at a longer sequence (B=1 took
    0.27 ms at 2k and 0.12 ms at 4k on the H200 before); the last round is not left mostly
    empty (the old 2-waves rule ran 288 state programs at B=8: 2.2 rounds of 132); at long N
    each output program walks many row blocks, reading and casting the state once."""
    from kernels.linear_attn import CONFIG
    from kernels.linear_attn_fwd import out_runs, state_splits

    sms = 132
    for name, rule in (("taylor_state", state_splits), ("taylor_out", out_runs)):
        cfg = CONFIG[name]
        block, slots = cfg["BLOCK"], cfg["SLOTS_PER_SM"] * sms
        for heads in (12, 96):  # B = 1 and 8 at H = 12
            seen = 0
            for n in [1000, 1024, 2048, 2049, 4096, 8192, 8193, 16384, 32768, 65536]:
                runs, rows = rule(n, heads, block, cfg, sms)
                assert rows % block == 0 and (runs - 1) * rows < n <= runs * rows
                rounds = -(-heads * runs // slots)
                t = rounds * (rows + cfg["COST_ROWS"])
                assert t >= seen, (name, heads, n, runs, rows)
                seen = t
                if heads * -(-n // max(block, cfg["MIN_ROWS"])) >= slots:  # enough to fill it
                    assert heads * runs >= 0.7 * rounds * slots, (name, heads, n, runs)
    runs, rows = out_runs(65536, 96, 64, CONFIG["taylor_out"], sms)
    assert rows >= 16 * 64
    # the interpreter (sms=None): two splits and runs of two blocks, so both paths run
    assert state_splits(37, 2, 16, CONFIG["taylor_state"], None) == (2, 32)
    assert out_runs(37, 2, 16, CONFIG["taylor_out"], None) == (2, 32)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 2, 0), (0, 2, 5), (2, 0, 5)])
def test_linear_attention_empty_inputs(causal, shape):
    """Zero tokens, batch or heads: an empty output of the right shape, and gradients."""
    B, H, N = shape
    q = torch.randn(B, H, N, 16, requires_grad=True)
    out = linear_attention(q, torch.randn(B, H, N, 16), torch.randn(B, H, N, 8), causal=causal)
    assert out.shape == (B, H, N, 8)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_hub_kernels_name_clash_gives_a_clear_error(monkeypatch):
    # transformers >= 5.25 runs `from kernels import CUDAProperties, ...` when HuggingFace's
    # `kernels` distribution is installed; Python finds loom's package under that name
    installed = kernels.hub_kernels_version
    monkeypatch.setattr(kernels, "hub_kernels_version", lambda: "0.19.1")
    with pytest.raises(ImportError, match=r"transformers<5\.25.*pip uninstall -y kernels"):
        exec("from kernels import CUDAProperties")
    with pytest.raises(AttributeError):  # submodules still import the normal way
        kernels.__getattr__("selfcheck")
    monkeypatch.setattr(kernels, "hub_kernels_version", lambda: None)
    with pytest.raises(ImportError, match="cannot import name"):
        exec("from kernels import CUDAProperties")
    assert installed() is None  # loom's install (transformers < 5.25) does not pull it in


def test_transformers_pinned_below_the_hub_kernels_dependency():
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    spec = next(d for d in deps["dependencies"] if d.startswith("transformers"))
    assert "<5.25" in spec
