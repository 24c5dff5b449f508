"""Demo part: EVAPORATE code+ on generated FEBRL profile pages, letters, key-value and JSON
files, scored against the gold table, with the embedded LLM."""

from __future__ import annotations

from toolkit.workspace import Workspace

ATTRIBUTES = ["surname", "postcode", "given_name", "state", "date_of_birth"]


def run(ws: Workspace, quick: bool = False) -> dict:
    """Generate the corpus into the workspace, extract it, print F1 and tokens."""
    from extraction import Evaporate
    from extraction.corpus import febrl_corpus

    folder = ws.path / "demo_documents" / "febrl"
    gold = febrl_corpus(folder, n=50 if quick else 300, seed=1)
    ev = Evaporate(workspace=ws)
    res = ev.run(
        folder,
        attributes=ATTRIBUTES[:2] if quick else ATTRIBUTES,
        mode="code+",
        sample_size=4 if quick else 8,
        num_candidates=1 if quick else 2,
        code_tokens=96 if quick else 160,
        gold=gold,
    )
    scores = res.evaluate(gold)
    tokens = int(res.tokens["prompt_tokens"].sum() + res.tokens["completion_tokens"].sum())
    print(scores.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print(
        f"  {len(res.table)} documents, {tokens} LLM tokens, "
        f"{res.report['functions_kept']}/{res.report['functions_total']} functions kept"
    )
    return {"run": res.run_id, "f1": float(scores["f1"].iloc[-1]), "tokens": tokens}
