"""`loom embed-server` under load vs `Embedder.encode` in-process, same texts, same run.

    python benchmarks/embed_server.py --n 2000                      # CPU
    python benchmarks/embed_server.py --device cuda --n 20000 --model-dir DIR --random-init

The server runs as its own process (`python -m apps.cli embed-server` on 127.0.0.1, port
picked by the OS); `--clients` threads (default 32) each keep one HTTP connection and send
`--request-size`-text requests (default 64) until the texts run out. Texts come from
benchmarks/embed.py's `make_texts` (5-500 tokens of real BBC sentences). Reported: texts/s,
tokens/s, request latency p50/p99, the mean merged batch (from the server's /metrics), the
in-process `Embedder.encode` throughput on the same texts, and the ratio server/in-process.
Responses are base64 (what the OpenAI SDK asks for by default); `--encoding float` for JSON
lists.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, print_table, timed, write_results  # noqa: E402
from benchmarks.embed import make_texts, prepare_random_model  # noqa: E402


def start_server(
    model: str | None, device: str, max_batch: int, model_calls: int
) -> tuple[subprocess.Popen, str]:
    """`loom embed-server` in a child process; (process, "host:port") once it listens."""
    cmd = [sys.executable, "-m", "apps.cli", "embed-server", "--port", "0", "--device", device]
    cmd += ["--max-batch", str(max_batch), "--model-calls", str(model_calls)]
    if model:
        cmd += ["--model", model]
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the banner: "... on http://127.0.0.1:PORT/v1"
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    address = line.rsplit("http://", 1)[1].split("/")[0]
    return proc, address


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: requests in flight finish
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


class Client:
    """One keep-alive connection sending embedding requests."""

    def __init__(self, address: str, encoding: str) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.encoding = encoding

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        body = json.dumps({"input": texts, "encoding_format": self.encoding})
        self.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
        out = json.loads(data)
        rows = [d["embedding"] for d in sorted(out["data"], key=lambda d: d["index"])]
        if self.encoding == "base64":
            vecs = np.stack([np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows])
        else:
            vecs = np.asarray(rows, dtype=np.float32)
        return vecs, int(out["usage"]["prompt_tokens"])


def load_part(
    address: str,
    texts: list[str],
    starts: list[int],
    clients: int,
    size: int,
    encoding: str,
    go: Any = None,
) -> dict:
    """Requests at `starts` through `clients` concurrent connections (threads)."""
    lock = threading.Lock()
    state = {"next": 0, "tokens": 0, "errors": []}
    latencies: list[float] = []
    vecs: dict[int, np.ndarray] = {}

    def work() -> None:
        client = Client(address, encoding)
        while True:
            with lock:
                if state["next"] >= len(starts):
                    return
                s = starts[state["next"]]
                state["next"] += 1
            t0 = time.perf_counter()
            try:
                v, tok = client.embed(texts[s : s + size])
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    state["errors"].append(str(e))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                state["tokens"] += tok
                vecs[s] = v

    threads = [threading.Thread(target=work) for _ in range(clients)]
    if go is not None:
        go.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tokens": state["tokens"], "errors": state["errors"], "lat": latencies, "vecs": vecs}


def _part_process(queue: Any, go: Any, *args: Any) -> None:
    queue.put(load_part(*args, go=go))


def load(
    address: str, texts: list[str], clients: int, size: int, encoding: str, procs: int = 1
) -> dict:
    """All `texts` through `clients` concurrent clients in requests of `size`, the clients
    spread over `procs` processes (one Python process cannot parse responses for 32 busy
    connections as fast as a GPU server answers them)."""
    import multiprocessing as mp

    starts = list(range(0, len(texts), size))
    procs = max(1, min(procs, clients))
    if procs == 1:
        t0 = time.perf_counter()
        parts = [load_part(address, texts, starts, clients, size, encoding)]
        seconds = time.perf_counter() - t0
    else:
        ctx = mp.get_context("spawn")
        queue, go = ctx.Queue(), ctx.Event()
        per = [clients // procs + (i < clients % procs) for i in range(procs)]
        workers = [
            ctx.Process(
                target=_part_process,
                args=(queue, go, address, texts, starts[i::procs], per[i], size, encoding),
            )
            for i in range(procs)
        ]
        for w in workers:
            w.start()
        time.sleep(3.0)  # interpreters up and waiting on `go`
        t0 = time.perf_counter()
        go.set()
        parts = [queue.get() for _ in workers]
        seconds = time.perf_counter() - t0
        for w in workers:
            w.join()
    lat = np.asarray([x for p in parts for x in p["lat"]]) * 1000
    vecs = {k: v for p in parts for k, v in p["vecs"].items()}
    out = np.concatenate([vecs[s] for s in sorted(vecs)]) if vecs else np.zeros((0, 0))
    return {
        "seconds": seconds,
        "tokens": sum(p["tokens"] for p in parts),
        "errors": [e for p in parts for e in p["errors"]],
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "vectors": out,
    }


def scrape(address: str) -> dict[str, float]:
    """A few sums from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in ("loom_batch_size_sum", "loom_batch_size_count", "loom_model_seconds_sum"):
                out[s.name] = s.value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--request-size", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=2048, help="the server's --max-batch")
    ap.add_argument("--model-calls", type=int, default=2, help="the server's --model-calls")
    ap.add_argument("--encoding", default="base64", choices=("base64", "float"))
    ap.add_argument("--model-dir", default=None, help="sentence-transformers folder")
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--tag", default="", help="added to the result file name")
    ap.add_argument(
        "--client-procs", type=int, default=4, help="processes the clients are spread over"
    )
    args = ap.parse_args()

    from toolkit.embed import get_embedder

    model = args.model_dir
    if model and args.random_init:
        prepare_random_model(Path(model))
    cuda = args.device.startswith("cuda")
    texts = make_texts(args.n)

    # in-process first, alone on the machine
    emb = get_embedder(model, args.device)
    tokens, t_count = timed(lambda: emb.count_tokens(texts))  # the server's usage count
    emb.encode(texts[: min(256, max(64, args.n // 10))], progress=False)  # warm: kernels
    local, t_local = timed(lambda: emb.encode(texts, progress=False), cuda)

    proc, address = start_server(model, args.device, args.max_batch, args.model_calls)
    try:
        warm = texts[: min(512, max(args.request_size, args.n // 10))]
        load(address, warm, args.clients, args.request_size, args.encoding)  # warm
        before = scrape(address)
        res = load(
            address, texts, args.clients, args.request_size, args.encoding, args.client_procs
        )
        after = scrape(address)
    finally:
        stop_server(proc)
    if res["errors"]:
        print(f"{len(res['errors'])} failed requests, e.g. {res['errors'][0]}")
    cos = (
        float((res["vectors"] * local).sum(1).min()) if len(res["vectors"]) == len(local) else None
    )
    batches = after["loom_batch_size_count"] - before["loom_batch_size_count"]
    mean_batch = (after["loom_batch_size_sum"] - before["loom_batch_size_sum"]) / max(batches, 1)
    model_s = after["loom_model_seconds_sum"] - before["loom_model_seconds_sum"]
    rows = [
        {
            "method": "Embedder.encode in-process",
            "seconds": t_local,
            "texts/s": args.n / t_local,
            "tokens/s": tokens / t_local,
        },
        {
            "method": f"embed-server, {args.clients} clients x {args.request_size} texts",
            "seconds": res["seconds"],
            "texts/s": args.n / res["seconds"],
            "tokens/s": res["tokens"] / res["seconds"],
            "p50 ms": res["p50_ms"],
            "p99 ms": res["p99_ms"],
        },
    ]
    ratio = t_local / res["seconds"]
    print(
        f"\n{args.n} texts, {tokens} tokens, device {device_name(args.device)}; counting "
        f"the tokens alone (as the server does for `usage`) takes {t_count:.2f} s"
    )
    print_table(rows)
    print(
        f"server / in-process throughput: {ratio:.2f}; mean merged batch {mean_batch:.0f} texts "
        f"over {batches:.0f} model calls ({model_s:.2f} s in the model); cosine min {cos}"
    )
    name = "embed_server" + (f"-{args.tag}" if args.tag else "")
    path = write_results(
        name,
        args.device,
        {
            "n": args.n,
            "tokens": tokens,
            "clients": args.clients,
            "client_processes": args.client_procs,
            "request_size": args.request_size,
            "encoding": args.encoding,
            "server_model_calls_flag": args.model_calls,
            "rows": rows,
            "ratio_server_to_inprocess": ratio,
            "mean_batch_texts": mean_batch,
            "model_calls_made": batches,
            "server_model_seconds": model_s,
            "failed_requests": len(res["errors"]),
            "cosine_min_vs_inprocess": cos,
            "count_tokens_seconds": t_count,
            "random_init": bool(args.random_init),
            "cpu_count": os.cpu_count(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
