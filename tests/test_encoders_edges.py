"""Long-context encoders on unusual or bad input: options, checkpoint folders, raw ids.

Each test pins a fix: before it, the input below either ran silently wrong (an option
ignored or read as another value) or failed deep inside torch/json/safetensors with an error
that did not name the input.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from m2_tiny import write_tiny_m2
from safetensors.torch import load_file, save_file

from toolkit.embed import convert_to_linear, default_model_path, get_embedder
from toolkit.encoders.graphs import GraphedForward
from toolkit.encoders.linear import LinearAttentionEmbedder
from toolkit.encoders.m2bert import (
    M2BertEmbedder,
    load_m2bert,
    load_tokenizer,
)
from toolkit.errors import LoomError

TEXTS = [f"text number {i} about cats, markets and the weather" for i in range(8)]
FAST = dict(steps=1, finetune_steps=0, batch_size=4, train_length=16, device="cpu")


@pytest.fixture(scope="module")
def m2(tmp_path_factory) -> Path:
    return write_tiny_m2(tmp_path_factory.mktemp("m2-edges"))


@pytest.fixture(scope="module")
def lin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lin-edges") / "lin"
    return convert_to_linear(None, texts=TEXTS, out=out, progress=False, **FAST)


def _copy(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        edit(dst)
    return dst


def test_batch_size_must_be_a_whole_number(m2, lin):
    for emb in (M2BertEmbedder(m2, device="cpu"), LinearAttentionEmbedder(lin, device="cpu")):
        for bad in (2.5, "2"):
            with pytest.raises(LoomError, match="batch_size"):
                emb.encode(["a", "b", "c"], batch_size=bad)
        assert emb.encode(["a", "b", "c"], batch_size=np.int64(2)).shape == (3, emb.dim)


def test_m2_bad_options_raise(m2):
    for bad in (0, -5, 2.5, "abc", True):
        with pytest.raises(LoomError, match="token_budget"):
            M2BertEmbedder(m2, device="cpu", token_budget=bad)
    # overlap: negative skips tokens; >= the window (126) made one window per token
    for bad in (-1, 126, 200, "x"):
        with pytest.raises(LoomError, match="overlap"):
            M2BertEmbedder(m2, device="cpu", overlap=bad)
    for bad in ("fp16x", "int8", "float64", torch.int8, 16):
        with pytest.raises(LoomError, match="dtype"):
            M2BertEmbedder(m2, device="cpu", dtype=bad)
    base = M2BertEmbedder(m2, device="cpu").encode(TEXTS[:2])
    same = M2BertEmbedder(m2, device="cpu", dtype=torch.float32).encode(TEXTS[:2])
    np.testing.assert_array_equal(base, same)


def test_m2_reduced_dtype_on_cpu_is_logged(m2, caplog):
    with caplog.at_level(logging.WARNING, logger="toolkit.encoders.m2bert.embedder"):
        emb = M2BertEmbedder(m2, device="cpu", dtype="bfloat16")
    assert "bfloat16" in caplog.text and "float32" in caplog.text
    np.testing.assert_array_equal(
        emb.encode(TEXTS[:2]), M2BertEmbedder(m2, device="cpu").encode(TEXTS[:2])
    )


def test_m2_forward_ids_checks_its_input(m2):
    emb = M2BertEmbedder(m2, device="cpu")
    ok = torch.zeros(2, emb.pad_length, dtype=torch.long)
    assert emb.forward_ids(ok).shape == (2, 64)
    # a shorter row ran silently (the output depends on the padding); longer ones and 1-D
    # ids failed inside torch; ids past the vocabulary raised an IndexError
    for bad in (
        torch.tensor([[101, 7592, 102]]),
        torch.zeros(1, 300, dtype=torch.long),
        torch.tensor([101, 7592, 102]),
        torch.full((1, emb.pad_length), 40000),
        torch.full((1, emb.pad_length), -1),
    ):
        with pytest.raises(LoomError, match="ids"):
            emb.forward_ids(bad)


def test_m2_pad_length_beyond_position_table_raises(tmp_path):
    path = write_tiny_m2(tmp_path / "m", long_conv_l_max=256)  # 128 positions, texts padded to 256
    with pytest.raises(LoomError, match="long_conv_l_max"):
        M2BertEmbedder(path, device="cpu")


def test_m2_broken_checkpoint_files_raise(m2, tmp_path):
    cfg = json.loads((m2 / "config.json").read_text())

    def write(text):
        return lambda d: (d / "config.json").write_text(text)

    cases = {
        "bad_json": (write("{not json"), "config.json"),
        "a_list": (write("[1, 2]"), "config.json"),
        "str_size": (write(json.dumps({**cfg, "hidden_size": "64"})), "hidden_size"),
        "neg_layers": (write(json.dumps({**cfg, "num_hidden_layers": -1})), "num_hidden_layers"),
        "corrupt": (
            lambda d: (d / "model.safetensors").write_bytes(b"garbage" * 10),
            "model.safetensors",
        ),
        "empty_bin": (
            lambda d: (
                (d / "model.safetensors").unlink(),
                (d / "pytorch_model.bin").write_bytes(b""),
            ),
            "pytorch_model.bin",
        ),
    }
    for name, (edit, match) in cases.items():
        folder = _copy(m2, tmp_path / name, edit)
        with pytest.raises(LoomError, match=match):
            M2BertEmbedder(folder, device="cpu")
    with pytest.raises(LoomError, match="not an M2-BERT checkpoint"):
        M2BertEmbedder(default_model_path(), device="cpu")


def test_m2_loaders_take_str_paths_and_check_the_device(m2):
    assert load_tokenizer(str(m2)).cls_token_id == 101
    with pytest.raises(LoomError, match="device"):
        load_m2bert(m2, device="gpu")


def test_prefix_without_a_folder_raises():
    for name in ("m2-bert:", "linear:", "m2-bert:  "):
        with pytest.raises(LoomError, match="no folder"):
            get_embedder(name, device="cpu")


def test_linear_broken_folders_raise(lin, tmp_path):
    meta = json.loads((lin / "linear_attention.json").read_text())

    def write(d_meta):
        return lambda d: (d / "linear_attention.json").write_text(json.dumps(d_meta))

    def feature_dim_8(d):
        sd = load_file(str(d / "feature_maps.safetensors"))
        save_file(
            {k: v[..., :8].contiguous() for k, v in sd.items()}, str(d / "feature_maps.safetensors")
        )

    cases = {
        "bad_json": (lambda d: (d / "linear_attention.json").write_text("{"), "linear_attention"),
        "no_feature_map": (
            write({k: v for k, v in meta.items() if k != "feature_map"}),
            "feature_map",
        ),
        "no_maps": (lambda d: (d / "feature_maps.safetensors").unlink(), "feature_maps"),
        "no_model": (lambda d: (d / "model.safetensors").unlink(), "base model"),
        "shapes": (feature_dim_8, "feature_maps.safetensors"),
        "pooling": (write({**meta, "pooling": "max"}), "pooling"),  # was silently mean
        "max_length": (write({**meta, "max_length": "abc"}), "max_length"),
    }
    for name, (edit, match) in cases.items():
        folder = _copy(lin, tmp_path / name, edit)
        with pytest.raises(LoomError, match=match):
            LinearAttentionEmbedder(folder, device="cpu")


def test_linear_max_length_values(lin):
    for bad in (2.5, "abc", 2, np.float64(100)):  # 2.5 was read as 2; "abc" a ValueError
        with pytest.raises(LoomError, match="max_length"):
            LinearAttentionEmbedder(lin, device="cpu", max_length=bad)
    emb = LinearAttentionEmbedder(lin, device="cpu", max_length=np.int64(40))
    assert emb.max_length == 40 and type(emb.max_length) is int


def test_convert_bad_options_raise_before_any_work(tmp_path, lin):
    def conv(**kw):
        args = {"texts": TEXTS, "out": tmp_path / "x", "progress": False, **FAST, **kw}
        return convert_to_linear(None, **args)

    with pytest.raises(LoomError, match="text 8 is of type bytes"):
        conv(texts=TEXTS + [b"bytes"])  # was: dropped silently
    with pytest.raises(LoomError, match="text 0 is of type bytes"):
        conv(texts=[t.encode() for t in TEXTS])  # was: "got 0 non-empty texts"
    with pytest.raises(LoomError, match="text 8 is missing"):
        conv(texts=TEXTS + [None])
    for key, bad in [
        ("steps", 1.5),
        ("steps", "2"),
        ("finetune_steps", 0.5),
        ("batch_size", 0),
        ("batch_size", -1),
        ("train_length", 1),
        ("train_length", 0),
        ("train_length", 16.5),
        ("feature_dim", 0),  # was read as "the default"
        ("window", True),
        ("window", 2.5),
        ("lr", 0),
        ("lr", "fast"),
        ("seed", 1.5),
    ]:
        with pytest.raises(LoomError, match=key):
            conv(**{key: bad})
    with pytest.raises(LoomError, match="not a folder"):
        conv(out=lin / "linear_attention.json")


def test_convert_numpy_max_positions(tmp_path):
    out = convert_to_linear(
        None, texts=TEXTS, out=tmp_path / "np", max_positions=np.int64(1024), progress=False, **FAST
    )
    meta = json.loads((out / "linear_attention.json").read_text())
    assert meta["max_positions"] == meta["max_length"] == 1024
    assert LinearAttentionEmbedder(out, device="cpu").max_length == 1024


def test_graphed_forward_on_cpu(caplog):
    for bad in (0, -1, 1.5):
        with pytest.raises(LoomError, match="max_graphs"):
            GraphedForward(lambda x: x, lambda: 0, max_graphs=bad)
    with pytest.raises(LoomError, match="warmup"):
        GraphedForward(lambda x: x, lambda: 0, warmup=-1)
    g = GraphedForward(lambda x: x * 2, lambda: 0)
    with caplog.at_level(logging.INFO, logger="toolkit.encoders.graphs"):
        out = [g(torch.ones(3)) for _ in range(3)]
    assert all(torch.equal(o, torch.full((3,), 2.0)) for o in out)
    assert g.captures == 0 and caplog.text.count("eagerly") == 1  # said once, not per call
