"""Escape attempts against the extraction sandbox, each with the effect it has when it works.

Placeholders filled per run: {M} a marker path outside the sandbox, {SECRET_FILE}, {PORT}
(a TCP listener of the test), {UDP} (a UDP listener), {TAG} (what a network attack sends).
`effect` says how the test sees success: "file" (M exists), "secret" (the returned value
holds the secret), "listing" (the value lists /), "tcp"/"udp" (the listener got TAG),
"signal:USR1"/"signal:USR2" (the host process got it), "hang" (still running at the time
limit), "memory" (allocated 1 GiB), "crash" (the interpreter died), "huge" (returned
100M characters). Used by tests/test_sandbox_escape.py and run by tests/sandbox_host.py.
"""

from __future__ import annotations

ATTACKS: dict[str, tuple[str, str]] = {
    "write_file": (
        "file",
        "def extract(text):\n    with open({M!r}, 'w') as f:\n        f.write('pwned')\n    return 'w'\n",
    ),
    "read_file_outside": (
        "secret",
        "def extract(text):\n    return open({SECRET_FILE!r}).read()\n",
    ),
    "list_root": (
        "listing",
        "import os\ndef extract(text):\n    return ','.join(os.listdir('/'))\n",
    ),
    "env_secret": (
        "secret",
        "import os\ndef extract(text):\n    return os.environ.get('LOOM_TEST_SECRET')\n",
    ),
    "parent_environ": (
        "secret",
        "import os\ndef extract(text):\n"
        "    with open(f'/proc/{{os.getppid()}}/environ', 'rb') as f:\n"
        "        return f.read().decode('latin-1').replace('\\x00', ' ')\n",
    ),
    "typing_sys_os": (
        "file",
        "import typing\ndef extract(text):\n"
        "    typing.sys.modules['os'].system('touch ' + {M!r})\n    return 'x'\n",
    ),
    "statistics_sys_os_open": (
        "file",
        "import statistics\ndef extract(text):\n    os = statistics.sys.modules['os']\n"
        "    os.close(os.open({M!r}, os.O_CREAT | os.O_WRONLY))\n    return 'x'\n",
    ),
    "calendar_sys_builtins_open": (
        "file",
        "import calendar\ndef extract(text):\n    b = calendar.sys.modules['builtins']\n"
        "    b.open({M!r}, 'w').close()\n    return 'x'\n",
    ),
    "enum_sys_eval": (
        "file",
        "import enum\ndef extract(text):\n    b = enum.sys.modules['builtins']\n"
        "    b.eval(\"__import__('os').system(%r)\" % ('touch ' + {M!r}))\n    return 'x'\n",
    ),
    "dataclasses_inspect_os": (
        "file",
        "import dataclasses\ndef extract(text):\n    dataclasses.inspect.os.mkdir({M!r})\n"
        "    return 'x'\n",
    ),
    "subclass_walk": (
        "file",
        "def extract(text):\n    for c in ().__class__.__base__.__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n"
        "            c.__init__.__globals__['system']('touch ' + {M!r})\n    return 'x'\n",
    ),
    "attrgetter_walk": (
        "file",
        "import operator\ndef extract(text):\n"
        "    obj = operator.attrgetter('__class__.__base__')(())\n"
        "    for c in operator.methodcaller('__subclasses__')(obj):\n"
        "        if operator.attrgetter('__name__')(c) == '_wrap_close':\n"
        "            operator.attrgetter('__init__.__globals__')(c)['system']('touch ' + {M!r})\n"
        "    return 'x'\n",
    ),
    "formatter_get_field": (
        "file",
        "import string, calendar\ndef extract(text):\n"
        "    s = string.Formatter().get_field('0.__globals__[sys]', [calendar.isleap], {{}})[0]\n"
        "    s.modules['os'].system('touch ' + {M!r})\n    return 'x'\n",
    ),
    "str_format_fields": (
        "secret",
        "import calendar\ndef extract(text):\n"
        "    return '{{0.__globals__[sys].modules[os].environ[LOOM_TEST_SECRET]}}'.format(calendar.isleap)\n",
    ),
    "unbound_str_format": (
        "secret",
        "import calendar\ndef extract(text):\n"
        "    return str.format('{{0.__globals__[sys].modules[os].environ[LOOM_TEST_SECRET]}}', calendar.isleap)\n",
    ),
    "format_map_fields": (
        "secret",
        "import calendar\ndef extract(text):\n"
        "    return '{{f.__globals__[sys].modules[os].environ[LOOM_TEST_SECRET]}}'.format_map({{'f': calendar.isleap}})\n",
    ),
    "frame_walk": (
        "file",
        "def extract(text):\n    def g():\n        yield gen.gi_frame.f_back.f_back.f_globals\n"
        "    gen = g()\n    glb = next(gen)\n    glb['os'].system('touch ' + {M!r})\n    return 'x'\n",
    ),
    "raw_socket_tcp": (
        "tcp",
        "import typing\ndef extract(text):\n    s = typing.sys.modules['_socket'].socket()\n"
        "    s.connect(('127.0.0.1', {PORT}))\n    s.send({TAG!r}.encode())\n    s.close()\n"
        "    return 'sent'\n",
    ),
    "socket_udp": (
        "udp",
        "import typing\ndef extract(text):\n    sk = typing.sys.modules['socket']\n"
        "    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)\n"
        "    s.sendto({TAG!r}.encode(), ('127.0.0.1', {UDP}))\n    return 'sent'\n",
    ),
    "builtins_import_socket": (
        "tcp",
        "import calendar\ndef extract(text):\n"
        "    sk = calendar.sys.modules['builtins'].__import__('socket')\n"
        "    c = sk.create_connection(('127.0.0.1', {PORT}), timeout=2)\n"
        "    c.sendall({TAG!r}.encode())\n    c.close()\n    return 'sent'\n",
    ),
    "ctypes_system": (
        "file",
        "import typing\ndef extract(text):\n"
        "    ct = typing.sys.modules['builtins'].__import__('ctypes')\n"
        "    ct.CDLL(None).system(('touch ' + {M!r}).encode())\n    return 'x'\n",
    ),
    "fork": (
        "file",
        "import os\ndef extract(text):\n    pid = os.fork()\n    if pid == 0:\n"
        "        open({M!r}, 'w').close()\n        os._exit(0)\n    os.waitpid(pid, 0)\n"
        "    return 'forked'\n",
    ),
    "execve": (
        "file",
        "import os\ndef extract(text):\n    os.execv('/bin/sh', ['sh', '-c', 'touch ' + {M!r}])\n",
    ),
    "subprocess_run": (
        "file",
        "import subprocess\ndef extract(text):\n    subprocess.run(['touch', {M!r}])\n    return 'ran'\n",
    ),
    "symlink": (
        "file",
        "import os\ndef extract(text):\n    os.symlink('/etc/hostname', {M!r})\n    return 'x'\n",
    ),
    "signal_parent": (
        "signal:USR1",
        "import os, signal\ndef extract(text):\n    os.kill(os.getppid(), signal.SIGUSR1)\n"
        "    return 'sent'\n",
    ),
    "signal_process_group": (
        "signal:USR2",
        "import os, signal\ndef extract(text):\n    os.killpg(0, signal.SIGUSR2)\n    return 'sent'\n",
    ),
    "forge_reply": (
        "file",
        "import os, pickle\ndef extract(text):\n    class P:\n"
        "        def __reduce__(self):\n            return (os.system, ('touch ' + {M!r},))\n"
        "    payload = pickle.dumps(P())\n    frame = len(payload).to_bytes(4, 'big') + payload\n"
        "    for fd in range(1, 16):\n        try:\n            os.write(fd, frame)\n"
        "        except OSError:\n            pass\n    return 'forged'\n",
    ),
    "memory_flood": (
        "memory",
        "def extract(text):\n    x = b'x' * (1 << 30)\n    return str(len(x))\n",
    ),
    "cpu_flood": (
        "hang",
        "def extract(text):\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except:  # noqa: E722 - swallows the time limit too\n            pass\n",
    ),
    "deep_recursion": (
        "crash",
        "import typing\ndef extract(text):\n    typing.sys.setrecursionlimit(10 ** 7)\n"
        "    x = []\n    for _ in range(2_000_000):\n        x = [x]\n    return repr(x)\n",
    ),
    "huge_return": ("huge", "def extract(text):\n    return 'x' * (10 ** 8)\n"),
}

#: What the OS layers alone (Python filter off) must answer for some attempts, so each layer
#: is seen doing its job: reason substrings in `failures`.
OS_LAYER_REASONS = {
    "write_file": "seccomp",
    "execve": "seccomp",
    "fork": "seccomp",
    "subprocess_run": "seccomp",  # spawning a process (or its import, denied by Landlock)
    "ctypes_system": "seccomp",
    "raw_socket_tcp": "seccomp",
    "symlink": "seccomp",
    "signal_parent": "seccomp",
    "read_file_outside": "blocked by the operating system",
    "list_root": "blocked by the operating system",
    "forge_reply": "protocol violation",
    "memory_flood": "memory limit",
    "cpu_flood": "timeout",
    "huge_return": "characters",
}

GOOD = (
    "import re\ndef extract(text):\n    m = re.search(r'City:\\s*(\\w+)', text)\n"
    "    return m.group(1) if m else ''\n"
)
TEXTS = ["Name: Ann\nCity: Leeds\n", "City: York", "no city here"]
GOOD_OUT = ["Leeds", "York", None]
