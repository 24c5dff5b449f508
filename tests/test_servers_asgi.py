"""loom's OpenAI-compatible servers on the ASGI stack: request-size limit (413), bounded
queue (503 + Retry-After, which the client honours), per-request error isolation in merged
batches, graceful shutdown, Prometheus metrics, API key, chat roles and finish_reason."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from toolkit.embed import Embedder
from toolkit.embed_client import HTTPEmbedder
from toolkit.embed_server import make_server
from toolkit.errors import LoomError
from toolkit.http_client import parse_retry_after, request_json


def call(url: str, body: dict | bytes | None = None, headers: dict | None = None):
    """(status, headers, decoded JSON or text) of one request, error statuses included."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw.decode()


def wait_until(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


class GatedEmbedder(Embedder):
    """Test double around the real MiniLM embedder: it can hold a model call until the test
    opens its gate, and it rejects texts containing POISON. No installed model rejects a
    string or lets a test hold a batch in flight, so the double adds exactly that; the
    vectors are the real model's."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dim, self.max_length = "gated-minilm", inner.dim, inner.max_length
        self.device = inner.device
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def _embed(self, texts, batch_size, progress, long_text):
        self.calls.append(len(texts))
        self.entered.set()
        assert self.gate.wait(60)
        bad = [i for i, t in enumerate(texts) if "POISON" in t]
        if bad:
            raise LoomError(f"text {bad[0]} is poisoned: remove the word POISON")
        return self.inner.encode(texts, normalize=False, progress=False, long_text=long_text)

    def token_counts(self, texts):
        return self.inner.token_counts(texts)


@pytest.fixture()
def gated(embedder):
    return GatedEmbedder(embedder)


def test_body_over_the_limit_gets_413(embedder) -> None:
    with make_server(embedder, port=0, max_request_bytes=2000) as srv:
        url = f"{srv.url}/v1/embeddings"
        ok = call(url, {"input": ["short text"]})
        assert ok[0] == 200
        status, _, body = call(url, {"input": ["x" * 3000]})
        assert status == 413 and "--max-request-bytes" in body["error"]["message"]
        # no Content-Length: the streamed size is what counts
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=30)
        conn.putrequest("POST", "/v1/embeddings")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        payload = json.dumps({"input": ["y" * 5000]}).encode()
        for i in range(0, len(payload), 1000):
            part = payload[i : i + 1000]
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413 and b"over this server's limit of 2000" in resp.read()
        conn.close()


def test_full_queue_gets_503_with_retry_after_and_the_client_waits(gated) -> None:
    with make_server(gated, port=0, max_queue=1, model_calls=1) as srv:
        url = f"{srv.url}/v1/embeddings"
        gated.gate.clear()
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(call, url, {"input": ["in the model"]})
            assert gated.entered.wait(20)
            second = pool.submit(call, url, {"input": ["waiting in the queue"]})
            wait_until(lambda: srv.batcher.waiting == 1)
            status, headers, body = call(url, {"input": ["one too many"]})
            assert status == 503 and body["error"]["type"] == "server_busy"
            assert int(headers["Retry-After"]) >= 1
            # the client waits as long as Retry-After says instead of its short backoff
            client = HTTPEmbedder(srv.url, retries=2)
            start = time.monotonic()
            third = pool.submit(client.encode, ["retried after the wait"])
            time.sleep(0.3)
            gated.gate.set()
            vecs = third.result(timeout=60)
            assert time.monotonic() - start >= 0.9  # backoff alone would retry in 0.5 s
            assert vecs.shape == (1, 384)
            assert first.result()[0] == 200 and second.result()[0] == 200
        text = call(f"{srv.url}/metrics")[2]
        assert 'loom_rejected_total{reason="queue_full"} 2.0' in text  # ours, the client's


def test_one_bad_input_fails_only_its_own_request(gated, embedder) -> None:
    texts = ["the first good request", "another good one", "and a third"]
    with make_server(gated, port=0, model_calls=1) as srv:
        url = f"{srv.url}/v1/embeddings"
        gated.gate.clear()
        with ThreadPoolExecutor(8) as pool:
            blocker = pool.submit(call, url, {"input": ["holds the model"]})
            assert gated.entered.wait(20)
            gated.calls.clear()
            bodies = [
                {"input": [texts[0]]},
                {"input": ["fine", "POISON pill"]},  # the model rejects this request's text
                {"input": [texts[1], texts[2]]},
                {"input": ["ok", 7]},  # not a string
                {"input": []},  # empty
            ]
            futures = [pool.submit(call, url, b) for b in bodies]
            wait_until(lambda: srv.batcher.waiting == 3)  # the three well-formed ones
            gated.gate.set()
            results = [f.result(timeout=60) for f in futures]
            assert blocker.result()[0] == 200
    assert gated.calls[0] == 5  # the three requests were merged into one model call ...
    assert srv.batcher.split_batches == 1  # ... which failed and was split per request
    statuses = [r[0] for r in results]
    assert statuses == [200, 400, 200, 400, 400]
    assert "POISON" in results[1][2]["error"]["message"]
    assert "'input'[1] is a int" in results[3][2]["error"]["message"]
    got = np.array([d["embedding"] for r in (results[0], results[2]) for d in r[2]["data"]])
    np.testing.assert_allclose(got, embedder.encode(texts), atol=1e-5)


def test_shutdown_finishes_requests_in_flight(gated, embedder) -> None:
    srv = make_server(gated, port=0).start()
    url = f"{srv.url}/v1/embeddings"
    gated.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(call, url, {"input": ["a slow request"]})
        assert gated.entered.wait(20)
        stopper = threading.Thread(target=srv.shutdown)
        stopper.start()
        time.sleep(0.5)
        assert stopper.is_alive()  # shutdown waits for the request in flight
        with pytest.raises(urllib.error.URLError):  # but takes no new connections
            urllib.request.urlopen(f"{srv.url}/health", timeout=5)
        gated.gate.set()
        status, _, body = slow.result(timeout=60)
        stopper.join(30)
    srv.server_close()
    assert not stopper.is_alive() and status == 200
    np.testing.assert_allclose(
        body["data"][0]["embedding"], embedder.encode(["a slow request"])[0], atol=1e-5
    )


def test_api_key_guards_everything_but_health(embedder) -> None:
    with make_server(embedder, port=0, api_key="s3cret") as srv:
        status, headers, body = call(f"{srv.url}/v1/embeddings", {"input": ["x"]})
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in body["error"]["message"]
        wrong = {"Authorization": "Bearer nope"}
        assert call(f"{srv.url}/v1/models", headers=wrong)[0] == 401
        assert call(f"{srv.url}/metrics")[0] == 401
        assert call(f"{srv.url}/health")[0] == 200
        with pytest.raises(LoomError, match="HTTP 401"):
            HTTPEmbedder(srv.url, retries=0)
        client = HTTPEmbedder(srv.url, api_key="s3cret")
        np.testing.assert_allclose(client.encode(["x"]), embedder.encode(["x"]), atol=1e-5)


def test_metrics_in_prometheus_format(embedder) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    # two servers in one process: each has its own registry
    with make_server(embedder, port=0) as srv, make_server(embedder, port=0) as other:
        client = HTTPEmbedder(srv.url, batch_size=4)
        client.encode([f"text number {i}" for i in range(10)])
        call(f"{srv.url}/v1/embeddings", {"input": []})
        call(f"{srv.url}/nowhere")
        status, headers, text = call(f"{srv.url}/metrics")
        assert call(f"{other.url}/metrics")[0] == 200
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("loom_requests_total", route="/v1/embeddings", status="200") == 3
    assert value("loom_requests_total", route="/v1/embeddings", status="400") == 1
    assert value("loom_requests_total", route="other", status="404") == 1
    assert value("loom_texts_total") == 10
    assert value("loom_tokens_total", kind="prompt") > 10
    assert value("loom_batch_size_count") >= 1 and value("loom_batch_size_sum") == 10
    assert value("loom_queue_depth") == 0
    assert value("loom_request_seconds_count", route="/v1/embeddings") == 4


def test_usage_tokens_are_the_embedders_count(bbc_sample) -> None:
    """The packed path counts tokens from its own tokenization (no second pass): the same
    numbers as `token_counts`, per text, long and odd texts included."""
    from toolkit.embed import TransformerEmbedder, default_model_path

    embedder = TransformerEmbedder(default_model_path(), "cpu", packed=True)
    texts = list(bbc_sample["summary"][:50]) + ["", "naïve café 😀", "word " * 2000]
    vecs, counts = embedder.encode_counted(texts)
    assert np.array_equal(counts, embedder.token_counts(texts))
    assert counts.sum() == embedder.count_tokens(texts) and counts[-1] > 2000
    assert np.allclose(vecs, embedder.encode(texts, progress=False), atol=1e-5)


def test_client_caps_a_long_retry_after() -> None:
    """A stand-in server (test double: loom's own never asks for an hour) answers 503 with
    Retry-After: 3600 once; the client waits at most max_retry_after."""
    seen = []

    class Busy(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            seen.append(time.monotonic())
            first = len(seen) == 1
            body = b'{"error": "busy"}' if first else b'{"ok": true}'
            self.send_response(503 if first else 200)
            if first:
                self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/x"
        assert request_json(url, backoff=0.01, max_retry_after=0.4) == {"ok": True}
        assert 0.35 <= seen[1] - seen[0] < 5
    finally:
        srv.shutdown()
        srv.server_close()
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_server_flags_build_the_config(monkeypatch) -> None:
    from apps.cli import build_parser
    from apps.commands.server_flags import config_from_args

    parser = build_parser()
    monkeypatch.setenv("LOOM_API_KEY", "from-env")
    args = parser.parse_args(["embed-server", "--max-queue", "8", "--max-request-bytes", "100"])
    cfg = config_from_args(args)
    assert (cfg.max_queue, cfg.max_request_bytes, cfg.api_key) == (8, 100, "from-env")
    args = parser.parse_args(["llm-server", "--api-key", "flag"])
    assert config_from_args(args).api_key == "flag" and config_from_args(args).max_batch == 32
    with pytest.raises(LoomError, match="--max-queue 0"):
        config_from_args(parser.parse_args(["embed-server", "--max-queue", "0"]))
    with pytest.raises(TypeError, match="max_queue"):
        make_server(None, port=0, max_qeue=3)  # a misspelt option is not dropped


# --- the LLM server, on the embedded model (llama.cpp or transformers, offline) ----------

PROMPT = (
    "name: John Smith\ncity: Leeds\n\nWhat is the city in this record? Answer with the value only."
)


@pytest.fixture(scope="module")
def llm_server():
    from toolkit.llm import get_llm
    from toolkit.llm_server import make_server as make_llm_server

    llm = get_llm(None, cache=False)
    with make_llm_server(llm, port=0) as srv:
        yield llm, f"{srv.url}/v1"


def chatml(messages: list[dict]) -> str:
    """SmolLM2-Instruct's template (ChatML), written out by hand."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


def test_chat_keeps_system_and_assistant_roles(llm_server) -> None:
    llm, url = llm_server
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": "Leeds"},
        {"role": "user", "content": "And what is the name in the record?"},
    ]
    status, _, body = call(f"{url}/chat/completions", {"messages": messages, "max_tokens": 8})
    assert status == 200
    (local,) = llm.complete([chatml(messages)], max_tokens=8, chat=False)
    assert body["choices"][0]["message"]["content"] == local.text
    assert body["usage"]["prompt_tokens"] == local.prompt_tokens
    # one user message is still a plain chat call, as before
    status, _, one = call(
        f"{url}/chat/completions",
        {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8},
    )
    assert one["choices"][0]["message"]["content"] == llm.complete([PROMPT], max_tokens=8)[0].text


def test_finish_reason_is_length_or_stop(llm_server) -> None:
    _, url = llm_server
    _, _, cut = call(
        f"{url}/completions", {"prompt": "Count from one to twenty: one, two,", "max_tokens": 3}
    )
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    msg = [{"role": "user", "content": PROMPT}]
    _, _, done = call(f"{url}/chat/completions", {"messages": msg, "max_tokens": 40})
    assert done["choices"][0]["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] < 40


def test_llm_bad_requests_fail_alone(llm_server) -> None:
    _, url = llm_server
    good = {"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 2}
    bad = [
        {"messages": [{"role": "tool", "content": "x"}], "max_tokens": 2},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "stream": True},
        {"prompt": 3},
    ]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(call, f"{url}/chat/completions", b) for b in [good, *bad[:3]]]
        futures.append(pool.submit(call, f"{url}/completions", bad[3]))
        futures.append(pool.submit(call, f"{url}/chat/completions", good))
        results = [f.result(timeout=120) for f in futures]
    assert [r[0] for r in results] == [200, 400, 400, 400, 400, 200]
    messages = [r[2]["error"]["message"] for r in results[1:5]]
    assert "role 'tool'" in messages[0] and "max_tokens" in messages[1]
    assert "stream" in messages[2] and "'prompt'" in messages[3]


@pytest.fixture(scope="module")
def packed_embedder():
    from toolkit.embed import TransformerEmbedder, default_model_path

    emb = TransformerEmbedder(default_model_path(), "cpu", packed=True, token_budget=2048)
    assert emb.packed is not None
    return emb


def test_requests_are_tokenized_as_they_arrive(packed_embedder, bbc_sample, monkeypatch) -> None:
    """With a packed path, each request is tokenized on arrival and merged calls only run the
    model (`encode_tokenized`); vectors and usage equal the in-process ones."""
    texts = list(bbc_sample["summary"][:48]) + ["", "word " * 700]
    expected = packed_embedder.encode(texts, progress=False)
    calls = []
    original = packed_embedder.encode_tokenized
    monkeypatch.setattr(
        packed_embedder,
        "encode_tokenized",
        lambda chunks, sizes, **kw: calls.append(list(sizes)) or original(chunks, sizes, **kw),
    )
    with make_server(packed_embedder, port=0) as srv:
        url = f"{srv.url}/v1/embeddings"
        parts = [texts[i : i + 5] for i in range(0, len(texts), 5)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda p: call(url, {"input": p}), parts))
    assert [r[0] for r in results] == [200] * len(parts)
    got = np.array([d["embedding"] for r in results for d in r[2]["data"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    usage = [r[2]["usage"]["prompt_tokens"] for r in results]
    assert usage == [int(packed_embedder.token_counts(p).sum()) for p in parts]
    assert sum(map(sum, calls)) == len(texts)  # every text went through the early path
    assert max(map(len, calls)) >= 1


def test_a_failed_early_tokenization_falls_back_to_the_texts(packed_embedder, monkeypatch) -> None:
    """A tokenizer worker that fails (e.g. died) costs nothing but speed: the merged call
    tokenizes the texts itself."""
    from concurrent.futures import Future

    def broken(texts, long_text="chunk"):
        f = Future()
        f.set_exception(LoomError("tokenizer worker process 1 stopped"))
        return f

    monkeypatch.setattr(packed_embedder, "submit_tokenize", broken)
    texts = ["a first text", "a second, longer text about the weather"]
    with make_server(packed_embedder, port=0) as srv:
        status, _, body = call(f"{srv.url}/v1/embeddings", {"input": texts})
    assert status == 200
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, packed_embedder.encode(texts, progress=False), atol=1e-5)


def test_encode_tokenized_checks_its_input(packed_embedder, embedder) -> None:
    chunk = packed_embedder.submit_tokenize(["one"]).result()
    with pytest.raises(LoomError, match="one size per chunk"):
        packed_embedder.encode_tokenized([chunk], [1, 2])
    if embedder.packed is None:  # the CPU default: no packed path, no early tokenization
        assert embedder.submit_tokenize(["one"]) is None
        with pytest.raises(LoomError, match="encode_counted"):
            embedder.encode_tokenized([chunk], [1])
