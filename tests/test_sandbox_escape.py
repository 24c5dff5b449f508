"""Escape suite for the extraction sandbox (issue 16).

Every attempt in tests/sandbox_attacks.py is run three ways from a host process that holds a
secret in its environment and records the signals it gets (tests/sandbox_host.py):
unsandboxed, where the attempt must be seen to work (so no test here passes by accident);
through `Sandbox.run`, where it must be dropped with a reason and change nothing; and with
the Python filter off, where the operating-system layers alone must stop it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sandbox_attacks import ATTACKS, GOOD, GOOD_OUT, OS_LAYER_REASONS, TEXTS

from extraction.sandbox import Sandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox isolates on Linux")
HOST = Path(__file__).with_name("sandbox_host.py")
ROOT = Path(__file__).resolve().parents[1]
MODES = ("unsandboxed", "sandboxed", "os_only")


class Listeners:
    """A TCP and a UDP listener on 127.0.0.1 recording what reaches them."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        for s in (self.tcp, self.udp):
            s.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
                conn.settimeout(1.0)
                self.got.append(conn.recv(256).decode(errors="replace") or "connected")
                conn.close()
            except OSError:
                pass
            try:
                self.got.append(self.udp.recv(256).decode(errors="replace"))
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.tcp.close()
        self.udp.close()


def _fill(code: str, ctx: dict) -> str:
    return code.format(**ctx)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each mode run once over all attempts: {mode: (result, marker folder, context)}."""
    listeners = Listeners()
    secret = "s3cret-" + secrets.token_hex(8)
    secret_file = tmp_path_factory.mktemp("private") / "secret.txt"
    secret_file.write_text(secret)
    out = {}
    try:
        for mode in MODES:
            folder = tmp_path_factory.mktemp(f"markers-{mode}")
            folder.chmod(0o777)  # so a worker that had escaped as nobody could still write here
            attacks = {}
            for name, (_, code) in ATTACKS.items():
                ctx = {"M": str(folder / name), "SECRET_FILE": str(secret_file),
                       "PORT": listeners.tcp.getsockname()[1],
                       "UDP": listeners.udp.getsockname()[1], "TAG": f"{mode}:{name}"}  # fmt: skip
                attacks[name] = _fill(code, ctx)
            spec = folder.parent / f"spec-{mode}.json"
            spec.write_text(json.dumps({"attacks": attacks, "texts": TEXTS, "good": GOOD,
                                        "marker_dir": str(folder), "limit": 3.0}))  # fmt: skip
            result_path = folder.parent / f"result-{mode}.json"
            env = dict(os.environ, LOOM_TEST_SECRET=secret, PYTHONPATH=str(ROOT))
            subprocess.run(
                [sys.executable, str(HOST), mode, str(spec), str(result_path)],
                env=env, cwd=str(folder.parent), timeout=600, check=True,
                start_new_session=True,  # a signal to the host's group must not reach pytest
            )  # fmt: skip
            out[mode] = (json.loads(result_path.read_text()), folder)
    finally:
        listeners.close()
    return out, listeners.got, secret


def _effect(kind: str, name: str, mode: str, runs_) -> bool:
    """Whether attempt `name` had its effect in `mode`."""
    results, got, secret = runs_
    result, folder = results[mode]
    if mode == "unsandboxed":
        r = result[name]
        value, status, length = r["value"] or "", r["status"], r["length"]
    else:
        value = " ".join(v or "" for v in result["outputs"].get(name, []))
        status, length = "ok", len(value)
    if kind == "file":
        return os.path.lexists(folder / name)
    if kind == "secret":
        return secret in value
    if kind == "listing":
        return "proc" in value.split(",") or "proc" in value
    if kind in ("tcp", "udp"):
        return f"{mode}:{name}" in got
    if kind.startswith("signal:"):
        return (folder / f"signal-SIG{kind.split(':')[1]}").exists()
    if kind == "hang":
        return status == "still running"
    if kind == "memory":
        return value.strip().split(" ")[0] == str(1 << 30)
    if kind == "crash":
        return status.startswith("died")
    if kind == "huge":
        return length >= 10**8
    raise AssertionError(kind)


def test_suite_has_at_least_25_distinct_attempts() -> None:
    assert len(ATTACKS) >= 25
    assert len({code for _, code in ATTACKS.values()}) == len(ATTACKS)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attempt_works_unsandboxed_and_fails_in_the_sandbox(name: str, runs) -> None:
    kind = ATTACKS[name][0]
    # 1. the attack is real: with no sandbox it does what it set out to do
    assert _effect(kind, name, "unsandboxed", runs), runs[0]["unsandboxed"][0][name]
    # 2. through Sandbox.run: nothing changed, the function is dropped with a reason
    result, _ = runs[0]["sandboxed"]
    assert not _effect(kind, name, "sandboxed", runs)
    assert result["failures"].get(name), f"{name} was not dropped: {result['outputs'].get(name)}"
    assert name not in result["outputs"]
    # 3. with the Python filter off, the operating-system layers alone stop it
    os_result, _ = runs[0]["os_only"]
    assert not _effect(kind, name, "os_only", runs), os_result["failures"].get(name)
    if name in OS_LAYER_REASONS:
        assert OS_LAYER_REASONS[name] in os_result["failures"].get(name, ""), os_result[
            "failures"
        ].get(name)


@pytest.mark.parametrize("mode", ["sandboxed", "os_only"])
def test_run_finishes_and_good_function_unaffected(mode: str, runs) -> None:
    result, folder = runs[0][mode]
    assert result["outputs"]["good"] == GOOD_OUT
    assert "good" not in result["failures"]
    assert sorted(p.name for p in folder.iterdir()) == []  # no marker, no signal record
    assert all(layer["active"] for layer in result["isolation"].values()), result["isolation"]


def test_isolation_report_names_every_layer() -> None:
    layers = Sandbox(n_workers=1).isolation()
    assert list(layers) == ["environment", "network", "landlock", "user", "rlimits", "seccomp"]
    for name, info in layers.items():
        assert info["active"], (name, info)
        assert info["detail"]
    if os.geteuid() == 0:
        assert "65534" in layers["user"]["detail"]


REFUSE_SCRIPT = """
import errno, json, sys
import pyseccomp as sc
f = sc.SyscallFilter(sc.ALLOW)
f.add_rule(sc.ERRNO(errno.EPERM), "unshare")  # a machine where namespaces are not allowed
f.load()
from extraction.sandbox import Sandbox, SandboxError
out = {}
try:
    Sandbox(n_workers=1).isolation()
    out["strict"] = "ran"
