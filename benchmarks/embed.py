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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", default=None, help="sentence-transformers folder")
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--quick", action="store_true", help="n=300")
    args = ap.parse_args()
    n = 300 if args.quick else args.n

    from sentence_transformers import SentenceTransformer

    from toolkit.embed import TransformerEmbedder, default_model_path

    model_dir = Path(args.model_dir) if args.model_dir else default_model_path()
    if args.random_init:
        prepare_random_model(model_dir)
    texts = make_texts(n)
    cuda = args.device.startswith("cuda")
    ours = TransformerEmbedder(model_dir, args.device, name="all-MiniLM-L6-v2")
    peer = SentenceTransformer(str(model_dir), device=args.device)
    tokens = ours.count_tokens(texts)
    warm = texts[:64]
    ours.encode(warm, long_text="truncate")
    peer.encode(warm)
    # sentence-transformers truncates at max_seq_length: compare on the same work
    a, t_ours = timed(lambda: ours.encode(texts, long_text="truncate"), cuda)
    b, t_peer = timed(lambda: peer.encode(texts, normalize_embeddings=True), cuda)
    cos = (a * b).sum(1)
    _, t_tok = timed(lambda: ours._pieces(texts, "truncate"))  # where the time goes
    print(f"of which tokenization: {t_tok:.2f}s")
    rows = [
        {
            "method": "loom Embedder.encode",
            "seconds": t_ours,
            "texts/s": n / t_ours,
            "tokens/s": tokens / t_ours,
        },
        {
            "method": "SentenceTransformer.encode",
            "seconds": t_peer,
            "texts/s": n / t_peer,
            "tokens/s": tokens / t_peer,
        },
    ]
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
            "tokenize_seconds": t_tok,
            "notes": "loom: length-sorted token-budget batches, fp16 autocast on GPU; "
            "peer: SentenceTransformer.encode defaults (batch 32, fp32)",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
