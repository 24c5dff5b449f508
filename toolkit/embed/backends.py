"""Which forward pass runs a sentence-transformers encoder: PyTorch, or ONNX Runtime int8.

`load_transformer(..., backend=)` is what `get_embedder` calls for the default MiniLM and
local sentence-transformers folders:
- "torch": the PyTorch model (`TransformerEmbedder`), the reference.
- "onnx": the same model exported once to ONNX with int8 weights and per-token activation
  scales (`toolkit.embed.onnx_export`), run by ONNX Runtime on the CPU (`OnnxEmbedder`). A
  text's vector depends on that text alone, not on the texts batched with it.
- "auto" (the default): "onnx" on the CPU when its vectors agree with the torch ones on a
  fixed check sample (the 5th percentile of the per-text cosine >= `onnx_threshold`, 0.99),
  else "torch"; always "torch" on a GPU or where onnxruntime is not installed. The check runs
  once per model, recipe and onnxruntime version: its result is stored beside the export.
The default is $LOOM_EMBED_BACKEND, else `DEFAULT_BACKEND`; "torch" is the way back to the
reference vectors (docs/embedding.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.embed.base import Embedder
from toolkit.embed.onnx_export import (
    RECIPE,
    check_key,
    ensure_export,
    onnx_available,
    read_check,
    write_check,
)
from toolkit.embed.transformer import TransformerEmbedder
from toolkit.errors import LoomError
from toolkit.fingerprint import text_fingerprint

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
#: The backend when neither backend= nor $LOOM_EMBED_BACKEND says one.
DEFAULT_BACKEND = "auto"
#: The agreement "auto" asks of the ONNX vectors (5th percentile of the cosine to torch).
ONNX_THRESHOLD = 0.99

#: The fixed check sample: record keys, names, addresses and sentences of several lengths.
CHECK_TEXTS = [
    "john smith 12 main street sydney nsw 2000",
    "jane doe 4 bridge road melbourne vic 3000 19620314",
    "michaela neumann 8 stanley street miami 4220 qld",
    "coutts-smith, carla; 1 kerry place, alice springs 0870",
    "Deutsche Bahn AG",
    "Acme Corporation Ltd.",
    "Northern Steel Works GmbH",
    "Blue Sea Shipping Company",
    "ACME CORP",
    "apple inc",
    "Grünes Tal Molkerei",
    "Panadería Pan de Oro S.A.",
    "1600 Amphitheatre Parkway, Mountain View, CA 94043",
    "221B Baker Street London NW1 6XE",
    "Flat 3, 14 Queen's Road, Brighton BN1 3XE",
    "The committee approved the new budget for rail transport.",
    "Shares in the mining company fell sharply after the profit warning.",
    "The striker scored twice as the club won the cup final in extra time.",
    "A new vaccine trial showed strong results in older patients.",
    "The band announced a world tour starting in the spring.",
    "How do I reset my password?",
    "Where can I find the invoice for my last order?",
    "cheap flights to paris in may",
    "best pizza near me",
    "The quick brown fox jumps over the lazy dog.",
    "Error: connection refused while contacting the database server on port 5432.",
    "def add(a, b): return a + b",
    "SELECT name, count(*) FROM orders GROUP BY name",
    "Rotten Tomatoes: a charming, funny and heartfelt film with a superb cast.",
    "A tedious, overlong sequel that forgets everything that made the first one good.",
    "Patient presents with fever, cough and shortness of breath for three days.",
    "Invoice 2024-0915: 3 x widget A at 12.50 EUR, VAT 19%, total 44.63 EUR.",
    (
        "The central bank raised interest rates by a quarter point on Wednesday, its third "
        "increase this year, saying that inflation remained too high and that the labour "
        "market was still tight, while signalling that further rises were possible if prices "
        "kept climbing faster than wages over the coming months."
    ),
    (
        "Record linkage finds the rows of two tables that describe the same entity: a person, "
        "a company or a product, written with typos, abbreviations, missing fields and "
        "different conventions for names, dates and addresses in each source."
    ),
]


class OnnxEmbedder(TransformerEmbedder):
    """A sentence-transformers encoder whose forward pass is its int8 ONNX export.

    Tokenizer, token-budget batches and long-text windows are those of the torch embedder it
    is made from (`reference`); only `forward_ids` differs. Activations are quantized per
    token, so a text gets the same vector alone or in any batch. `model` stays the torch model
    (fine-tuning and other readers of it keep working). CPU only.
    threads: ONNX Runtime's intra-op threads (None: torch's thread count).
    """

    backend = "onnx"

    def __init__(
        self, reference: TransformerEmbedder, folder: str | os.PathLike, threads: int | None = None
    ) -> None:
        import onnxruntime as ort
        import torch

        if reference.device != "cpu":
            raise LoomError(
                f"the ONNX backend runs on the CPU, not {reference.device!r}: "
                "use device='cpu' or backend='torch'"
            )
        self.device = "cpu"
        self.path = reference.path
        self.name = reference.name
        self.model = reference.model
        self.tokenizer = reference.tokenizer
        self.max_length = reference.max_length
        self.dim = reference.dim
        self.onnx_path = Path(folder) / "model.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one clear message
            raise LoomError(
                f"cannot load the ONNX export {self.onnx_path}: {e}; delete its folder to "
                "export again"
            ) from e
        self._setup_batching(reference.token_budget, reference.overlap)

    def cache_key(self) -> str:
        """The torch key plus the recipe: int8 vectors never mix with torch ones in a cache."""
        return f"{super().cache_key()}/{RECIPE}"

    def forward_ids(self, ids: Any, mask: Any) -> Any:
        """Sentence vectors (B, dim) float32 for padded token ids and their mask (CPU tensors)."""
        import torch

        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def agreement(a: Embedder, b: Embedder, texts: list[str] | None = None) -> dict[str, float]:
    """The per-text cosine between two embedders' vectors: mean, min and 5th percentile."""
    texts = CHECK_TEXTS if texts is None else texts
    cos = np.sum(a.encode(texts, progress=False) * b.encode(texts, progress=False), axis=1)
    return {
        "mean": float(cos.mean()),
        "min": float(cos.min()),
        "p05": float(np.quantile(cos, 0.05)),
        "n": len(texts),
    }


