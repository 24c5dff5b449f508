"""The messages between the parent and a sandbox worker: JSON frames, never pickle.

Each frame is one JSON object sent with `Connection.send_bytes` (a length prefix, then the
bytes). The parent reads with a size cap and checks the shape of every reply before using
it: a worker that was taken over can send only strings, numbers and nulls, and a reply of
the wrong shape ends that worker.
"""

from __future__ import annotations

import json
from typing import Any

#: Longest value a function may return; longer ones drop the function (an extraction value
#: is a field, not a document).
MAX_RETURN_CHARS = 100_000
#: Values kept per document are cut to this many characters.
MAX_VALUE_CHARS = 500
MAX_REASON_CHARS = 300
#: Exit status of a worker whose function kept running after its time limit.
TIMEOUT_EXIT = 124
#: Cap on one frame from the worker, beyond what a valid reply for `n` texts can need.
FRAME_SLACK_BYTES = 64 * 1024


class ProtocolError(Exception):
    """A worker's reply was not a well-formed message of the expected kind."""


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode(frame: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"not a JSON frame ({type(e).__name__})") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolError("not a message object")
    return msg


def max_frame_bytes(n_texts: int) -> int:
    """Largest frame a correct reply for `n_texts` values can take (UTF-8 JSON, escaped)."""
    return FRAME_SLACK_BYTES + n_texts * (MAX_VALUE_CHARS * 6 + 16)


def _short_str(v: Any, what: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > MAX_REASON_CHARS:
        raise ProtocolError(f"{what} is not a short string")
    return v


def check_ready(msg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The isolation layers a `ready` message reports, checked."""
    if msg.get("op") == "refused":
        raise ProtocolError("refused")
    layers = msg.get("layers")
    if msg.get("op") != "ready" or not isinstance(layers, dict):
        raise ProtocolError("expected a ready message")
    for name, info in layers.items():
        if not (isinstance(name, str) and isinstance(info, dict)):
            raise ProtocolError("malformed layer report")
        if not isinstance(info.get("active"), bool) or not isinstance(info.get("detail"), str):
            raise ProtocolError("malformed layer report")
    return layers


def check_loaded(msg: dict[str, Any], fid: str) -> str | None:
    """The load error (None when the function loaded) of a `loaded` reply for `fid`."""
    if msg.get("op") != "loaded" or msg.get("fid") != fid:
        raise ProtocolError(f"expected the load reply for {fid!r}")
    return _short_str(msg.get("error"), "error")


def check_result(
    msg: dict[str, Any], fid: str, n: int
) -> tuple[list[str | None] | None, str | None]:
    """(values, error) of a `result` reply for `fid` over `n` texts, checked."""
    if msg.get("op") != "result" or msg.get("fid") != fid:
        raise ProtocolError(f"expected the result for {fid!r}")
    error = _short_str(msg.get("error"), "error")
    values = msg.get("values")
    if error is not None:
        return None, error
    if not isinstance(values, list) or len(values) != n:
        raise ProtocolError(f"expected {n} values")
    for v in values:
        if v is not None and (not isinstance(v, str) or len(v) > MAX_VALUE_CHARS):
            raise ProtocolError("a value is not a string of at most 500 characters")
    return values, None
