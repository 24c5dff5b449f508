"""The embedding server's request side alone: a zero-cost embedder behind `loom embed-server`.

    python benchmarks/embed_server_stack.py            # orjson responses (the server's own)
    python benchmarks/embed_server_stack.py --stdlib-json   # the same with json.dumps

The server runs in a child process with an embedder that returns constant vectors at no
cost, so what is measured is HTTP, JSON, base64 and request merging: requests/s through 32
clients (2 client processes) sending 64-text requests, and the server process's CPU seconds
(from /proc) for them. Writes results/embed_server_stack-cpu.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402

SERVER = r"""
import json, sys
import numpy as np
from toolkit.embed.base import Embedder
import toolkit.openai_http as oh
from toolkit.embed_server import make_server

class Free(Embedder):
    def __init__(self):
        self.name, self.dim, self.max_length, self.device = "free", 384, 512, "cpu"
    def _embed(self, texts, batch_size, progress, long_text):
        return np.ones((len(texts), 384), dtype=np.float32)
    def token_counts(self, texts):
        return np.full(len(texts), 10, dtype=np.int64)

if sys.argv[1] == "stdlib":
    oh.FastJSONResponse.render = lambda self, c: json.dumps(
        c, default=lambda a: a.tolist(), separators=(",", ":")).encode()
sys.setswitchinterval(0.0005)
srv = make_server(Free(), port=int(sys.argv[2]))
print("ready", flush=True)
srv.serve_forever()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40000, help="texts sent")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--stdlib-json", action="store_true")
    args = ap.parse_args()
    from benchmarks.embed import make_texts
    from benchmarks.embed_server import load

    root = str(Path(__file__).resolve().parents[1])
    kind = "stdlib" if args.stdlib_json else "orjson"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(args.port)], stdout=subprocess.PIPE, cwd=root
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)
        texts = make_texts(args.n)
        address = f"127.0.0.1:{args.port}"
        load(address, texts[:2000], 32, 64, "base64", 1)  # warm
        before = cpu_seconds(proc.pid)
        res = load(address, texts, 32, 64, "base64", 2)
        cpu = cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(10)
    n_req = len(range(0, len(texts), 64))
    row = {
        "json": kind,
        "requests": n_req,
        "seconds": res["seconds"],
        "requests_per_s": n_req / res["seconds"],
        "p50_ms": res["p50_ms"],
        "server_cpu_s": cpu,
        "server_cpu_ms_per_request": 1000 * cpu / n_req,
    }
    print(row)
    print(f"wrote {write_results('embed_server_stack-' + kind, 'cpu', row)}")


if __name__ == "__main__":
    main()
