"""`loom extract DIR`: turn a folder of documents into a table (EVAPORATE) in a workspace.

Every flag and the gold file are checked before any document is read or any model loads; an
error names the flag (and the file) to fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from apps.options import at_least
from toolkit.errors import LoomError

#: the column of a gold file that joins it to the documents (path relative to the folder)
GOLD_KEY = "path"


def int_or_auto(text: str) -> int | None:
    """A whole number, or None for "auto" (sized for the LLM: `EvaporateConfig.resolved`)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'auto'") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract a table from a folder of documents (EVAPORATE direct/code/code+)",
        description="Turn a folder of HTML/text/Markdown/JSON/PDF documents (and other text "
        "files, recognised by their content) into a table with per-value provenance. An "
        "interrupted or failed run resumes when the same command is re-run.",
    )
    p.add_argument("folder", help="folder of documents (read recursively)")
    p.add_argument("--out", default="workspace", help="workspace folder")
    p.add_argument(
        "--mode",
        choices=["direct", "code", "code+"],
        default="code+",
        help="direct: the LLM reads every document; code: the best function per attribute; "
        "code+: an ensemble of functions",
    )
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
    p.add_argument(
        "--sample-size",
        type=int_or_auto,
        default="auto",
        help="documents the LLM reads (code modes), >= 1; auto: 4 with a local LLM, 10 with "
        "a server URL",
    )
    p.add_argument(
        "--num-candidates",
        type=int_or_auto,
        default="auto",
        help="LLM-written candidate functions per attribute; 0 = only LLM-free induced ones; "
        "auto: 2 with a local LLM, 10 with a server URL",
    )
    p.add_argument(
        "--max-attributes", type=int, default=8, help="most attributes the LLM may identify"
    )
    p.add_argument("--direct-tokens", type=int, default=24, help="max tokens per LLM answer")
    p.add_argument("--code-tokens", type=int, default=192, help="max tokens per function")
    p.add_argument(
        "--gold",
        default=None,
        help=f"optional CSV to score against: a `{GOLD_KEY}` column (document path relative to "
        "the folder) and one column per attribute",
    )
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per function call")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="sandbox worker processes (default: CPUs, at most 4)",
    )
    p.add_argument(
        "--sandbox-allow-missing",
        default="",
        metavar="LAYERS",
        help="comma-separated sandbox layers this machine may lack (weaker isolation, your "
        "explicit choice): environment, network, landlock, user, rlimits, seccomp; see "
        "`loom doctor`",
    )
    p.add_argument("--embedder", default=None, help="embedding model (default: MiniLM)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned LLM calls and tokens per stage, then stop (no LLM is called)",
    )
    p.add_argument(
        "--max-llm-tokens",
        type=int,
        default=None,
        help="LLM token budget of the run: when spent, no more candidate functions are "
        "generated and the report says so; default: no limit",
    )
    p.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="constrained functions: the local LLM picks an anchor and a value pattern per "
        "sample document (scored exactly) and the toolkit writes the code (local models "
        "only; a server URL keeps free-form code); default: off",
    )
    p.add_argument(
        "--constrained-candidates",
        type=int,
        default=4,
        help="most constrained functions per attribute (default 4)",
    )
    p.add_argument(
        "--requests-per-minute",
        type=float,
        default=None,
        help="most requests per minute to an --llm server URL; default: no limit",
    )
    p.add_argument(
        "--tokens-per-minute",
        type=float,
        default=None,
        help="most tokens (prompt + completion) per minute to an --llm server URL; "
        "default: no limit",
    )
    p.add_argument("--no-resume", action="store_true", help="start a new run")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the LLM")
    p.set_defaults(func=cmd_extract)


def config_from_args(args: argparse.Namespace):
    """The run's EvaporateConfig from the command's flags (a bad value names its flag)."""
    from extraction.config import EvaporateConfig
    from extraction.evaporate import check_attributes

    if args.sample_size is not None:
        at_least("--sample-size", args.sample_size, 1, "documents the LLM reads")
    if args.num_candidates is not None:
        at_least("--num-candidates", args.num_candidates, 0, "0 = only LLM-free induced functions")
    if args.max_llm_tokens is not None:
        at_least("--max-llm-tokens", args.max_llm_tokens, 1, "the run's LLM token budget")
    at_least("--max-attributes", args.max_attributes, 1)
    at_least("--direct-tokens", args.direct_tokens, 1)
    at_least("--code-tokens", args.code_tokens, 1)
    at_least("--constrained-candidates", args.constrained_candidates, 0)
    try:
        attributes = check_attributes(args.attributes)
    except LoomError as e:
        raise LoomError(f"--attributes {args.attributes}: {e}") from e
    return EvaporateConfig(
        attributes=attributes,
        mode=args.mode,
        sample_size=args.sample_size,
        num_candidates=args.num_candidates,
        max_attributes=args.max_attributes,
        direct_tokens=args.direct_tokens,
        code_tokens=args.code_tokens,
        seed=args.seed,
        max_llm_tokens=args.max_llm_tokens,
        constrained=args.constrained,
        constrained_candidates=args.constrained_candidates,
    )


