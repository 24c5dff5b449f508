"""Constrained functions of the small local LLM (issue 23): code+ with and without them.

For each corpus, code+ runs twice in one workspace, without and then with
`EvaporateConfig(constrained=True)` (`extraction.constrained`); the second run reads the
sample's direct answers from the cache, so its extra LLM work is the constrained stage alone.
Reported per corpus: per-attribute F1 both ways, constrained functions generated / kept /
kept by attribute, the constrained stage's calls and tokens, and wall times.

    python benchmarks/extraction_constrained.py --corpora febrl,metadata,rdatasets
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from benchmarks.extraction_real import METADATA_ATTRIBUTES, metadata_folder  # noqa: E402

SOURCE = "llm-constrained"


def corpus(name: str, root: Path, args) -> tuple[Path, pd.DataFrame, list[str]]:
    from extraction.corpus import RDATASETS_PAGE_ATTRIBUTES, febrl_corpus, rdatasets_pages

    folder = root / name
    if name == "febrl":
        gold = febrl_corpus(folder, n=args.n, seed=args.seed)
        return folder, gold, ["surname", "postcode", "date_of_birth"]
    if name == "metadata":
        g = metadata_folder(folder, args.metadata_n)
        gold = pd.DataFrame([{"path": p, **v} for p, v in g.items()])
        return folder, gold, METADATA_ATTRIBUTES
    if name == "rdatasets":
        return (
            folder,
            rdatasets_pages(folder, n=args.n_pages, seed=args.seed),
            list(RDATASETS_PAGE_ATTRIBUTES),
        )
    raise SystemExit(f"unknown corpus {name!r}: use febrl, metadata or rdatasets")


def measure(name: str, llm, root: Path, args) -> dict:
    from extraction import Evaporate, EvaporateConfig

    folder, gold, attrs = corpus(name, root, args)
    out: dict = {"documents": len(gold), "attributes": attrs}
    for constrained in (False, True):
        cfg = EvaporateConfig(
            attributes=tuple(attrs), sample_size=args.sample_size,
            num_candidates=args.num_candidates, seed=args.seed, constrained=constrained,
        )  # fmt: skip
        t0 = time.perf_counter()
        res = Evaporate(llm=llm, workspace=root / f"ws_{name}", progress=not args.quiet).run(
            folder, config=cfg, gold=gold, resume=False
        )
        wall = time.perf_counter() - t0
        ev = res.evaluate(gold).set_index("attribute")
        f = res.functions
        mine = f[f["source"].eq(SOURCE)]
        tok = res.tokens.set_index("stage")
        key = "with_constrained" if constrained else "without"
        out[key] = {
            "f1": ev["f1"].round(3).to_dict(),
            "wall_s": round(wall, 1),
            "kept_by_source": f[f["kept"]].groupby("source").size().to_dict(),
        }
        if constrained:
            st = tok.loc["constrained"] if "constrained" in tok.index else None
            out[key].update(
                constrained_generated=len(mine),
                constrained_kept=int(mine["kept"].sum()),
                constrained_kept_by_attribute=mine[mine["kept"]]["attribute"].value_counts()
                .to_dict(),
                constrained_calls=int(st["calls"]) if st is not None else 0,
                constrained_tokens=int(st["prompt_tokens"] + st["completion_tokens"])
                if st is not None else 0,
                constrained_functions=[
                    {"attribute": r.attribute, "code": r.code.splitlines()[2], "kept": bool(r.kept),
                     "precision": round(float(r.precision), 3), "reason": r.reason}
                    for r in mine.itertuples()
                ],
            )  # fmt: skip
        print(name, key, out[key]["f1"], out[key]["wall_s"], "s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="febrl,metadata,rdatasets")
    ap.add_argument("--llm", default=None, help="a local LLM spec (default: embedded SmolLM2)")
    ap.add_argument("--n", type=int, default=40, help="FEBRL documents")
    ap.add_argument("--n-pages", type=int, default=12, help="R help pages")
    ap.add_argument("--metadata-n", type=int, default=14)
    ap.add_argument("--sample-size", type=int, default=4)
    ap.add_argument("--num-candidates", type=int, default=0, help="free-form LLM functions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="constrained")
    ap.add_argument("--root", default=None, help="corpora and workspaces (reuse: cached LLM)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    from toolkit.llm import get_llm

    llm = get_llm(args.llm)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="loom-constrained-"))
    results: dict = {"llm": llm.name, "sample_size": args.sample_size,
                     "num_candidates": args.num_candidates, "corpora": {}}  # fmt: skip
    for name in args.corpora.split(","):
        results["corpora"][name] = measure(name, llm, root, args)
        path = write_results(f"extraction-{args.tag}", "cpu", results)  # after each corpus
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
