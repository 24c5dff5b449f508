"""The sandbox for generated extraction functions: good code runs, bad code is dropped."""

from __future__ import annotations

import pytest

from extraction.sandbox import Sandbox, check_code

GOOD = """
import re
def extract(text: str) -> str:
    m = re.search(r"City:\\s*(.+)", text)
    return m.group(1) if m else ""
"""

TEXTS = ["Name: Ann\nCity: Leeds\n", "City: York", "no city here"]


def _code(body: str) -> str:
    return "def extract(text):\n" + "\n".join("    " + ln for ln in body.splitlines()) + "\n"


@pytest.fixture(scope="module")
def box() -> Sandbox:
    return Sandbox(n_workers=1, timeout=0.5, memory_mb=256)


def test_good_function_runs(box: Sandbox) -> None:
    out, failed = box.run({"good": GOOD}, TEXTS)
    assert failed == {}
    assert out["good"] == ["Leeds", "York", None]


@pytest.mark.parametrize(
    "code, reason",
    [
        ("import os\ndef extract(text):\n    return os.getcwd()", "import of 'os'"),
        ("import socket\ndef extract(text):\n    return ''", "import of 'socket'"),
        ("from subprocess import run\ndef extract(text):\n    return ''", "subprocess"),
        (_code("open('/tmp/x', 'w').write(text)\nreturn text"), "'open'"),
        (_code("return __import__('os').getcwd()"), "__import__"),
        (_code("return eval('1+1')"), "'eval'"),
        (_code("exec('x=1')\nreturn ''"), "'exec'"),
        (_code("return ().__class__.__bases__[0].__subclasses__()"), "is not allowed"),
        (_code("return getattr(text, 'up' + 'per')()"), "'getattr'"),
        ("def other(text):\n    return text", "no function named 'extract'"),
        ("def extract(text):\n  return (", "syntax error"),
    ],
)
def test_escape_attempts_rejected_statically(code: str, reason: str) -> None:
    assert reason in (check_code(code) or "")


def test_bad_functions_dropped_run_continues(box: Sandbox) -> None:
    funcs = {
        "good": GOOD,
        "hang": _code("while True:\n    pass"),
        "regex_bomb": "import re\n" + _code("return re.match(r'(a+)+$', 'a' * 40 + 'b')"),
        "memory": _code("x = 'x' * (10 ** 10)\nreturn x"),
        "crash": _code("raise ValueError('boom')"),
        "import_at_runtime": _code("import os\nreturn ''"),
    }
    out, failed = box.run(funcs, TEXTS)
    assert out["good"] == ["Leeds", "York", None]
    assert failed["hang"].startswith("timeout")
    assert failed["regex_bomb"].startswith("timeout")
    assert "memory" in failed["memory"]
    assert "rejected" in failed["import_at_runtime"]
    # an exception on every document is an abstention, not a failure of the sandbox
    assert out["crash"] == [None, None, None]


def test_runtime_restrictions_hold_even_past_the_checker() -> None:
    # Run code that passes the AST check but tries the network and file writes through
    # allowed modules: the worker has neither open() nor sockets.
    box = Sandbox(n_workers=1, timeout=1.0)
    code = _code("import json\nreturn str(json.__dict__)")  # dunder: rejected statically
    assert check_code(code) is not None
    sneaky = (
        "import functools\n"
        "def extract(text):\n"
        "    f = functools.partial(max, 1)\n"
        "    return str(f(2))\n"
    )
    out, failed = box.run({"ok": sneaky}, ["a"])
    assert out["ok"] == ["2"] and failed == {}


def test_parallel_workers_match_single(box: Sandbox) -> None:
    texts = [f"City: Town{i}" for i in range(300)]
    one, _ = box.run({"good": GOOD}, texts)
    two, _ = Sandbox(n_workers=2, chunk_size=50).run({"good": GOOD}, texts)
    assert one == two
    assert one["good"][299] == "Town299"


@pytest.mark.parametrize(
    "code, reason",
    [
        ("from operator import attrgetter\ndef extract(text):\n    return ''", "attrgetter"),
        ("from re import *\ndef extract(text):\n    return ''", "star import"),
        (_code("f = '{0.upper}'\nreturn f.format(text)"), "string literal"),
        (_code("return '{0.__class__}'.format(text)"), "reads attributes"),
        (_code("return '{0[0]}'.format(text)"), "reads attributes or items"),
        (_code("return '{0:{1.real}}'.format(text, 1)"), "reads attributes"),
        (_code("g = (x for x in [1])\nreturn str(g.gi_frame)"), "gi_frame"),
        ("import collections.abc.x\ndef extract(text):\n    return ''", "not allowed"),
    ],
)
def test_string_and_frame_routes_rejected_statically(code: str, reason: str) -> None:
    assert reason in (check_code(code) or "")


def test_everyday_llm_code_still_runs(box: Sandbox) -> None:
    """The filters must not reject what extraction code normally does (the modules it uses
    are loaded before the worker locks itself down, strptime's helper included)."""
    code = """
import re, json, html, unicodedata
from datetime import datetime
from typing import Optional
from collections import Counter
import collections.abc

def extract(text: str) -> Optional[str]:
    m = re.search(r"Born:\\s*(\\d{4}-\\d{2}-\\d{2})", text)
    if not m:
        return None
    d = datetime.strptime(m.group(1), "%Y-%m-%d")
    words = Counter(html.unescape(text).split())
    assert isinstance(words, collections.abc.Mapping)
    name = unicodedata.normalize("NFC", json.loads('"Jos\\u00e9"'))
    return "{}|{}|{}".format(d.strftime("%d %b %Y"), name, words["Born:"])
"""
    assert check_code(code) is None
    out, failed = box.run({"f": code}, ["Born: 1990-03-04 &amp;", "nothing"])
    assert failed == {}
    assert out["f"] == ["04 Mar 1990|José|1", None]


def test_bad_sandbox_settings_name_the_fix() -> None:
    from toolkit.errors import LoomError

    with pytest.raises(LoomError, match="unknown sandbox layers"):
        Sandbox(allow_missing=("firewall",)).isolation()
    with pytest.raises(LoomError, match="memory_mb >= 64"):
        Sandbox(memory_mb=1).run({"good": GOOD}, ["x"])
