"""The process that plays "the user's Python" in the escape tests (tests/test_sandbox_escape.py).

It is started with a secret in its initial environment and records the signals it gets
in files, so attacks on a parent (its environment, signals) can be seen. Modes:
  unsandboxed  each attempt runs in a plain child interpreter that talks to this process
               the way the old sandbox did (pickles over a pipe): what happens with no
               sandbox, so every attempt is first seen to work;
  sandboxed    all attempts (and one good function) in one `Sandbox.run`;
  os_only      the same with the in-worker Python filter off: the OS layers alone.
Usage: python sandbox_host.py MODE SPEC_JSON OUT_JSON
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

RUNNER = """
import os, sys
from multiprocessing.connection import Connection
ns = {"__name__": "candidate"}
exec(sys.argv[1], ns)
value = ns["extract"](sys.argv[2])
Connection(1, readable=False).send(value)
"""


def _on_signal(folder: Path):
    def handler(signum, _frame):
        (folder / f"signal-{signal.Signals(signum).name}").write_text("got it")

    return handler


def unsandboxed(attacks: dict[str, str], text: str, limit: float) -> dict:
    out = {}
    for name, code in attacks.items():
        p = subprocess.Popen([sys.executable, "-c", RUNNER, code, text], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        conn = Connection(os.dup(p.stdout.fileno()), writable=False)
        value, status = None, "ok"
        if conn.poll(limit):
            try:
                value = conn.recv()  # unpickles what the child sent, as the old sandbox did
            except (EOFError, OSError):
                pass
        else:
            status = "still running"
        if p.poll() is None:
            p.kill()
        rc = p.wait()
        if status == "ok" and rc < 0:
            status = f"died ({signal.Signals(-rc).name})"
        out[name] = {"value": None if value is None else str(value)[:10_000],
                     "length": len(value) if isinstance(value, (str, bytes)) else 0,
                     "status": status}  # fmt: skip
        conn.close()
        p.stdout.close()
    return out


def sandboxed(functions: dict[str, str], texts: list[str], python_layer: bool) -> dict:
    from extraction.sandbox import Sandbox

    box = Sandbox(n_workers=1, timeout=0.5, memory_mb=256, python_layer=python_layer)
    t0 = time.monotonic()
    outputs, failures = box.run(functions, texts)
    return {"outputs": outputs, "failures": failures, "seconds": time.monotonic() - t0,
            "isolation": box.isolation()}  # fmt: skip


def main() -> None:
    mode, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["marker_dir"])
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, _on_signal(folder))
    if mode == "unsandboxed":
        result = unsandboxed(spec["attacks"], spec["texts"][0], spec["limit"])
    else:
        funcs = dict(spec["attacks"], good=spec["good"])
        result = sandboxed(funcs, spec["texts"], python_layer=(mode == "sandboxed"))
    time.sleep(0.3)  # let any signal that was sent arrive
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
