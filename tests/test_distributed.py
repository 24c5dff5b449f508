"""Dask paths equal the single-process path, on a LocalCluster with 2 workers."""

import numpy as np
import pandas as pd
import pytest

from toolkit.distributed import chunked, close_client, embed_series, get_client, parallel_map
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def client():
    c = get_client(n_workers=2, threads_per_worker=1, processes=True)
    yield c
    close_client()


def _square(chunk):
    return [x * x for x in chunk]


def test_parallel_map_keeps_order(client):
    items = list(range(1000))
    assert parallel_map(_square, items, client) == [x * x for x in items]
    assert parallel_map(_square, [], client) == []
    assert [len(c) for c in chunked(list(range(10)), 3)] == [3, 3, 4]


def test_embed_series_equals_in_process(client, embedder, bbc_sample):
    import dask.dataframe as dd

    texts = bbc_sample["title"].head(48).tolist()
    expected = embedder.encode(texts)
    np.testing.assert_allclose(embed_series(texts, client=client), expected, atol=1e-5)
    ddf = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=3)
    np.testing.assert_allclose(embed_series(ddf["text"], client=client), expected, atol=1e-5)


def test_bad_scheduler_address():
    with pytest.raises(LoomError, match="cannot connect to the Dask scheduler"):
        get_client("tcp://127.0.0.1:9")


def test_extraction_functions_on_the_cluster_equal_local(client):
    from extraction.sandbox import Sandbox, run_on_cluster

    functions = {
        "postcode": "import re\ndef extract(text):\n"
        "    m = re.search(r'\\b\\d{4}\\b', text)\n    return m.group(0) if m else ''\n",
        "first": "def extract(text):\n    return text.split()[0]\n",
        "escapes": "import os\ndef extract(text):\n    return os.getcwd()\n",
    }
    texts = [f"record {i} lives at {1000 + i} Main St" for i in range(40)] + ["", "x 12 y"]
    sandbox = Sandbox(n_workers=1)
    local_out, local_fail = sandbox.run(functions, texts)
    out, fail = run_on_cluster(sandbox, functions, texts, client)
    assert out == local_out and set(fail) == set(local_fail) == {"escapes"}
    assert out["postcode"][3] == "1003"


def test_blocked_linkage_on_the_cluster_equals_local(client):
    from linking import merge

    rng = np.random.default_rng(0)
    names = [f"name {i} {w}" for i, w in enumerate(rng.choice(["ann", "bob", "cy"], 60))]
    left = pd.DataFrame({"name": names, "city": rng.choice(["leeds", "york", "bath"], 60)})
    right = left.sample(frac=1.0, random_state=1).reset_index(drop=True)
    right["name"] = right["name"].str.replace("name", "nme")
    # a client asks for the embed-everything path (docs/linking.md): compare it with the same
    # path run locally (the default cascade runs in-process and has no cluster step)
    opts = {"threshold": None, "char_weight": 0.0, "blocking_on": "city"}
    local = merge(left, right, on="name", **opts)
    remote = merge(left, right, on="name", client=client, **opts)
    pd.testing.assert_frame_equal(local, remote)
    assert (local["city_left"] == local["city_right"]).all()
