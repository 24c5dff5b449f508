"""Landlock (Linux >= 5.13): after `restrict`, this process may only read beneath the given
folders, may not bind or connect TCP sockets (ABI >= 4), and may not signal processes or
reach abstract UNIX sockets outside its own domain (ABI >= 6).

Written here on three system calls through ctypes rather than taken from PyPI: the only
binding there (`landlock` 1.0.0.dev5) is a pre-release whose `Ruleset.apply()` ends in a
bare `raise`, and it knows neither the network rules nor the scopes.
"""

from __future__ import annotations

import ctypes
import os

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """Landlock's ABI version here, 0 where the kernel has none (or it is disabled)."""
    libc = _libc()
    v = libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                     ctypes.c_uint32(_CREATE_RULESET_VERSION))  # fmt: skip
    return max(int(v), 0)


def _fs_rights(abi: int) -> int:
    return next(_FS_BY_ABI[k] for k in sorted(_FS_BY_ABI, reverse=True) if abi >= k)


def restrict(readable: list[str]) -> str:
    """Lock this process to reading beneath `readable`; returns what was restricted.

    Raises OSError naming the failing call. Folders that do not exist are skipped.
    """
    abi = abi_version()
    if abi < 1:
        raise OSError(
            "the kernel has no Landlock (needs Linux >= 5.13 with landlock in the LSM list)"
        )
    libc = _libc()
    attr = _RulesetAttr(handled_access_fs=_fs_rights(abi))
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    fd = libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))  # fmt: skip
    if fd < 0:
        raise OSError(
            ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"
        )
    try:
        allowed = []
        for path in dict.fromkeys(readable):
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = _PathBeneath(allowed_access=_READ_FILE | _READ_DIR, parent_fd=pfd)
                if os.path.isfile(path):
                    rule.allowed_access = _READ_FILE
                rc = libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(fd),
                                  ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                                  ctypes.c_uint32(0))  # fmt: skip
                if rc != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
                allowed.append(path)
            finally:
                os.close(pfd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        rc = libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0))
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(fd)
    parts = [f"ABI {abi}", f"read-only: {len(allowed)} folders"]
    if abi >= 4:
        parts.append("no TCP bind/connect")
    if abi >= 6:
        parts.append("signals and abstract sockets scoped")
    return ", ".join(parts)
