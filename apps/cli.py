"""The `loom` command line: one subcommand module per capability under apps/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

from apps.options import (
    EMBED_COMMANDS,
    DefaultsFormatter,
    add_embed_backend,
    apply_embed_backend,
)
from toolkit.errors import LoomError

COMMANDS = (
    "embed",
    "demo",
    "label",
    "extract",
    "llm_server",
    "link",
    "cluster",
    "aggregate",
    "train_linker",
    "app",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Weak supervision, extraction and record linkage on one embedding service.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"apps.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"apps.commands.{name}":
                continue  # that capability is not part of this build
            raise
        module.register(sub)
    for name, command in sub.choices.items():  # every command's --help shows its defaults
        command.formatter_class = DefaultsFormatter
        if name in EMBED_COMMANDS:
            add_embed_backend(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) == 1 else 2
    try:
        apply_embed_backend(args)
        return int(args.func(args) or 0)
    except LoomError as e:
        print(f"loom {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "resume" if args.command == "extract" else "start again"
        print(
            f"loom {args.command}: interrupted; re-run the same command to {again}", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
