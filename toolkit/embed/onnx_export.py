"""Export a sentence-transformers model to ONNX with int8 per-token quantization, once.

The whole sentence encoder (transformer, pooling, normalisation) is traced by PyTorch's own
exporter (`torch.onnx.export`) and quantized by ONNX Runtime's `quantize_dynamic`: int8
weights per output channel for every MatMul whose weight is constant. ONNX Runtime's dynamic
recipe then scales the activations per tensor, i.e. per batch, so a text's vector would depend
on the texts batched with it (and on their padding); `per_token` rewrites each of those
activation quantizers to one scale per token (symmetric, from that token's own absolute
maximum), so a text's vector depends on that text alone. Per-token scales also follow the
GELU outliers of the FFN down-projections, which per-tensor int8 could not quantize.

The result lives in a cache folder keyed by the model's content fingerprint and the recipe,
written to a temporary folder and renamed into place, so a crash or a second process never
leaves half a model behind; the agreement check that `backend="auto"` runs is remembered
beside it (`read_check` / `write_check`). Nothing is downloaded.
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
RECIPE = "int8-pertoken-v2"
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
CHECK_FILE = "check.json"
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


def quantize(fp32: Path, out: Path) -> None:
    """int8 weights per channel for the constant-weight MatMuls, activations per token."""
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
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)
    if not out.is_file():
        raise LoomError(f"ONNX Runtime wrote no quantized model to {out}")
    per_token(out)


def per_token(path: Path) -> None:
    """Rewrite the model at `path`: every per-tensor activation quantizer becomes per token.

    `quantize_dynamic` writes, for each quantized MatMul, DynamicQuantizeLinear(x) -> (q,
    scale, zero point) -> MatMulInteger -> Cast -> Mul(scale * weight scale). Each
    DynamicQuantizeLinear is replaced by: scale = max(|x| over the last axis) / 127 (one per
    token row), q = round(x / scale) + 128 clipped to [1, 255] as uint8, zero point 128 (a
    scalar, as MatMulInteger's CPU kernel wants). The product of the two scales is split into
    two Muls (weight scale, then token scale): ONNX Runtime's MatMulIntegerToFloat fusion
    would otherwise take the (rows, 1) token scale for a scalar one and give wrong vectors.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {"pt_127": 127.0, "pt_128": 128.0, "pt_1": 1.0, "pt_255": 255.0, "pt_eps": 1e-8}
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, dtype=np.float32), k) for k, v in consts.items()
    )
    graph.initializer.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), "pt_zp"))
    scale_products = {
        n.output[0]: n
        for n in graph.node
        if n.op_type == "Mul" and n.name.endswith("_quant_scales_mul")
    }
    nodes, rewritten = [], 0
    for n in graph.node:
        if n.op_type == "DynamicQuantizeLinear":
            x, (q, scale, zero) = n.input[0], n.output
            p = f"{n.name}_pt"
            steps = [
                ("Abs", [x], {}),
                ("ReduceMax", [f"{p}_Abs"], {"axes": [-1], "keepdims": 1}),
                ("Max", [f"{p}_ReduceMax", "pt_eps"], {}),
            ]
            for op, inputs, attrs in steps:
                nodes.append(helper.make_node(op, inputs, [f"{p}_{op}"], name=f"{p}_{op}", **attrs))
            nodes += [
                helper.make_node("Div", [f"{p}_Max", "pt_127"], [scale], name=f"{p}_scale"),
                helper.make_node("Div", [x, scale], [f"{p}_div"], name=f"{p}_div"),
                helper.make_node("Round", [f"{p}_div"], [f"{p}_round"], name=f"{p}_round"),
                helper.make_node("Add", [f"{p}_round", "pt_128"], [f"{p}_add"], name=f"{p}_add"),
                helper.make_node("Clip", [f"{p}_add", "pt_1", "pt_255"], [f"{p}_clip"], name=p),
                helper.make_node("Cast", [f"{p}_clip"], [q], name=f"{p}_q", to=TensorProto.UINT8),
                helper.make_node("Identity", ["pt_zp"], [zero], name=f"{p}_zp"),
            ]
            rewritten += 1
        elif n.op_type == "Mul" and n.name.endswith("_quant_scales_mul"):
            continue  # split below, where its product is used
        elif n.op_type == "Mul" and len(n.input) == 2 and n.input[1] in scale_products:
            act_scale, weight_scale = scale_products[n.input[1]].input
            y = n.output[0]
            nodes += [
                helper.make_node("Mul", [n.input[0], weight_scale], [f"{y}_w"], name=f"{n.name}_w"),
                helper.make_node("Mul", [f"{y}_w", act_scale], [y], name=f"{n.name}_x"),
            ]
        else:
            nodes.append(n)
    if not rewritten or len(scale_products) < rewritten:
        raise LoomError(
            f"unexpected quantized graph in {path} ({rewritten} activation quantizers, "
            f"{len(scale_products)} scale products): this onnxruntime's quantize_dynamic "
            "writes another layout; use backend='torch'"
        )
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_key() -> str:
    """What the agreement check's result depends on besides the model: recipe and runtime."""
    import onnxruntime

    return f"{RECIPE}/onnxruntime={onnxruntime.__version__}"


def read_check(folder: Path, key: str) -> dict | None:
    """The agreement statistics stored beside the export under `key`, or None."""
    try:
        stored = json.loads((folder / CHECK_FILE).read_text())
    except (OSError, ValueError):
        return None
    found = stored.get(key) if isinstance(stored, dict) else None
    fields = ("p05", "mean", "min", "n")
    if not isinstance(found, dict) or not all(
        isinstance(found.get(f), int | float) for f in fields
    ):
        return None  # absent, or not what write_check wrote: run the check again
    return found


def write_check(folder: Path, key: str, stats: dict) -> None:
    """Store `stats` under `key` beside the export (atomic replace; a failure only logs)."""
    try:
        stored = json.loads((folder / CHECK_FILE).read_text())
        stored = stored if isinstance(stored, dict) else {}
    except (OSError, ValueError):
        stored = {}
    stored[key] = stats
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{CHECK_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=1)
        os.replace(tmp, folder / CHECK_FILE)
    except OSError as e:
        log.warning("could not store the ONNX agreement check in %s: %s", folder, e)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def versions() -> dict[str, str]:
    """The versions of the exporter and runtime that made an export (kept in its meta.json)."""
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "onnx", "onnxruntime")}
