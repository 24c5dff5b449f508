"""`loom doctor`: what this machine gives loom, the sandbox's isolation layers first."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="show the sandbox's isolation layers and what this machine provides",
        description="Starts one sandbox worker and reports which operating-system layers "
        "isolate LLM-written extraction functions here (before you run anything), then the "
        "Python, torch/GPU and LLM runtime in use. Exits 1 when a sandbox layer is missing.",
    )
    p.add_argument(
        "--sandbox-allow-missing",
        default="",
        metavar="LAYERS",
        help="comma-separated layers to accept as missing (as `loom extract` takes them)",
    )
    p.set_defaults(func=cmd_doctor)


def _runtime_lines() -> list[str]:
    lines = [f"  python       {platform.python_version()} ({sys.executable})"]
    lines.append(f"  platform     {platform.platform()}")
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
        lines.append(f"  torch        {torch.__version__}, {gpu}")
    except ImportError:
        lines.append("  torch        not installed")
    llama = importlib.util.find_spec("llama_cpp") is not None
    lines.append(
        "  LLM runtime  "
        + (
            "llama.cpp (fast embedded LLM)"
            if llama
            else "transformers (llama-cpp-python absent: slower)"
        )
    )
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    from extraction.sandbox import Sandbox, SandboxError, format_isolation

    allow = [x.strip() for x in args.sandbox_allow_missing.split(",") if x.strip()]
    print("sandbox isolation for LLM-written functions (docs/extraction.md, Security model):")
    status = 0
    try:
        layers = Sandbox(n_workers=1, allow_missing=allow).isolation()
        print(format_isolation(layers))
        off = [k for k, v in layers.items() if not v["active"]]
        if off:
            print(f"  WEAKER ISOLATION: {', '.join(off)} missing (allowed by you)")
            status = 1
    except SandboxError as e:
        print(f"  REFUSED: {e}")
        status = 1
    print("runtime:")
    print("\n".join(_runtime_lines()))
    return status
