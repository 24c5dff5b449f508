"""`loom app [WORKSPACE] [--port P]`: explore a workspace in the Streamlit app on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from toolkit.errors import LoomError

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="explore a workspace's results in the Streamlit app")
    p.add_argument(
        "workspace", nargs="?", default="workspace", help="workspace folder (default: ./workspace)"
    )
    p.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default: 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.set_defaults(func=cmd_app)


def streamlit_command(workspace: str | Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves the app for `workspace` (headless, no usage statistics)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(MAIN),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--",
        str(Path(workspace).expanduser().resolve()),
    ]


def cmd_app(args: argparse.Namespace) -> int:
    ws = Path(args.workspace).expanduser()
    if not (ws / "catalog.duckdb").exists():
        raise LoomError(
            f"{ws} is not a loom workspace (no catalog.duckdb). Create one with "
            f"`loom demo --out {ws}`, or give the folder another loom command wrote with --out."
        )
    if not 0 < args.port < 65536:
        raise LoomError(f"--port {args.port} is not a TCP port; use 1-65535 (e.g. 8501)")
    print(
        f"loom app: serving {ws.resolve()} at http://{args.host}:{args.port} (Ctrl-C to stop)",
        flush=True,
    )
    cmd = streamlit_command(ws, args.port, args.host)
    if os.name == "posix":  # become streamlit: signals (Ctrl-C, kill) reach the server itself
        os.execv(cmd[0], cmd)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
