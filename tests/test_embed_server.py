"""The embedding server and client speak the OpenAI embeddings API on 127.0.0.1."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from toolkit.embed_client import HTTPEmbedder, http_json
from toolkit.embed_server import make_server
from toolkit.errors import LoomError


@pytest.fixture(scope="module")
def server(embedder):
    srv = make_server(embedder, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}", srv
    srv.shutdown()
    srv.server_close()


def test_vectors_equal_in_process(server, embedder, bbc_sample):
    url, _ = server
    client = HTTPEmbedder(url)
    texts = list(bbc_sample["title"][:20])
    np.testing.assert_allclose(client.encode(texts), embedder.encode(texts), atol=1e-5)
    assert client.dim == 384 and client.model == "all-MiniLM-L6-v2"


def test_four_concurrent_clients_share_batches(server, embedder, bbc_sample):
    url, srv = server
    texts = list(bbc_sample["summary"][:120])
    expected = embedder.encode(texts)
    before = srv.batcher.batches
    chunks = [texts[i::4] for i in range(4)]

    def work(i):
        client = HTTPEmbedder(url + "/v1")
        return [client.encode([t])[0] for t in chunks[i]]  # many small requests

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for i in range(4):
        np.testing.assert_allclose(np.stack(results[i]), expected[i::4], atol=1e-5)
    assert srv.batcher.batches - before < 120  # concurrent requests were merged


def test_protocol_and_errors(server):
    url, _ = server
    body = http_json(f"{url}/v1/embeddings", {"input": "one text", "model": "all-MiniLM-L6-v2"})
    assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 384
    assert body["usage"]["prompt_tokens"] > 0
    assert http_json(f"{url}/health")["status"] == "ok"
    with pytest.raises(LoomError, match="HTTP 400"):
        http_json(f"{url}/v1/embeddings", {"input": []})
    with pytest.raises(LoomError, match="does not serve model"):
        HTTPEmbedder(url, model="gpt-4")
    with pytest.raises(LoomError, match="cannot reach http://127.0.0.1:9"):
        HTTPEmbedder("http://127.0.0.1:9", retries=1)


class _MinimalOpenAI(BaseHTTPRequestHandler):
    """An independent OpenAI-style server: bag-of-characters vectors, model 'toy'."""

    def log_message(self, *a):
        pass

    def _reply(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply({"object": "list", "data": [{"id": "toy", "object": "model"}]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/embeddings" and req["model"] == "toy"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [float(t.count(c)) for c in "abcdefgh"],
            }
            for i, t in enumerate(req["input"])
        ][::-1]  # out of order on purpose
        self._reply(
            {
                "object": "list",
                "data": data,
                "model": "toy",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )


def test_client_follows_protocol_not_our_quirks():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _MinimalOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = HTTPEmbedder(f"http://127.0.0.1:{srv.server_port}/v1", model="toy", batch_size=2)
        vecs = client.encode(["aab", "hhh", "abc"], normalize=False)
        np.testing.assert_array_equal(vecs[:, :3], [[2, 1, 0], [0, 0, 0], [1, 1, 1]])
        assert vecs[1, 7] == 3 and client.dim == 8
    finally:
        srv.shutdown()
        srv.server_close()
