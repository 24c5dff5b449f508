"""The seccomp filter of a sandbox worker, built with libseccomp (through `pyseccomp`).

Everything a plain Python interpreter needs stays allowed; these kill the whole process
(SIGSYS): running programs, new processes (threads stay allowed), tracing or reading other
processes, every socket, mounts and namespaces, privilege changes, kernel and system
administration, io_uring (it would run I/O past this filter), signals to any process but
itself, and opening, creating, renaming, linking or changing files.
"""

from __future__ import annotations

import errno
import os

try:  # imported up front: once the worker is locked down it can read no module file
    import pyseccomp
except (ImportError, RuntimeError) as e:  # RuntimeError: libseccomp.so not found
    pyseccomp = None
    _IMPORT_ERROR = f"pyseccomp/libseccomp unavailable: {e}"

KILL_ALWAYS = (
    # programs and processes
    "execve execveat fork vfork ptrace process_vm_readv process_vm_writev pidfd_open "
    "pidfd_getfd kcmp "
    # network
    "socket socketpair "
    # file system changes (writes through already open descriptors stay possible: the pipe)
    "creat openat2 rename renameat renameat2 unlink unlinkat mkdir mkdirat rmdir link linkat "
    "symlink symlinkat chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat truncate "
    "ftruncate fallocate mknod mknodat utime utimes utimensat futimesat setxattr lsetxattr "
    "fsetxattr removexattr lremovexattr fremovexattr name_to_handle_at open_by_handle_at "
    "memfd_create "
    # mounts, namespaces, root changes
    "mount umount2 pivot_root chroot unshare setns fsopen fsconfig fsmount fspick move_mount "
    "open_tree mount_setattr "
    # privilege changes
    "setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid setgroups capset "
    "personality "
    # the kernel and the system
    "bpf perf_event_open userfaultfd keyctl add_key request_key init_module finit_module "
    "delete_module kexec_load kexec_file_load reboot swapon swapoff acct settimeofday "
    "clock_settime clock_adjtime adjtimex syslog ioperm iopl quotactl sethostname "
    "setdomainname vhangup lookup_dcookie "
    # I/O that bypasses this filter
    "io_uring_setup io_uring_enter io_uring_register"
).split()
#: Signals: allowed only to this process (the worker's own alarm); to anyone else, killed.
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
#: open(2) flags that write or create.
WRITE_FLAGS = (
    os.O_WRONLY,
    os.O_RDWR,
    os.O_CREAT,
    os.O_TRUNC,
    os.O_APPEND,
    getattr(os, "O_TMPFILE", 0o20200000),
)
_CLONE_THREAD = 0x00010000


def install() -> str:
    """Load the filter into this process (for good); returns a one-line summary."""
    if pyseccomp is None:
        raise ImportError(_IMPORT_ERROR + " (pip install pyseccomp; apt-get install libseccomp2)")
    sc = pyseccomp
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    native = sc.system_arch()
    rules = 0

    def add(action: int, name: str, *args) -> None:
        nonlocal rules
        try:
            nr = sc.resolve_syscall(native, name)
        except (ValueError, OSError):
            return
        if nr < 0:  # not a system call on this architecture
            return
        f.add_rule(action, name, *args)
        rules += 1

    for name in KILL_ALWAYS:
        add(sc.KILL_PROCESS, name)
    me = os.getpid()
    for name in SIGNAL_CALLS:
        add(sc.KILL_PROCESS, name, sc.Arg(0, sc.NE, me))
    add(sc.KILL_PROCESS, "pidfd_send_signal")
    for flag in WRITE_FLAGS:
        add(sc.KILL_PROCESS, "open", sc.Arg(1, sc.MASKED_EQ, flag, flag))
        add(sc.KILL_PROCESS, "openat", sc.Arg(2, sc.MASKED_EQ, flag, flag))
    # clone: threads only; clone3 hides its flags in memory, so answer "not implemented" and
    # let the C library fall back to clone
    add(sc.KILL_PROCESS, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    add(sc.ERRNO(errno.ENOSYS), "clone3")
    f.load()
    return f"{rules} rules: no exec, processes, sockets, writes, mounts or privilege changes"