def read_gold(path: str, folder: str, attributes: tuple[str, ...] | None):
    """The gold table of --gold, checked before any work: a `path` column naming documents
    under `folder` and at least one attribute column (one of --attributes when given)."""
    import pandas as pd

    try:
        gold = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LoomError(f"--gold {path}: the file does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise LoomError(f"--gold {path}: cannot read it as CSV: {e}") from e
    cols = list(map(str, gold.columns))
    if GOLD_KEY not in gold.columns:
        raise LoomError(
            f"--gold {path} has no `{GOLD_KEY}` column (the document path relative to "
            f"{folder}, e.g. a/b.html), so it cannot be joined to the documents; its columns "
            f"are {cols}"
        )
    found = [c for c in cols if c not in (GOLD_KEY, "doc_id")]
    if not found:
        raise LoomError(
            f"--gold {path} has no attribute column besides `{GOLD_KEY}`: add one column per "
            "attribute with the true values"
        )
    if attributes is not None:
        scored = [c for c in found if c in attributes]
        if not scored:
            raise LoomError(
                f"--gold {path} has attribute columns {found}, none of which is in --attributes "
                f"{','.join(attributes)}: rename the gold columns or the attributes to match"
            )
        unscored = [c for c in found if c not in attributes]
        if unscored:
            print(
                f"note: --gold columns {unscored} are not in --attributes and are not scored",
                file=sys.stderr,
            )
    root = Path(folder)
    if root.is_dir():
        known = [p for p in gold[GOLD_KEY] if (root / p).is_file()]
        if not known:
            example = ", ".join(repr(p) for p in gold[GOLD_KEY].head(3))
            raise LoomError(
                f"--gold {path}: none of its {len(gold)} `{GOLD_KEY}` values ({example}, ...) "
                f"is a file under {folder}; give paths relative to that folder"
            )
        if len(known) < len(gold):
            print(
                f"note: {len(gold) - len(known)} of {len(gold)} rows of --gold {path} name no "
                f"file under {folder}; they count as documents with no extracted value",
                file=sys.stderr,
            )
    return gold


def dry_run(folder: str, cfg, server: bool) -> int:
    """Print the run's planned LLM calls and tokens per stage; nothing is generated."""
    from extraction.budget import plan_run
    from extraction.documents import load_folder

    docs, skipped = load_folder(folder)
    if docs.empty:
        raise LoomError(f"no readable documents in {folder} ({len(skipped)} files skipped)")
    plan = plan_run(docs, cfg, server=server)
    sized = cfg.resolved(server)
    print(
        f"dry run: {len(docs)} documents ({len(skipped)} skipped), mode {sized.mode}, "
        f"sample {sized.sample_size}, {sized.num_candidates} candidates per attribute; "
        "no LLM was called. Planned LLM calls and tokens (prompt tokens estimated: ~3 "
        "characters each plus the chat template; completion tokens at most):"
    )
    print(plan.to_string(index=False))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    import pandas as pd

    from extraction import Evaporate, Sandbox
    from extraction.sandbox import format_isolation
    from toolkit.llm import get_llm, token_total

    cfg = config_from_args(args)  # the one place the flags become options
    if args.timeout <= 0:
        raise LoomError(f"--timeout {args.timeout}: give the seconds per function call, > 0")
    if args.workers is not None:
        at_least("--workers", args.workers, 1, "sandbox worker processes")
    gold = read_gold(args.gold, args.folder, cfg.attributes) if args.gold else None
    limits = {"requests_per_minute": args.requests_per_minute,
              "tokens_per_minute": args.tokens_per_minute}  # fmt: skip
    for flag, v in limits.items():
        if v is not None and v <= 0:
            raise LoomError(f"--{flag.replace('_', '-')} {v}: give a positive limit")
    server = bool(args.llm) and args.llm.startswith(("http://", "https://"))
    if not server and any(v is not None for v in limits.values()):
        raise LoomError(
            "--requests-per-minute / --tokens-per-minute limit a server: give --llm "
            "http://host:port/v1 too (a local model has no rate limit)"
        )
    if args.dry_run:
        return dry_run(args.folder, cfg, server)
    allow = [x.strip() for x in args.sandbox_allow_missing.split(",") if x.strip()]
    sandbox = Sandbox(n_workers=args.workers, timeout=args.timeout, allow_missing=allow)
    try:
        sandbox.settings()
    except LoomError as e:
        raise LoomError(f"--sandbox-allow-missing {args.sandbox_allow_missing}: {e}") from e
    try:
        llm = get_llm(args.llm, **{k: v for k, v in limits.items() if v is not None})
    except LoomError as e:
        raise LoomError(f"--llm {args.llm or '(default)'}: {e}") from e
    if args.mode != "direct":
        print("sandbox isolation (LLM-written functions run behind these layers):")
        print(format_isolation(sandbox.isolation()))
    ev = Evaporate(llm=llm, embedder=args.embedder, workspace=args.out, sandbox=sandbox)
    res = ev.extract(args.folder, cfg, gold=gold, resume=not args.no_resume)
    total = token_total(res.tokens)
    now = int(res.tokens["invocation_tokens"].sum()) if "invocation_tokens" in res.tokens else total
    filled = res.table.drop(columns=["doc_id"]).notna().mean()
    print(
        f"extracted {len(res.table)} documents x {len(filled)} attributes "
        f"({args.mode}, {total} LLM tokens, {now} generated by this invocation); filled: "
        + ", ".join(f"{a} {v:.0%}" for a, v in filled.items())
    )
    if res.report.get("budget", {}).get("message"):
        print(res.report["budget"]["message"])
    if res.report.get("skipped"):
        print(f"skipped {len(res.report['skipped'])} files (see table `skipped`)")
    if res.report.get("message"):
        print(res.report["message"])
    for w in res.report.get("warnings", []):  # e.g. sample values mostly not found
        print(f"warning: {w}", file=sys.stderr)
    if "evaluation" in res.report:
        ev_df = pd.DataFrame(res.report["evaluation"])
        print(ev_df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if res.report.get("evaluation_error"):
        print(f"warning: --gold {args.gold}: {res.report['evaluation_error']}", file=sys.stderr)
    print(f"run {res.run_id} in {ev.workspace.path}: tables table, functions, provenance, tokens")
    return 0
