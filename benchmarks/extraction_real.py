"""Real folders for the EVAPORATE benchmark (issue 23): the `.dist-info/METADATA` files of
the packages installed in this environment, renamed to .txt, with gold values parsed from
their headers by `email.parser` (independent of the extractor).

    python benchmarks/extraction.py --metadata                # the default embedded LLM
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import time
from pathlib import Path

METADATA_ATTRIBUTES = ["name", "version", "summary", "license"]


def metadata_folder(folder: Path, n: int = 14) -> dict[str, dict[str, str]]:
    """Write `n` METADATA files (packages whose four headers are one line, by name) into
    `folder` as <name>.txt; returns the gold values per file name."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for d in importlib.metadata.distributions():
        text = d.read_text("METADATA")
        if not text:
            continue
        msg = email.parser.Parser().parsestr(text, headersonly=True)
        gold = {a: msg.get(a.capitalize()) for a in METADATA_ATTRIBUTES}
        if all(v and "\n" not in v and v.strip() == v for v in gold.values()):
            found.setdefault(gold["name"].lower(), (text, gold))
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key in sorted(found)[:n]:
        text, gold = found[key]
        (folder / f"{key}.txt").write_text(text, encoding="utf-8")
        out[f"{key}.txt"] = gold
    return out


def metadata_run(llm, root: Path, args) -> dict:
    """Evaporate code+ over the METADATA folder: per-attribute accuracy and wall time."""
    from extraction import Evaporate

    gold = metadata_folder(root / "metadata", args.metadata_n)
    t0 = time.perf_counter()
    res = Evaporate(llm=llm, progress=not args.quiet).run(
        root / "metadata", attributes=METADATA_ATTRIBUTES, sample_size=args.sample_size,
        num_candidates=args.num_candidates, code_tokens=args.code_tokens,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    table = res.table.merge(res.documents[["doc_id", "path"]], on="doc_id")
    acc = {
        a: sum(getattr(r, a) == gold[r.path][a] for r in table.itertuples()) / len(table)
        for a in METADATA_ATTRIBUTES
    }
    f = res.functions
    return {
        "documents": len(table),
        "accuracy": acc,
        "accuracy_all": sum(acc.values()) / len(acc),
        "wall_s": round(wall, 1),
        "tokens": int(res.tokens["prompt_tokens"].sum() + res.tokens["completion_tokens"].sum()),
        "kept_by_source": f[f["kept"]].groupby("source").size().to_dict(),
        "sample_values": res.report.get("sample_values"),
        "sample_size": args.sample_size,
        "num_candidates": args.num_candidates,
    }
