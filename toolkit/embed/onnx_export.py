"""Export a sentence-transformers model to ONNX with int8 dynamic quantization, once.

The whole sentence encoder (transformer, pooling, normalisation) is traced by PyTorch's own
exporter (`torch.onnx.export`) and quantized by ONNX Runtime's `quantize_dynamic`: int8
weights per output channel for the MatMuls whose weights are constant, activations quantized
on the fly. The FFN down-projections (the MatMuls that narrow the width; their inputs carry
the GELU outliers) stay float: quantizing them too costs about 0.005 of mean cosine to the
torch vectors on MiniLM. The result lives in a cache folder keyed by the model's content
fingerprint and the recipe, written to a temporary folder and renamed into place, so a crash
or a second process never leaves half a model behind. Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from toolkit.errors import LoomError

log = logging.getLogger(__name__)

#: Names the quantization recipe: a new recipe gets new cache folders and cache keys.
RECIPE = "int8-dynamic-perchannel-v1"
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
OPSET = 17


def onnx_available() -> bool:
    """Whether ONNX Runtime and the onnx package are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    """The folder of exported models: `cache`, else $LOOM_CACHE/onnx (~/.cache/loom/onnx)."""
    if cache is not None:
        return Path(cache).expanduser()
    return Path(os.environ.get("LOOM_CACHE", Path.home() / ".cache" / "loom")) / "onnx"


def export_folder(fingerprint: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the export of the model with content hash `fingerprint` lives."""
    return cache_root(cache) / f"{fingerprint}-{RECIPE}"


def is_complete(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / META_FILE).is_file()


def ensure_export(model: Any, fingerprint: str, cache: str | os.PathLike | None = None) -> Path:
    """The folder holding the int8 ONNX export of `model` (a SentenceTransformer), made once.

    fingerprint: the content hash of the model's files (`Embedder.fingerprint`); it names
    the folder, so a model re-trained in place is exported again.
    """
    folder = export_folder(fingerprint, cache)
    if is_complete(folder):
        return folder
    if folder.exists():
        log.warning("ONNX export %s is incomplete; exporting again", folder)
        shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        fp32 = tmp / "fp32.onnx"
        export_fp32(model, fp32)
        quantize(fp32, tmp / MODEL_FILE)
        fp32.unlink()
        meta = {"recipe": RECIPE, "fingerprint": fingerprint, "versions": versions()}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_complete(folder):  # not a second process that finished first
                raise
        log.info("exported the int8 ONNX encoder to %s", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_fp32(model: Any, path: Path) -> None:
    """Trace the whole sentence encoder (ids, mask) -> sentence_embedding into `path`."""
    import torch

    class SentenceGraph(torch.nn.Module):
        """The forward pass `TransformerEmbedder.forward_ids` runs, as one traceable module."""

        def __init__(self, st: Any) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            feats = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": torch.zeros_like(input_ids),
            }
            return self.st(feats)["sentence_embedding"]

    graph = SentenceGraph(model).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2178, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(
            graph,
            (ids, mask),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={**dynamic, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
        )


def narrowing_matmuls(path: Path) -> list[str]:
    """Names of the MatMuls whose constant weight has more rows than columns (down-projections)."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            dims = shapes.get(node.input[1])
            if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
                out.append(node.name)
    return out


def quantize(fp32: Path, out: Path) -> None:
    """int8 dynamic quantization: per-channel weights, constant-weight MatMuls but the narrowing."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # its "consider pre-processing" note goes through logging.warning(): keep it quiet, and
    # keep that call from installing a stderr handler on a root logger that has none
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=narrowing_matmuls(fp32),
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)
    if not out.is_file():
        raise LoomError(f"ONNX Runtime wrote no quantized model to {out}")


def versions() -> dict[str, str]:
    """The versions of the exporter and runtime that made an export (kept in its meta.json)."""
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "onnx", "onnxruntime")}
