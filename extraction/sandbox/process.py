"""The parent's handle on one sandbox worker process: start, handshake, JSON messages, kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

from extraction.sandbox import protocol
from toolkit.errors import LoomError

#: The folder that holds the `extraction` package: the worker's only import root besides
#: the Python installation.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class SandboxError(LoomError):
    """The sandbox cannot isolate candidate code here; nothing was run."""


def exit_reason(returncode: int | None) -> str:
    """Why a worker ended, in words."""
    if returncode == protocol.TIMEOUT_EXIT:
        return "timeout: the function kept running past its time limit"
    if returncode is not None and returncode == -signal.SIGSYS:
        return "killed: a forbidden system call (seccomp)"
    if returncode is not None and returncode < 0:
        return f"crashed: the worker process died ({signal.Signals(-returncode).name})"
    return "crashed: the worker process died"


class WorkerProcess:
    """A fresh interpreter with an empty environment, no inherited descriptors and an empty
    working folder; it locks itself down before it answers `ready`."""

    def __init__(self, config: dict) -> None:
        self.tmp = tempfile.mkdtemp(prefix="loom-sandbox-")
        os.chmod(self.tmp, 0o711)
        # the parent's import roots (where pyseccomp lives), never its working folder
        roots = [PACKAGE_ROOT] + [
            p for p in sys.path if os.path.isabs(p) and os.path.isdir(p) and p != os.getcwd()
        ]
        cmd = (
            f"import sys; sys.path[:0] = {roots!r}; "
            "from extraction.sandbox.worker import main; "
            f"main({json.dumps(config)!r})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-E", "-s", "-B", "-c", cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            env={"LC_ALL": "C.UTF-8"},
            cwd=self.tmp,
            start_new_session=True,  # no terminal signals; killed by the parent only
        )
        self.rconn = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.wconn = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.proc.stdout.close()
        self.proc.stdin.close()
        self.loaded: set[str] = set()
        self.layers: dict[str, dict] | None = None

    def send(self, msg: dict) -> None:
        self.wconn.send_bytes(protocol.encode(msg))

    def recv(self, n_texts: int = 0) -> dict:
        """One checked JSON frame; ProtocolError for anything else (oversized included)."""
        try:
            frame = self.rconn.recv_bytes(protocol.max_frame_bytes(n_texts))
        except OSError as e:
            if "bad message length" in str(e):
                raise protocol.ProtocolError("reply larger than any valid reply") from None
            raise
        return protocol.decode(frame)

    def handshake(self, timeout: float) -> dict[str, dict]:
        """Wait for `ready` and return the layer report; SandboxError if it refused or hung."""
        if not self.rconn.poll(timeout):
            self.kill()
            raise SandboxError(f"a sandbox worker did not start within {timeout}s")
        try:
            msg = self.recv()
        except (EOFError, OSError, protocol.ProtocolError):
            self.kill()
            raise SandboxError(
                "a sandbox worker exited before locking itself down "
                f"({exit_reason(self.proc.poll())}); run `loom doctor` to see the isolation layers"
            ) from None
        if msg.get("op") == "refused":
            self.kill()
            layer = str(msg.get("layer"))[:40]
            raise SandboxError(
                f"the sandbox cannot set up its {layer!r} layer here: {str(msg.get('error'))[:300]}. "
                "Nothing was run. Fix the machine (see docs/extraction.md, Security model) or "
                f"accept weaker isolation explicitly with Sandbox(allow_missing=({layer!r},)) / "
                f"`loom extract --sandbox-allow-missing {layer}`"
            )
        try:
            self.layers = protocol.check_ready(msg)
        except protocol.ProtocolError as e:
            self.kill()
            raise SandboxError(f"a sandbox worker sent a malformed ready message: {e}") from None
        return self.layers

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.rconn.close()
        self.wconn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def stop(self) -> None:
        try:
            self.send({"op": "stop"})
        except OSError:
            pass
        self.kill()
