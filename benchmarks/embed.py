"""Embedder.encode vs SentenceTransformer.encode: same model, same 5-500 token inputs.

    python benchmarks/embed.py --n 10000             # CPU
    python benchmarks/embed.py --device cuda --n 10000 --model-dir DIR --random-init
On a machine without the MiniLM package, --model-dir points at a copy of its config and
tokenizer files; --random-init fills the same architecture with seeded random weights
(speed and output agreement do not depend on the weight values).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, print_table, timed, write_results  # noqa: E402


def make_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 5-500 tokens built from the bundled BBC sample's real sentences."""
    from toolkit.datasets import sample_corpus

    df = sample_corpus()
    words = " ".join((df["title"] + ". " + df["summary"]).tolist()).split()
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(4.0, 0.9, n), 4, 380).astype(int)  # words ~ 1.3 tokens
    starts = rng.integers(0, len(words) - 400, n)
    return [" ".join(words[s : s + k]) for s, k in zip(starts, lengths)]


def prepare_random_model(model_dir: Path) -> None:
    """Write seeded random weights for the config in model_dir (if it has none)."""
    import torch
    from transformers import AutoConfig, AutoModel

    if any(model_dir.glob("*.safetensors")) or (model_dir / "pytorch_model.bin").exists():
        return
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    model.save_pretrained(model_dir)


