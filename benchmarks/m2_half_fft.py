"""Issue 24 on the GPU: M2-BERT's half-precision FFT pipeline.

    PYTHONPATH=. python benchmarks/m2_half_fft.py > benchmarks/results/encoders-m2-half-fft-<gpu>.jsonl

1. accuracy of `gated_long_conv` (float16 FFTs vs float32 FFTs vs the float64 reference) on
   a real random-weight M2-BERT-80M layer (its filters, LayerNorm'd input) at L = 2k/8k/32k,
   plus the float16 headroom (max |scaled rfft| / 65504) and a 16x-larger-input stress case;
2. the mixer block alone at 2k x 16 (ms, both precisions) and its top kernels;
3. the whole M2-BERT-80M forward (bf16 autocast) at 2k x 16, 8k x 4, 32k x 1 with the
   half pipeline on ("auto") and off ("float32"), and BERT-base SDPA, same run, ms medians;
4. the parity-fixture agreement (bench_agreement: CPU fp32 vs GPU fp32 / bf16).
Each step is in try/except: one failure prints {"step": ..., "error": ...} and goes on.
"""

import sys
import warnings

sys.path.insert(0, ".")
warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.encoders import BERT_BASE, bench_agreement, bert_model, m2_model  # noqa: E402
from benchmarks.gpu_timing import StepLog, cuda_event_ms  # noqa: E402
from kernels import m2_mixer  # noqa: E402
from kernels.m2_mixer import (  # noqa: E402
    fft_signal_dtype,
    gated_long_conv,
    gated_long_conv_reference,
    half_fft_scale,
    short_conv_reference,
)
from toolkit.encoders.m2bert import MonarchMixerSequenceMixing  # noqa: E402

DEV = "cuda"
LOG = StepLog()
emit, guarded = LOG.emit, LOG.guarded


def errs(got, ref):
    got, ref = got.double(), ref.double()
    d = (got - ref).abs()
    cos = F.cosine_similarity(got.flatten(0, 1), ref.flatten(0, 1), dim=-1)
    return {
        "max_abs": float(d.max()),
        "max_rel": float(d.max() / ref.abs().max()),
        "norm_rel": float((got - ref).norm() / ref.norm()),
        "min_cos": float(cos.min()),
        "finite": bool(torch.isfinite(got).all()),
    }


def layer_inputs(L, B, gain=1.0):
    """A random-weight M2-BERT-80M layer's mixer and its inputs (u LayerNorm'd, float32)."""
    m2 = m2_model(L, DEV, layers=1)
    mix = m2.encoder.layer[0].attention
    torch.manual_seed(1)
    u = F.layer_norm(torch.randn(B, L, 768, device=DEV), (768,)) * gain
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        z = mix.in_linear(u)
    return mix, u, z


def step_accuracy(L, B, gain=1.0):
    mix, u, z = layer_inputs(L, B, gain)
    with torch.inference_mode():
        k1, k2 = mix.filter_fn.filter(L), mix.filter_fn2.filter(L)
        d1, d2 = mix.filter_fn.bias, mix.filter_fn2.bias
        w, b = mix.short_filter.weight, mix.short_filter.bias
        spec = mix.spectra(L)
        auto = fft_signal_dtype("auto", z.dtype, z.device, L)
        o16 = gated_long_conv(z, u, spec, d1, d2, w, b, fft_precision="float16")
        o32 = gated_long_conv(z, u, spec, d1, d2, w, b, fft_precision="float32")
        ref = gated_long_conv_reference(
            z.double(), u.double(), k1.double(), d1.double(), k2.double(), d2.double(),
            w.double(), b.double(),
        )  # fmt: skip
        # headroom: the scaled signals' rfft, largest magnitude vs float16's 65504
        uc = short_conv_reference(z.float().transpose(1, 2), w, b)
        x1, _, v = uc.chunk(3, dim=1)
        s = half_fft_scale(L)
        peak = max(
            float(torch.fft.rfft(x1 * v * s, n=2 * L).abs().max()),
            float(torch.fft.rfft(u.transpose(1, 2) * s, n=2 * L).abs().max()),
        )
    emit(
        "accuracy", L=L, B=B, input_gain=gain, auto_fft=str(auto), scale=s,
        half_vs_f64=errs(o16, ref), f32_vs_f64=errs(o32, ref), half_vs_f32=errs(o16, o32),
        rfft_peak=peak, headroom=65504 / peak, max_abs_signal=float((x1 * v).abs().max()),
        mean_abs_signal_max=float((x1 * v).abs().mean(-1).max()),
    )  # fmt: skip


