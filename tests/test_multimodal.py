"""CLIPPINGS: a small CLIP initialised locally, trained on rendered noisy name crops."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from linking import evaluate
from linking.multimodal import (
    ClipEncoder,
    cluster,
    dedup,
    merge,
    record_vectors,
    retrieval_accuracy,
    train_multimodal,
)
from toolkit.errors import LoomError

NAMES = [
    "smith",
    "nguyen",
    "brown",
    "wilson",
    "taylor",
    "jones",
    "white",
    "martin",
    "thompson",
    "walker",
    "harris",
    "lee",
    "ryan",
    "kelly",
    "king",
    "clarke",
]


def render(text: str, seed: int):
    """A 64x64 crop of `text` at a random offset, darkness and gaussian noise."""
    from PIL import Image, ImageDraw, ImageFont

    r = random.Random(seed)
    img = Image.new("L", (64, 64), 255)
    font = ImageFont.load_default(size=13)
    ImageDraw.Draw(img).text(
        (r.randint(0, 6), r.randint(16, 34)), text, fill=r.randint(0, 60), font=font
    )
    noise = np.random.default_rng(seed).normal(0, 30, (64, 64))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


@pytest.fixture(scope="module")
def trained():
    """Train the tiny CLIP from scratch on one rendered crop per name; keep before/after.

    A CLIP trained from random weights for a few CPU steps learns the image-text pairs it
    sees (retrieval among them goes from chance to most); reading fresh renders of a name
    needs a pretrained checkpoint or far more steps (see docs/linking.md).
    """
    images = [render(n, i) for i, n in enumerate(NAMES)]
    enc = ClipEncoder.tiny(image_size=64, patch_size=8, hidden_size=64, projection_dim=64)
    before = retrieval_accuracy(enc, images, NAMES)
    records = pd.DataFrame({"name": NAMES, "img": images})
    enc = train_multimodal(
        records,
        "img",
        "name",
        model=enc,
        epochs=STEPS,
        max_steps=STEPS,
        batch_size=len(NAMES),
        learning_rate=3e-4,
        progress=False,
    )
    return enc, before, images


STEPS = 50


def test_training_improves_image_to_text_retrieval(trained):
    enc, before, images = trained
    after = retrieval_accuracy(enc, images, NAMES)
    assert enc.train_report["final_loss"] < enc.train_report["first_loss"] - 0.5
    assert after >= before + 0.3, (before, after)


def test_merge_dedup_cluster_on_image_paths(trained, tmp_path):
    enc, _, images = trained
    paths = []
    for i, img in enumerate(images[:8]):
        img.save(tmp_path / f"a{i}.png")
        paths.append(str(tmp_path / f"a{i}.png"))
    # left rows have only a scanned crop, right rows only text: the merge is cross-modal
    left = pd.DataFrame({"img": paths, "name": [None] * 8, "id": range(8)})
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    right = pd.DataFrame({"img": [None] * 8, "name": [NAMES[i] for i in order]})
    gold = [(i, order.index(i)) for i in range(8)]
    out = merge(left, right, image_col="img", on="name", model=enc)
    assert out["left_row"].tolist() == list(range(8)) and out["id"].tolist() == list(range(8))
    f1 = evaluate(out, gold)["f1"]
    assert f1 >= 0.4, f1  # chance is 1/8
    # pooled records: unit vectors; a row with neither image nor text is never matched
    vec, valid = record_vectors(pd.concat([left, right.iloc[:1]]), "img", "name", enc)
    assert valid.all() and np.allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)
    empty = pd.DataFrame({"img": [None, paths[0]], "name": [None, "smith"]})
    assert record_vectors(empty, "img", "name", enc)[1].tolist() == [False, True]
    both = pd.concat([left[["img", "name"]], right], ignore_index=True)
    groups = dedup(both, image_col="img", on="name", model=enc, threshold=0.99)
    assert len(groups) == 16 and {"cluster_id", "duplicate"} <= set(groups.columns)
    twice = pd.DataFrame({"img": paths[:4] + paths[:4]})
    agg = cluster(twice, image_col="img", model=enc, method="agglomerative", threshold=0.99)
    assert agg["cluster_id"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_save_load_round_trip(trained, tmp_path):
    enc, _, fresh = trained
    fresh = [render(n, 1000 + i) for i, n in enumerate(NAMES[:4])]
    enc.save(tmp_path / "clip")
    again = ClipEncoder.load(tmp_path / "clip", device="cpu")
    assert again.tokenizer_kind == "char" and again.resize == "pad"
    assert np.allclose(again.encode_images(fresh[:4]), enc.encode_images(fresh[:4]), atol=1e-5)
    assert np.allclose(again.encode_text(NAMES[:4]), enc.encode_text(NAMES[:4]), atol=1e-5)


def test_multimodal_errors(tmp_path):
    df = pd.DataFrame({"img": [str(tmp_path / "missing.png")], "name": ["x"]})
    enc = ClipEncoder.tiny()
    with pytest.raises(LoomError, match="does not exist"):
        record_vectors(df, "img", "name", enc)
    with pytest.raises(LoomError, match="no CLIP weights"):
        record_vectors(df, "img", "name", None)
    with pytest.raises(LoomError, match="not a CLIP checkpoint"):
        ClipEncoder.load(tmp_path)
    with pytest.raises(LoomError, match="no column"):
        record_vectors(df, "image", "name", enc)
    with pytest.raises(LoomError, match="image_weight"):
        record_vectors(df, "img", "name", enc, image_weight=2)


def test_deprecated_progress_keyword_warns(tmp_path):
    df = pd.DataFrame({"img": [render("anna", 0), None], "name": ["anna", "bert"]})
    enc = ClipEncoder.tiny()
    new = record_vectors(df, "img", "name", enc, progress=False)
    with pytest.warns(DeprecationWarning, match="show_progress"):
        old = record_vectors(df, "img", "name", enc, show_progress=False)
    assert np.array_equal(old[0], new[0]) and old[1].tolist() == [True, True]


def test_pad_letterboxes_a_wide_image_instead_of_cropping_it():
    """resize="pad" keeps the whole image (scaled into the square, the rest in the mean
    colour); it used to be saved but ignored, so the red and blue ends were cropped off."""
    from PIL import Image

    wide = Image.new("RGB", (192, 48), (255, 255, 255))
    wide.paste((255, 0, 0), (0, 0, 40, 48))
    wide.paste((0, 0, 255), (152, 0, 192, 48))
    enc = ClipEncoder.tiny(image_size=48, device="cpu")
    assert enc.resize == "pad"
    px = enc.pixels([wide])[0].numpy()  # (3, 48, 48), normalised
    mean, std = np.asarray(enc.mean)[:, None], np.asarray(enc.std)[:, None]
    rgb = px.reshape(3, -1) * std + mean  # back to 0..1
    rgb = rgb.reshape(3, 48, 48)
    band = rgb[:, 24, :]  # the middle row crosses the whole (scaled) image
    assert band[0, 2] > 0.9 and band[2, 2] < 0.1  # red at the left end
    assert band[2, -3] > 0.9 and band[0, -3] < 0.1  # blue at the right end
    np.testing.assert_allclose(px[:, :10, :], 0, atol=0.02)  # the letterbox: mean colour
    enc.resize = "crop"
    cropped = enc.pixels([wide])[0].numpy().reshape(3, -1) * std + mean
    assert cropped[0].min() > 0.9  # the centre square is white: both ends cut off