def matmul_rate(device: str, dtype_name: str = "float16") -> float:
    """Measured dense matrix-product rate (FLOP/s) of this device: 8192^3, mean of 10."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _, t = timed(lambda: [a @ b for _ in range(10)], device.startswith("cuda"))
    return 10 * 2 * n**3 / t


def model_side(ours, texts: list[str], cuda: bool) -> dict:
    """Token ids to vectors alone: texts tokenized first, then only the packed forward timed."""
    import torch

    from toolkit.embed.pipeline import run_packed, tokenize_chunk, tokenized_chunks

    args = (ours.window, ours.overlap, ours.prefix_ids, ours.suffix_ids, True)
    tok = ours.packed.tokenizer
    chunks, t_tok = timed(lambda: list(tokenized_chunks(tok, texts, *args)))
    tokens = int(sum(c.lengths.sum() for c in chunks))
    part = texts[: max(1, len(texts) // 10)]  # one thread on a tenth, scaled to the whole
    one, t_part = timed(lambda: tokenize_chunk(tok, part, 0, *args))
    t_tok1 = t_part * tokens / max(int(one.lengths.sum()), 1)

    def run() -> None:
        with torch.inference_mode():
            run_packed(
                ours.packed.model,
                iter(chunks),
                ours.dim,
                ours.device,
                ours.token_budget,
                ours.max_rows,
            )

    run()  # warm: allocator, kernels
    _, t = timed(run, cuda)
    return {
        "tokens": tokens,
        "seconds": t,
        "tokenize_threads_s": t_tok,
        "tokenize_1thread_s": t_tok1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", default=None, help="sentence-transformers folder")
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--quick", action="store_true", help="n=300")
    ap.add_argument("--skip-fp16-peer", action="store_true")
    ap.add_argument("--skip-padded", action="store_true", help="no row for packed=False")
    args = ap.parse_args()
    n = 300 if args.quick else args.n

    import torch
    from sentence_transformers import SentenceTransformer

    from toolkit.embed import TransformerEmbedder, default_model_path

    model_dir = Path(args.model_dir) if args.model_dir else default_model_path()
    if args.random_init:
        prepare_random_model(model_dir)
    texts = make_texts(n)
    cuda = args.device.startswith("cuda")
    ours = TransformerEmbedder(model_dir, args.device, name="all-MiniLM-L6-v2")
    peer = SentenceTransformer(str(model_dir), device=args.device)
    peer.float()
    tokens = ours.count_tokens(texts)
    warm = texts[:256]
    ours.encode(warm, long_text="truncate", progress=False)
    peer.encode(warm)
    # sentence-transformers truncates at max_seq_length: compare on the same work
    a, t_ours = timed(lambda: ours.encode(texts, long_text="truncate", progress=False), cuda)
    b, t_peer = timed(lambda: peer.encode(texts, normalize_embeddings=True), cuda)
    cos = (a * b).sum(1)

    def row(method: str, seconds: float) -> dict:
        return {
            "method": method,
            "seconds": seconds,
            "texts/s": n / seconds,
            "tokens/s": tokens / seconds,
            "vs ST default": t_peer / seconds,
        }

    rows = [
        row("loom Embedder.encode", t_ours),
        row("SentenceTransformer.encode (defaults)", t_peer),
    ]
    extra: dict = {}
    if ours.packed is not None and not args.skip_padded:
        ours_padded = TransformerEmbedder(model_dir, args.device, packed=False)
        ours_padded.encode(warm, long_text="truncate", progress=False)
        _, t_pad = timed(
            lambda: ours_padded.encode(texts, long_text="truncate", progress=False), cuda
        )
        rows.append(row("loom, padded path (packed=False)", t_pad))
    if ours.packed is not None:
        side = model_side(ours, texts, cuda)
        rate = matmul_rate(args.device)
        flops_per_token = 2 * sum(
            p.numel() for name, p in ours.model.named_parameters() if "embeddings" not in name
        )
        model_tps = side["tokens"] / side["seconds"]
        extra = {
            "model_side_tokens_per_s": model_tps,
            "model_side_seconds": side["seconds"],
            "tokenize_threads_seconds": side["tokenize_threads_s"],
            "tokenize_one_thread_seconds": side["tokenize_1thread_s"],
            "matmul_flops_per_s_fp16": rate,
            "linear_flops_per_token": flops_per_token,
            "fraction_of_matmul_rate": model_tps * flops_per_token / rate,
            "token_budget": ours.token_budget,
        }
        packed_model = ours.packed.model
        if getattr(packed_model, "fused_glue", False):  # the same with PyTorch's glue ops
            packed_model.fused_glue = False
            plain = model_side(ours, texts, cuda)
            packed_model.fused_glue = True
            extra["model_side_tokens_per_s_torch_glue"] = plain["tokens"] / plain["seconds"]
        print(
            f"model side (token ids -> vectors, packed fp16): {model_tps / 1e6:.2f}M tokens/s; "
            f"{model_tps * flops_per_token / 1e12:.0f} TFLOP/s in the linear layers = "
            f"{extra['fraction_of_matmul_rate']:.1%} of the measured fp16 matmul rate "
            f"({rate / 1e12:.0f} TFLOP/s); tokenization alone {side['tokenize_threads_s']:.2f}s "
            f"on threads, {side['tokenize_1thread_s']:.2f}s on one (from a tenth)"
        )
        if "model_side_tokens_per_s_torch_glue" in extra:
            print(
                "model side with PyTorch's glue (embeddings, LayerNorm, pooling) instead of "
                f"kernels.bert_ops: {extra['model_side_tokens_per_s_torch_glue'] / 1e6:.2f}M"
            )
    if cuda and not args.skip_fp16_peer:
        peer.half()
        peer.encode(warm, batch_size=256)
        c, t_peer16 = timed(
            lambda: peer.encode(texts, batch_size=256, normalize_embeddings=True), cuda
        )
        rows.append(row("SentenceTransformer.encode fp16, batch 256", t_peer16))
        extra["speedup_vs_st_fp16_b256"] = t_peer16 / t_ours
        extra["cosine_min_vs_st_fp16"] = float((a * c).sum(1).min())
        del c
    print(f"\n{n} texts, {tokens} tokens (5-500 per text), device {device_name(args.device)}")
    print_table(rows)
    ratio = t_peer / t_ours
    print(
        f"speed-up vs sentence-transformers: {ratio:.2f}x; cosine min {cos.min():.5f} "
        f"mean {cos.mean():.6f}"
    )
    path = write_results(
        "embed",
        args.device,
        {
            "n": n,
            "tokens": tokens,
            "rows": rows,
            "speedup": ratio,
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
            "random_init": bool(args.random_init),
            "torch": torch.__version__,
            **extra,
            "notes": "loom: on CUDA, tokenized ahead on threads, packed (unpadded) fp16 BERT "
            "forward with varlen flash attention; on CPU length-sorted padded batches; "
            "peer: SentenceTransformer.encode defaults (batch 32, fp32) and fp16 batch 256",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
