"""toolkit.llm on the embedded model, through a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from toolkit.errors import LoomError
from toolkit.llm import LLM, Completion, CompletionCache, OpenAILLM, get_llm, token_total
from toolkit.llm.local import llama_cpp_available
from toolkit.llm_server import make_server

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # loads and runs the embedded LLM on CPU

PROMPT = (
    "name: John Smith\ncity: Leeds\n\nWhat is the city in this record? Answer with the value only."
)


@pytest.fixture(scope="module")
def llm() -> LLM:
    return get_llm(None)


@pytest.fixture(scope="module")
def server(llm: LLM):
    srv = make_server(llm, port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    srv.server_close()


def test_embedded_model_answers_and_counts_tokens(llm: LLM, tmp_path) -> None:
    llm.set_cache(tmp_path / "cache.sqlite")
    llm.reset_usage()
    with llm.stage("probe"):
        (c,) = llm.complete([PROMPT], max_tokens=12)
    assert "Leeds" in c.text  # the 135M model does read a key-value record
    assert c.prompt_tokens > 10 and 0 < c.completion_tokens <= 12 and not c.cached
    with llm.stage("probe"):
        (again,) = llm.complete([PROMPT], max_tokens=12)
    assert again.cached and again.text == c.text
    assert llm.usage["probe"]["calls"] == 2 and llm.usage["probe"]["cached_calls"] == 1
    assert llm.usage["probe"]["completion_tokens"] == 2 * c.completion_tokens
    # a fresh client on the same cache file resumes from it
    llm.set_cache(tmp_path / "cache.sqlite")
    assert llm.complete([PROMPT], max_tokens=12)[0].cached


def test_openai_server_round_trip(llm: LLM, server: str) -> None:
    with urllib.request.urlopen(server + "/models") as r:
        models = json.loads(r.read())["data"]
    assert models and models[0]["id"]
    client = get_llm(server, cache=False)
    assert isinstance(client, OpenAILLM) and client.model == models[0]["id"]
    llm.set_cache(None)
    local = llm.complete([PROMPT], max_tokens=8)[0]
    remote = client.complete([PROMPT], max_tokens=8)[0]
    assert remote.text == local.text  # greedy decoding: the server runs the same model
    assert remote.prompt_tokens == local.prompt_tokens
    raw = client.complete(["The capital of France is"], max_tokens=4, chat=False)[0]
    assert raw.completion_tokens >= 1 and raw.text.strip()
    many = client.complete([PROMPT, "Say yes."], max_tokens=3, stop=["\n"])
    assert len(many) == 2 and all("\n" not in c.text for c in many)


def test_unreachable_endpoint_retries_then_names_url() -> None:
    with pytest.raises(LoomError, match=r"127\.0\.0\.1:9/v1.*after 3 attempts"):
        OpenAILLM("http://127.0.0.1:9/v1", retries=3, backoff=0.01, cache=False)
    client = OpenAILLM("http://127.0.0.1:9/v1", model="m", retries=2, backoff=0.01, cache=False)
    with pytest.raises(LoomError, match=r"127\.0\.0\.1:9/v1/chat/completions failed after 2"):
        client.complete(["hello"], max_tokens=1)


def test_flaky_endpoint_recovers_with_backoff(server: str) -> None:
    """A proxy that answers 503 twice before forwarding: the client retries and succeeds."""
    failures = {"left": 2}

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _forward(self, data: bytes | None) -> None:
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            req = urllib.request.Request(
                server + self.path[3:], data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req) as r:
                body = r.read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._forward(None)

        def do_POST(self):  # noqa: N802
            self._forward(self.rfile.read(int(self.headers["Content-Length"])))

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = OpenAILLM(f"http://127.0.0.1:{proxy.server_port}/v1", backoff=0.01, cache=False)
        assert client.complete(["Say hi."], max_tokens=2)[0].completion_tokens >= 1
        assert failures["left"] == 0
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_bad_arguments_and_specs(llm: LLM, server: str) -> None:
    with pytest.raises(LoomError, match="max_tokens"):
        llm.complete(["x"], max_tokens=0)
    with pytest.raises(LoomError, match="unknown LLM"):
        get_llm("/no/such/model")
    req = urllib.request.Request(
        server + "/chat/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400


def test_token_total_and_completion_cache_layout(tmp_path) -> None:
    import sqlite3

    import pandas as pd

    assert token_total(pd.DataFrame()) == 0
    table = pd.DataFrame(
        {"stage": ["a", "b"], "prompt_tokens": [3, 4], "completion_tokens": [1, 2]}
    )
    assert token_total(table) == 10 and isinstance(token_total(table), int)
    cache = CompletionCache(tmp_path / "c.sqlite")
    cache.put({"k": Completion("hi", 3, 1)})
    assert cache.get(["k", "missing"]) == {"k": Completion("hi", 3, 1, cached=True)}
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("SELECT * FROM completions").fetchall() == [("k", "hi", 3, 1)]


def test_unknown_llm_option_is_refused_not_swallowed():
    """The llama.cpp backend used to take **_ and ignore a misspelt option."""
    from toolkit.llm import get_llm

    with pytest.raises(TypeError, match="max_new_token"):
        get_llm(None, max_new_token=5, cache=False)


@pytest.mark.skipif(not llama_cpp_available(), reason="llama-cpp-python did not build here")
def test_llama_models_are_freed_before_interpreter_teardown() -> None:
    # llama_cpp frees a model in __del__; one still held when the interpreter wipes module
    # globals printed "Exception ignored ... 'NoneType' object is not callable" at exit (seen
    # at the end of `make test`); an atexit hook frees them first. Subprocess: the hook closes
    # every open model, and this test must not close the module's shared one.
    script = (
        "import json\n"
        "from toolkit.llm import get_llm\n"
        "from toolkit.llm.local import close_llama_models\n"
        "llm = get_llm(None)\n"
        "n = close_llama_models()\n"
        "print(json.dumps([type(llm).__name__, n, llm.model._model.model is None,"
        " close_llama_models()]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["LlamaCppLLM", 1, True, 0]
    assert "Exception ignored" not in proc.stderr
