"""`loom extract DIR`: turn a folder of documents into a table (EVAPORATE) in a workspace."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract a table from a folder of documents (EVAPORATE direct/code/code+)",
        description="Turn a folder of HTML/text/Markdown/JSON/PDF documents into a table with "
        "per-value provenance. An interrupted run resumes when the same command is re-run.",
    )
    p.add_argument("folder", help="folder of documents (read recursively)")
    p.add_argument("--out", default="workspace", help="workspace folder (default: ./workspace)")
    p.add_argument("--mode", choices=["direct", "code", "code+"], default="code+")
    p.add_argument(
        "--llm",
        default=None,
        help="LLM: http(s)://host:port/v1[#model] (key from $LOOM_LLM_API_KEY), a "
        "Hugging Face model folder, a .gguf file; default: embedded SmolLM2-135M",
    )
    p.add_argument(
        "--attributes",
        default=None,
        help="comma-separated attribute names; default: identified by the LLM",
    )
    p.add_argument("--sample-size", type=int, default=10)
    p.add_argument(
        "--num-candidates",
        type=int,
        default=10,
        help="LLM-written candidate functions per attribute",
    )
    p.add_argument("--max-attributes", type=int, default=8)
    p.add_argument("--direct-tokens", type=int, default=24, help="max tokens per LLM answer")
    p.add_argument("--code-tokens", type=int, default=192, help="max tokens per function")
    p.add_argument("--gold", default=None, help="optional CSV with `path` + attribute columns")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per function call")
    p.add_argument("--workers", type=int, default=None, help="sandbox worker processes")
    p.add_argument(
        "--sandbox-allow-missing",
        default="",
        metavar="LAYERS",
        help="comma-separated sandbox layers this machine may lack (weaker isolation, your "
        "explicit choice): environment, network, landlock, user, rlimits, seccomp; see "
        "`loom doctor`",
    )
    p.add_argument("--embedder", default=None, help="embedding model (default MiniLM)")
    p.add_argument("--no-resume", action="store_true", help="start a new run")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_extract)


def config_from_args(args: argparse.Namespace):
    """The run's EvaporateConfig from the command's flags."""
    from extraction.config import EvaporateConfig
    from extraction.evaporate import check_attributes

    return EvaporateConfig(
        attributes=check_attributes(args.attributes),
        mode=args.mode,
        sample_size=args.sample_size,
        num_candidates=args.num_candidates,
        max_attributes=args.max_attributes,
        direct_tokens=args.direct_tokens,
        code_tokens=args.code_tokens,
        seed=args.seed,
    )


def cmd_extract(args: argparse.Namespace) -> int:
    import pandas as pd

    from extraction import Evaporate, Sandbox
    from extraction.sandbox import format_isolation
    from toolkit.errors import LoomError
    from toolkit.llm import token_total

    cfg = config_from_args(args)  # the one place the flags become options
    gold = None
    if args.gold:
        try:
            gold = pd.read_csv(args.gold, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:
            raise LoomError(f"cannot read the gold CSV {args.gold}: {e}") from e
    sandbox = Sandbox(
        n_workers=args.workers,
        timeout=args.timeout,
        allow_missing=[x.strip() for x in args.sandbox_allow_missing.split(",") if x.strip()],
    )
    if args.mode != "direct":
        print("sandbox isolation (LLM-written functions run behind these layers):")
        print(format_isolation(sandbox.isolation()))
    ev = Evaporate(llm=args.llm, embedder=args.embedder, workspace=args.out, sandbox=sandbox)
    res = ev.extract(args.folder, cfg, gold=gold, resume=not args.no_resume)
    total = token_total(res.tokens)
    filled = res.table.drop(columns=["doc_id"]).notna().mean()
    print(
        f"extracted {len(res.table)} documents x {len(filled)} attributes "
        f"({args.mode}, {total} LLM tokens); filled: "
        + ", ".join(f"{a} {v:.0%}" for a, v in filled.items())
    )
    if res.report.get("skipped"):
        print(f"skipped {len(res.report['skipped'])} files (see table `skipped`)")
    if res.report.get("message"):
        print(res.report["message"])
    if "evaluation" in res.report:
        ev_df = pd.DataFrame(res.report["evaluation"])
        print(ev_df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"run {res.run_id} in {ev.workspace.path}: tables table, functions, provenance, tokens")
    return 0
