"""The operating-system layers a sandbox worker puts on itself before running any candidate.

`lock_down` applies them in this order, each one able to forbid what the earlier ones
needed: (1) environment: empty environment, no inherited descriptors, an empty working
folder (set up by the parent, checked here); (2) network: a new network namespace with no
interface up (in a new user namespace where not root); (3) landlock: read-only access to
the Python installation and the working folder, no TCP, no signals out; (4) user: drop to
an unprivileged uid/gid when root, else drop every capability; (5) rlimits: address
space, CPU time, file size 0, no new processes; (6) seccomp: kill the process on exec,
new processes, ptrace, sockets, mounts, privilege changes and opening files for writing.

A layer that cannot be set up raises `LayerError` naming it, unless the caller allowed it
to be missing; there is no silent fallback. The report says what each layer did.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import socket
import sys

from extraction.sandbox import landlock, seccomp_filter

LAYERS = ("environment", "network", "landlock", "user", "rlimits", "seccomp")
ALLOWED_ENV = frozenset({"LC_ALL"})
NOBODY = 65534
_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_THREAD = 0x10000000, 0x40000000, 0x00010000


class LayerError(Exception):
    """An isolation layer could not be set up; `layer` names it."""

    def __init__(self, layer: str, message: str) -> None:
        super().__init__(f"{layer}: {message}")
        self.layer = layer


def _environment(keep_fds: set[int]) -> str:
    extra = sorted(set(os.environ) - ALLOWED_ENV)
    if extra:
        raise OSError(f"inherited environment variables {extra[:5]}")
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        if fd > 2 and fd not in keep_fds:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor of the listing itself, already gone
    cwd = os.getcwd()
    if os.listdir(cwd):
        raise OSError(f"working folder {cwd} is not empty")
    return f"{len(os.environ)} variables, descriptors 0-2 and the pipe only, cwd {cwd}"


def _network() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(
                ctypes.get_errno(), f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
            )
        how = "new network namespace"
    else:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWUSER|CLONE_NEWNET): {os.strerror(err)} "
                          "(unprivileged user namespaces may be disabled on this machine)")  # fmt: skip
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        how = "new user and network namespaces"
    up = [name for _, name in socket.if_nameindex() if name != "lo"]
    if up:
        raise OSError(f"interfaces {up} are still present")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("127.0.0.1", 9))
        raise OSError("loopback is reachable")
    except OSError as e:
        if e.errno != errno.ENETUNREACH:
            raise
    finally:
        probe.close()
    return f"{how}: no interface up, loopback unreachable"


def _python_folders(cwd: str) -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, cwd}
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(roots)


def _user() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0 and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise OSError("could still become root after dropping privileges")
        how = f"uid/gid {NOBODY} (nobody), no groups"
    else:
        how = f"already unprivileged (uid {os.getuid()})"

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: cannot drop capabilities")
    libc.capget(ctypes.byref(header), data)
    if any(d.effective or d.permitted for d in data):
        raise OSError("capabilities remain after dropping them")
    return how + ", no capabilities"


def _rlimits(memory_mb: int, cpu_seconds: int) -> str:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
    return f"address space {memory_mb} MB, CPU {cpu_seconds} s, file size 0, processes 0"


def lock_down(config: dict, keep_fds: set[int]) -> dict[str, dict]:
    """Apply every layer in order; the report maps layer -> {active, detail}.

    `config` holds memory_mb, cpu_seconds and allow_missing (layer names that may be
    unavailable here). Raises LayerError for the first layer that fails and is not allowed
    to be missing.
    """
    allow = set(config.get("allow_missing", ()))
    cwd = os.getcwd()
    steps = {
        "environment": lambda: _environment(keep_fds),
        "network": _network,
        "landlock": lambda: landlock.restrict(_python_folders(cwd)),
        "user": _user,
        "rlimits": lambda: _rlimits(int(config["memory_mb"]), int(config["cpu_seconds"])),
        "seccomp": seccomp_filter.install,
    }
    report: dict[str, dict] = {}
    for layer in LAYERS:
        try:
            report[layer] = {"active": True, "detail": steps[layer]()}
        except (OSError, ImportError, RuntimeError, ValueError) as e:
            detail = f"{type(e).__name__}: {e}"[:250]
            if layer not in allow:
                raise LayerError(layer, detail) from e
            report[layer] = {"active": False, "detail": f"unavailable ({detail})"}
    return report