except SandboxError as e:
    out["strict"] = str(e)
box = Sandbox(n_workers=1, allow_missing=("network",))
out["layers"] = box.isolation()
out["run"] = box.run({"good": sys.argv[1]}, ["City: Leeds"])
print(json.dumps(out))
"""


def test_missing_layer_refuses_unless_allowed() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE_SCRIPT, GOOD],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # no silent fallback: the error names the layer and both ways out
    assert "'network' layer" in out["strict"] and "Nothing was run" in out["strict"]
    assert "allow_missing=('network',)" in out["strict"]
    assert "--sandbox-allow-missing network" in out["strict"]
    layers = out["layers"]
    assert layers["network"]["active"] is False
    assert "not permitted" in layers["network"]["detail"]
    assert all(v["active"] for k, v in layers.items() if k != "network")
    assert out["run"] == [{"good": ["Leeds"]}, {}]


def test_doctor_shows_layers_before_anything_runs(capsys) -> None:
    from apps.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for layer in ("environment", "network", "landlock", "user", "rlimits", "seccomp"):
        assert f"  {layer}" in out
    assert "OFF" not in out and "REFUSED" not in out
    assert main(["doctor", "--sandbox-allow-missing", "firewall"]) == 2
    assert "unknown sandbox layers" in capsys.readouterr().err