def step_block(L=2048, B=16):
    mix, u, z = layer_inputs(L, B)
    with torch.inference_mode():
        spec = mix.spectra(L)
        args = (z, u, spec, mix.filter_fn.bias, mix.filter_fn2.bias, mix.short_filter.weight,
                mix.short_filter.bias)  # fmt: skip
        row = {}
        for p in ("float32", "float16", "float32", "float16"):
            row.setdefault(p, []).append(
                cuda_event_ms(lambda p=p: gated_long_conv(*args, fft_precision=p), reps=20)
            )
        emit("block_ms", L=L, B=B, **{p: min(v) for p, v in row.items()})
        from torch.profiler import ProfilerActivity, profile

        for p in ("float32", "float16"):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    gated_long_conv(*args, fft_precision=p)
                torch.cuda.synchronize()
            ev = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
            emit(
                "block_profile", L=L, B=B, fft=p,
                kernels=[[e.key[:70], e.count, round(e.self_device_time_total / 5000, 3)]
                         for e in ev[:8]],
            )  # fmt: skip


def step_model(L, B):
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(1000, 30000, (B, L), device=DEV)
    m2 = m2_model(L, DEV)

    def run():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return m2(ids)[0]

    times, outs = {"float32": [], "auto": []}, {}
    for p in ("float32", "auto", "float32", "auto"):
        MonarchMixerSequenceMixing.fft_precision = p
        times[p].append(cuda_event_ms(run, reps=7 if L < 32768 else 5))
        with torch.inference_mode():
            outs[p] = run().float()
    MonarchMixerSequenceMixing.fft_precision = "auto"
    peak = torch.cuda.max_memory_allocated() / 2**30
    m2 = None  # noqa: F841 - frees the model before BERT-base is built
    torch.cuda.empty_cache()
    bert = bert_model(dict(BERT_BASE, num_hidden_layers=12), L, DEV)

    def run_bert():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return bert(input_ids=ids).last_hidden_state

    t_bert = cuda_event_ms(run_bert, reps=7 if L < 32768 else 5)
    half, f32 = min(times["auto"]), min(times["float32"])
    emit(
        "model", L=L, B=B, m2_half_ms=half, m2_f32fft_ms=f32, bert_base_sdpa_ms=t_bert,
        all_ms=times, half_vs_bert=t_bert / half, f32_vs_bert=t_bert / f32,
        out_half_vs_f32=errs(outs["auto"], outs["float32"]), peak_gib=peak,
    )  # fmt: skip


def step_profile(L=2048, B=16):
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(1000, 30000, (B, L), device=DEV)
    m2 = m2_model(L, DEV)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        m2(ids)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            m2(ids)
            torch.cuda.synchronize()
    ev = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
    emit(
        "model_profile_half", L=L, B=B,
        device_total_ms=sum(e.self_device_time_total for e in ev) / 1000,
        kernels=[[e.key[:70], e.count, round(e.self_device_time_total / 1000, 3)] for e in ev[:14]],
    )  # fmt: skip


def main():
    emit("env", torch=torch.__version__, gpu=torch.cuda.get_device_name(),
         half_fft=str(m2_mixer.HALF_FFT))  # fmt: skip
    for L, B in [(2048, 2), (8192, 1), (32768, 1)]:
        guarded(f"accuracy L={L}", lambda L=L, B=B: step_accuracy(L, B))
    guarded("accuracy stress", lambda: step_accuracy(32768, 1, gain=16.0))
    guarded("block_ms", step_block)
    for L, B in [(2048, 16), (8192, 4), (32768, 1)]:
        guarded(f"model L={L}", lambda L=L, B=B: step_model(L, B))
    guarded("model_profile_half", step_profile)
    guarded("agreement", lambda: [emit("agreement", **r) for r in bench_agreement(DEV)])
    emit("done")


if __name__ == "__main__":
    main()