def check_backend(backend: str | None, threshold: float) -> str:
    """`backend` resolved ($LOOM_EMBED_BACKEND, then DEFAULT_BACKEND) and validated."""
    chosen = backend or os.environ.get("LOOM_EMBED_BACKEND") or DEFAULT_BACKEND
    if chosen not in BACKENDS:
        where = "backend" if backend else "LOOM_EMBED_BACKEND"
        raise LoomError(f"{where}={chosen!r}: use one of {BACKENDS}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise LoomError(f"onnx_threshold={threshold!r}: give a cosine in (0, 1], e.g. 0.99")
    if not 0 < threshold <= 1:
        raise LoomError(f"onnx_threshold={threshold}: give a cosine in (0, 1], e.g. 0.99")
    return chosen


def load_transformer(
    path: str | os.PathLike,
    device: str,
    name: str,
    backend: str | None = None,
    onnx_threshold: float = ONNX_THRESHOLD,
    onnx_cache: str | os.PathLike | None = None,
    **kwargs: Any,
) -> TransformerEmbedder:
    """A sentence-transformers encoder on `device` with the forward pass `backend` picks.

    onnx_cache: the folder of ONNX exports (None: $LOOM_CACHE/onnx). The returned embedder's
    `backend` says which ran ("torch" or "onnx"); after "auto", `backend_check` holds the
    agreement that decided it. Other keywords go to `TransformerEmbedder`.
    """
    chosen = check_backend(backend, onnx_threshold)
    ref = TransformerEmbedder(path, device, name=name, **kwargs)
    if chosen == "torch":
        return ref
    if ref.device != "cpu" or not onnx_available():
        if chosen == "onnx":
            if ref.device != "cpu":
                raise LoomError(
                    f"backend='onnx' runs on the CPU, not {ref.device!r}: "
                    "use device='cpu' or backend='torch'"
                )
            raise LoomError("backend='onnx' needs ONNX Runtime: pip install onnxruntime onnx")
        log.info(
            "embedding backend auto: torch for %s (%s)",
            name,
            f"on {ref.device}: the int8 ONNX path is for the CPU"
            if ref.device != "cpu"
            else "onnxruntime is not installed: pip install onnxruntime onnx",
        )
        return ref
    try:
        folder = ensure_export(ref.model, ref.fingerprint, onnx_cache)
    except Exception as e:
        if chosen == "onnx":
            raise LoomError(f"cannot export {name} to ONNX: {e}") from e
        log.warning("embedding backend auto: torch (the ONNX export of %s failed: %s)", name, e)
        return ref
    if chosen == "onnx":
        return OnnxEmbedder(ref, folder)
    key = f"{check_key()}/check={text_fingerprint(*CHECK_TEXTS)}"
    stats = read_check(folder, key)
    source = "stored check"
    try:
        fast = None if stats and stats["p05"] < onnx_threshold else OnnxEmbedder(ref, folder)
    except LoomError as e:
        log.warning("embedding backend auto: torch for %s (%s)", name, e)
        return ref
    if stats is None:
        stats, source = agreement(ref, fast), "check run now"
        write_check(folder, key, stats)
    keep = fast if fast is not None and stats["p05"] >= onnx_threshold else ref
    keep.backend_check = {**stats, "threshold": onnx_threshold}
    log.info(
        "embedding backend auto: %s for %s (int8 ONNX vs torch cosine on %d check texts, %s: "
        "5th percentile %.4f, mean %.4f, min %.4f; needed %.4f). backend='torch' or "
        "LOOM_EMBED_BACKEND=torch gives the torch vectors",
        keep.backend,
        name,
        stats["n"],
        source,
        stats["p05"],
        stats["mean"],
        stats["min"],
        onnx_threshold,
    )
    return keep
