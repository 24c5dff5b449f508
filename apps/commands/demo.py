"""`loom demo`: the main job end to end on the embedded defaults and bundled real data."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo into a workspace")
    p.add_argument("--out", default="workspace", help="workspace folder (default: ./workspace)")
    p.add_argument("--quick", action="store_true", help="smaller data, for tests")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from apps.demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0
