"""Issue 24 on the GPU: M2-BERT-80M's forward replayed from a CUDA graph per bucket.

    PYTHONPATH=. python -m benchmarks.m2_graphs > benchmarks/results/encoders-m2-graphs-<gpu>.jsonl

For 2k x 16, 8k x 4, 32k x 1 (bf16 autocast, random weights, the fused inference path):
the eager forward and the same forward through `toolkit.encoders.graphs.GraphedForward`,
interleaved (eager, graph, eager, graph; CUDA-event medians), their largest difference, the
capture time, and BERT-base with SDPA as the peer in the same run. Then the
`M2BertEmbedder` end to end with cuda_graphs on and off on the same texts (a tiny
checkpoint written here: the embedder's bucket padding and recapture logic, not speed).
One JSON object per line; a failing step prints {"step": ..., "error": ...} and the run goes on.
"""

from __future__ import annotations

import tempfile
import time
import warnings

import torch

from benchmarks.encoders import BERT_BASE, bert_model, m2_model
from benchmarks.gpu_timing import StepLog, cuda_event_ms
from toolkit.encoders.graphs import GraphedForward
from toolkit.encoders.m2bert.mixer import weights_key

warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
DEV = "cuda"
LOG = StepLog()
emit, guarded = LOG.emit, LOG.guarded


def step_model(L: int, B: int) -> None:
    ids = torch.randint(1000, 30000, (B, L), device=DEV)
    m2 = m2_model(L, DEV)

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return m2(x)[1].float()

    graphed = GraphedForward(eager, lambda: weights_key(m2))
    with torch.inference_mode():
        t = time.perf_counter()
        g_out = graphed(ids)
        torch.cuda.synchronize()
        capture_s = time.perf_counter() - t
        e_out = eager(ids)
    reps = 9 if L < 32768 else 5
    times: dict[str, list[float]] = {"eager": [], "graph": []}
    for _ in range(2):
        times["eager"].append(cuda_event_ms(lambda: eager(ids), reps))
        times["graph"].append(cuda_event_ms(lambda: graphed(ids), reps))
    m2 = graphed = None  # noqa: F841 - frees the model before BERT-base is built
    torch.cuda.empty_cache()
    bert = bert_model(dict(BERT_BASE, num_hidden_layers=12), L, DEV)

    def run_bert() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return bert(input_ids=ids).last_hidden_state

    t_bert = cuda_event_ms(run_bert, reps)
    e, g = min(times["eager"]), min(times["graph"])
    emit(
        "model", L=L, B=B, eager_ms=e, graph_ms=g, graph_speedup=e / g, all_ms=times,
        bert_base_sdpa_ms=t_bert, graph_vs_bert=t_bert / g, eager_vs_bert=t_bert / e,
        capture_s=round(capture_s, 2), eager_failed=bool(getattr(graphed, "eager", False)),
        max_abs_diff=float((g_out - e_out).abs().max()),
    )  # fmt: skip


def step_embedder() -> None:
    import shutil

    from toolkit.embed.transformer import default_model_path
    from toolkit.encoders.m2bert import M2BertConfig, M2BertEmbedder, M2BertModel
    from toolkit.encoders.m2bert.checkpoint import save_m2bert

    tiny = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=128,
        long_conv_l_max=128,
        hyena_filter_order=16,
        hyena_emb_dim=5,
        monarch_mlp_nblocks=4,
    )  # fmt: skip (tests/m2_tiny.py's TINY, its M2BertConfig defaults left out)
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        save_m2bert(M2BertModel(M2BertConfig(**tiny)), d)
        shutil.copy(default_model_path() / "vocab.txt", f"{d}/vocab.txt")
        texts = [f"document {i} " + "word " * (i % 50) for i in range(45)]
        on = M2BertEmbedder(d, device=DEV, token_budget=128 * 16, cuda_graphs=True)
        off = M2BertEmbedder(d, device=DEV, token_budget=128 * 16)
        a, b = on.encode(texts), off.encode(texts)
        emit("embedder", texts=len(texts), batch_rows=on.batch_rows(),
             captures=on.graphs.captures, eager_fallback=on.graphs.eager,
             max_abs_diff=float(abs(a - b).max()))  # fmt: skip


def main() -> None:
    emit("env", torch=torch.__version__, gpu=torch.cuda.get_device_name())
    for L, B in [(2048, 16), (8192, 4), (32768, 1)]:
        guarded(f"model L={L}", lambda L=L, B=B: step_model(L, B))
    guarded("embedder", step_embedder)
    emit("done")


if __name__ == "__main__":
    main()
