"""`loom doctor`: what this installation gives loom, and what that means before a long run.

Sandbox isolation layers first, then the embedded LLM (backend and measured speed), the
encoder, GPU, Dask and Chromium; every line says what it means for the user. Fast: one
sandbox worker, one 50-token generation and one encoded sentence.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import sys
import time

from toolkit.errors import LoomError

#: tokens generated to measure the LLM's speed
SPEED_TOKENS = 50
MISSING = "missing"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this installation provides: sandbox, LLM speed, encoder, GPU, Dask, Chromium",
        description="Starts one sandbox worker and reports which operating-system layers "
        "isolate LLM-written extraction functions here, then loads the LLM and measures its "
        "speed on a 50-token generation, loads the encoder, and reports GPU, Dask and "
        "Chromium; each line says what it means. Exits 1 when a sandbox layer is missing or "
        "the LLM or encoder cannot load. Takes a few seconds.",
    )
    p.add_argument(
        "--sandbox-allow-missing",
        default="",
        metavar="LAYERS",
        help="comma-separated layers to accept as missing (as `loom extract` takes them)",
    )
    p.add_argument("--llm", default=None, help="LLM to check, as `loom extract --llm` takes it")
    p.add_argument(
        "--embedder", default=None, help="encoder to check, as `loom extract --embedder` takes it"
    )
    p.set_defaults(func=cmd_doctor)


def _line(name: str, found: str, meaning: str = "") -> str:
    return f"  {name:<12} {found}" + (f"\n  {'':<12}   -> {meaning}" if meaning else "")


def gpu_line() -> tuple[str, bool]:
    """torch and the GPU, and what running on it (or not) means."""
    try:
        import torch
    except ImportError:
        return _line("torch", "not installed", "encoders and label models cannot run"), False
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return (
            _line(
                "GPU",
                f"{name} (torch {torch.__version__}, {torch.cuda.device_count()} device(s))",
                "encoders, label models and the vector index run on the GPU",
            ),
            True,
        )
    return (
        _line(
            "GPU",
            f"none (torch {torch.__version__}, CPU only)",
            "everything runs on the CPU: fine for thousands of rows; embedding 100k texts "
            "or long documents (M2-BERT) takes minutes to hours",
        ),
        True,
    )


def llm_line(spec: str | None) -> tuple[str, bool]:
    """The LLM's backend and its measured generation speed, and what it means for extraction."""
    from toolkit.llm import get_llm

    llama = importlib.util.find_spec("llama_cpp") is not None
    t0 = time.perf_counter()
    try:
        llm = get_llm(spec, cache=False)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = llm.complete(
            ["Describe a city in one long paragraph."],
            max_tokens=SPEED_TOKENS,
            temperature=0.0,
            seed=0,
        )[0]
        took = time.perf_counter() - t0
    except (LoomError, OSError, RuntimeError, ValueError) as e:
        return _line("LLM", f"{MISSING}: {e}", "`loom extract` cannot run with this LLM"), False
    tokens = max(out.completion_tokens, 1)
    rate = tokens / took if took > 0 else float("inf")
    backend = (
        "server"
        if spec and spec.startswith(("http://", "https://"))
        else ("llama.cpp" if llm.name.startswith("gguf:") else "transformers")
    )
    hint = "" if llama or backend != "transformers" else "; pip install 'loom[llamacpp]' is faster"
    return (
        _line(
            "LLM",
            f"{llm.name} via {backend}: {rate:.0f} tokens/s ({tokens} tokens in {took:.1f} s, "
            f"loaded in {load:.1f} s)",
            f"a 24-token answer (--direct-tokens) takes about {24 / rate:.1f} s plus reading "
            "the document: `--mode direct` reads every document, the code modes only "
            f"--sample-size of them{hint}",
        ),
        True,
    )


def encoder_line(spec: str | None) -> tuple[str, bool]:
    """Whether the encoder loads and how fast it embeds a sentence."""
    from toolkit.embed import get_embedder

    t0 = time.perf_counter()
    try:
        emb = get_embedder(spec)
        vec = emb.encode(["loom doctor checks the encoder"])
    except (LoomError, OSError, RuntimeError, ValueError) as e:
        return (
            _line(
                "encoder",
                f"{MISSING}: {e}",
                "loom embed/link/dedup and Liger/Embroid need an encoder: give --model",
            ),
            False,
        )
    took = time.perf_counter() - t0
    return (
        _line(
            "encoder",
            f"{emb.name}: loads, dimension {vec.shape[1]} ({took:.1f} s)",
            "loom embed, link, dedup, Liger/Embroid and extraction's retrieval work offline",
        ),
        True,
    )


def dask_line() -> str:
    if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
        return _line(
            "Dask",
            MISSING,
            "runs stay in this process; pip install 'dask[distributed]' to scale out",
        )
    import dask

    return _line(
        "Dask",
        f"dask {dask.__version__} with distributed",
        "LF application and extraction can run on a LocalCluster or your cluster (docs/scale.md)",
    )


def chromium_line() -> str:
    found = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    if found is None:
        return _line(
            "Chromium",
            MISSING,
            "the app's browser test is skipped; `loom app` itself works in your own browser",
        )
    return _line("Chromium", found, "the app's browser test (tests/test_app_browser.py) runs")


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
        else:
            print("  -> `loom extract` runs LLM-written code behind every layer")
    except SandboxError as e:
        print(f"  REFUSED: {e}")
        status = 1
    print("runtime:")
    print(_line("python", f"{platform.python_version()} ({sys.executable})"))
    print(_line("platform", platform.platform()))
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = (
        f"busy: load {load:.1f}; the speeds below are lower than when idle" if load > cpus else ""
    )
    print(_line("CPUs", f"{cpus}", busy))
    for check in (gpu_line, lambda: llm_line(args.llm), lambda: encoder_line(args.embedder)):
        text, ok = check()
        print(text, flush=True)
        status = status if ok else 1
    print(dask_line())
    print(chromium_line())
    return status
