"""What the CLI's commands share about their options: help that shows every default, input
files read and checked with errors naming the flag and the file, and runs that never stay
`running` after a failure."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd

from toolkit.errors import LoomError

log = logging.getLogger(__name__)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends each flag with its default, where it has one (not None / off) and the
    help text does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default is not None and default is not False and default != argparse.SUPPRESS
        if default == "" or (isinstance(default, list) and not default):
            shown = False
        if shown and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def at_least(flag: str, value: int, minimum: int = 1, what: str = "") -> int:
    """`value` of `flag` when it is at least `minimum`; else a LoomError naming the flag."""
    if value is None or value < minimum:
        hint = f" ({what})" if what else ""
        raise LoomError(f"{flag} {value}: give a whole number >= {minimum}{hint}")
    return value


def check_device(device: str | None, flag: str = "--device") -> str | None:
    """`device` when this machine has it: cpu, cuda or cuda:N (None: automatic)."""
    if device is None:
        return None
    name = device.strip().lower()
    if name == "cpu":
        return name
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise LoomError(f"{flag} {device}: use cpu, cuda or cuda:N (or leave it out)")
    try:
        import torch
    except ImportError:
        raise LoomError(f"{flag} {device}: torch is not installed; use --device cpu") from None
    if not torch.cuda.is_available():
        raise LoomError(
            f"{flag} {device}: this machine has no CUDA GPU (torch {torch.__version__}); "
            "leave --device out or give --device cpu"
        )
    index = int(name[5:]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise LoomError(
            f"{flag} {device}: only {torch.cuda.device_count()} GPU(s) here (cuda:0..."
            f"cuda:{torch.cuda.device_count() - 1})"
        )
    return name


#: The commands whose work embeds text with the shared embedding service.
EMBED_COMMANDS = (
    "embed",
    "embed-server",
    "label",
    "extract",
    "link",
    "dedup",
    "cluster",
    "aggregate",
)
#: toolkit.embed.BACKENDS, spelled here so that building the parser imports no encoder.
EMBED_BACKENDS = ("auto", "torch", "onnx")


def add_embed_backend(parser: argparse.ArgumentParser) -> None:
    """`--embed-backend`: the forward pass of the default and local sentence encoders."""
    parser.add_argument(
        "--embed-backend",
        choices=EMBED_BACKENDS,
        default=None,
        help="encoder forward pass: auto (int8 ONNX on the CPU when it agrees with torch; "
        "torch on a GPU), torch (the reference vectors) or onnx; default: "
        "$LOOM_EMBED_BACKEND, else auto",
    )


def apply_embed_backend(args: argparse.Namespace) -> None:
    """Make `--embed-backend` the process's default ($LOOM_EMBED_BACKEND), so every embedder
    the command loads (linking, labeling, extraction, the server, Dask workers) uses it."""
    backend = getattr(args, "embed_backend", None)
    if backend is not None:
        os.environ["LOOM_EMBED_BACKEND"] = backend
        log.info("embedding backend from --embed-backend: %s", backend)


def read_input(
    path: str, flag: str, columns: Mapping[str, Sequence[str] | None] | None = None
) -> pd.DataFrame:
    """The table at `path` (given with `flag`), checked to have the columns other flags name.

    columns: {"--on": ["name", "city"], ...}: a missing column is reported with the file, the
    flag that named it and the columns the file does have.
    """
    from toolkit.io import read_table

    try:
        df = read_table(path)
    except LoomError as e:
        raise LoomError(f"{flag}: {e}") from e
    for col_flag, cols in (columns or {}).items():
        missing = [c for c in cols or () if c not in df.columns]
        if missing:
            raise LoomError(
                f"{flag} {path} has no column(s) {missing} (named by {col_flag}); "
                f"its columns are {list(map(str, df.columns))}"
            )
    return df


@contextmanager
def failed_on_error(ws: Any, run: str) -> Iterator[None]:
    """Mark workspace run `run` failed, with the error in its summary, when the block raises:
    a run never stays `running` after its command ended."""
    try:
        yield
    except BaseException as e:
        error = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
        try:
            ws.finish_run(run, status="failed", summary={"error": error})
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.exception("could not mark run %s failed", run)
        raise
