"""EVAPORATE: a folder of semi-structured documents -> a table, with provenance.

Modes: "direct" (the LLM reads every document), "code" (the best single extraction function
per attribute) and "code+" (many candidate functions, LLM-written and induced, scored on a
sample against direct extractions and ensembled by weak supervision). The LLM only ever reads
the sample in the code modes.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from extraction import prompts
from extraction.candidates import induce, normalize
from extraction.documents import chunks, load_folder, readable
from extraction.ensemble import aggregate
from extraction.sandbox import Sandbox, run_on_cluster
from toolkit.errors import LoomError

MODES = ("direct", "code", "code+")


@dataclass
class ExtractionResult:
    """The table and everything needed to trust or debug it."""

    table: pd.DataFrame
    functions: pd.DataFrame
    provenance: pd.DataFrame
    tokens: pd.DataFrame
    report: dict[str, Any]
    documents: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    run_id: str | None = None

    def evaluate(self, gold: pd.DataFrame) -> pd.DataFrame:
        """Per-attribute precision/recall/F1 against `gold` (by `path` or `doc_id`)."""
        return evaluate(self.table, gold, documents=self.documents)

    def __repr__(self) -> str:
        return (
            f"ExtractionResult({len(self.table)} documents, attributes "
            f"{self.report.get('attributes')}, mode {self.report.get('mode')!r}, "
            f"{self.report.get('functions_kept', 0)}/{self.report.get('functions_total', 0)} "
            f"functions kept, run {self.run_id!r})"
        )

    def _repr_html_(self, rows: int = 10) -> str:
        """Notebook view: headline numbers, the first rows, functions and provenance."""
        import html

        tok = self.tokens
        n_tok = int(tok["prompt_tokens"].sum() + tok["completion_tokens"].sum()) if len(tok) else 0
        parts = [f"<b>{html.escape(repr(self))}</b>", f"<p>LLM tokens: {n_tok:,}</p>"]
        if self.report.get("isolation"):
            on = [k for k, v in self.report["isolation"].items() if v["active"]]
            off = [k for k, v in self.report["isolation"].items() if not v["active"]]
            parts.append(
                f"<p>sandbox layers on: {', '.join(on)}"
                + (f"; <b>OFF: {', '.join(off)}</b>" if off else "")
                + "</p>"
            )
        if self.report.get("evaluation"):
            ev = pd.DataFrame(self.report["evaluation"])
            parts += ["<p>against gold:</p>", ev.to_html(index=False, float_format="{:.3f}".format)]
        parts += [f"<p>table (first {rows} rows):</p>", self.table.head(rows).to_html(index=False)]
        if len(self.functions):
            cols = ["attribute", "function_id", "source", "sample_f1", "est_accuracy", "coverage"]
            cols += ["kept", "reason"]
            f = self.functions[[c for c in cols if c in self.functions.columns]]
            parts += [
                "<p>candidate functions:</p>",
                f.to_html(index=False, float_format="{:.3f}".format),
            ]
        parts += [
            f"<p>provenance (first {rows} rows):</p>",
            self.provenance.head(rows).to_html(index=False),
        ]
        return "\n".join(parts)


def evaluate(
    table: pd.DataFrame, gold: pd.DataFrame, documents: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Precision, recall and F1 per attribute (normalized exact match; '' = no value).

    precision = correct / predicted values, recall = correct / gold values.
    """
    key = "doc_id" if "doc_id" in gold.columns else "path"
    pred = table
    if key == "path" and "path" not in pred.columns:
        if documents is None:
            raise LoomError("gold has `path` but the table has no path: pass documents")
        pred = pred.merge(documents[["doc_id", "path"]], on="doc_id")
    attrs = [c for c in gold.columns if c in pred.columns and c not in ("doc_id", "path")]
    if not attrs:
        raise LoomError("gold and table share no attribute columns")
    merged = gold.merge(pred, on=key, how="left", suffixes=("_gold", "_pred"))
    rows = []
    for a in attrs:
        g = [normalize(v) for v in merged[f"{a}_gold"]]
        p = [normalize(v) for v in merged[f"{a}_pred"]]
        correct = sum(1 for x, y in zip(g, p) if x and x == y)
        npred, ngold = sum(1 for y in p if y), sum(1 for x in g if x)
        prec = correct / npred if npred else 0.0
        rec = correct / ngold if ngold else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        rows.append(
            {
                "attribute": a,
                "precision": prec,
                "recall": rec,
                "f1": f1,
                "predicted": npred,
                "gold": ngold,
            }
        )
    out = pd.DataFrame(rows)
    mean = out[["precision", "recall", "f1"]].mean()
    out.loc[len(out)] = {
        "attribute": "(mean)",
        **mean.to_dict(),
        "predicted": out["predicted"].sum(),
        "gold": out["gold"].sum(),
    }
    return out


def _draw_sample(docs: pd.DataFrame, k: int, rng: random.Random, how: str) -> list[int]:
    """Sample document indices. "stratified" draws round-robin over groups of documents that
    likely share a layout (same sub-folder and format), so every layout is seen by the
    functions; "random" is the paper's uniform sample."""
    n = len(docs)
    k = min(k, n)
    if how == "random":
        return sorted(rng.sample(range(n), k))
    groups: dict[tuple, list[int]] = {}
    for i, (path, fmt) in enumerate(zip(docs["path"], docs["format"])):
        groups.setdefault((str(Path(path).parent), fmt), []).append(i)
    pools = [rng.sample(v, len(v)) for _, v in sorted(groups.items())]
    rng.shuffle(pools)
    out: list[int] = []
    while len(out) < k:
        for pool in pools:
            if pool and len(out) < k:
                out.append(pool.pop())
    return sorted(out)


def _attr_words(a: str) -> str:
    return a.replace("_", " ")


def _span(text: str, value: str | None) -> tuple[int, int]:
    if not value:
        return -1, -1
    i = text.find(value)
    if i < 0:
        m = re.search(re.escape(value), text, re.IGNORECASE)
        if not m:
            return -1, -1
        i = m.start()
    return i, i + len(value)


class Evaporate:
    """EVAPORATE over a folder of documents, on any `toolkit.llm` LLM.

    llm: an LLM, a spec for `toolkit.llm.get_llm` (URL, model path) or None for the embedded
    default; embedder: an Embedder or a spec for `toolkit.embed.get_embedder` (chunk
    retrieval and attribute dedup); workspace: a Workspace or folder to write results into.
    """

    def __init__(
        self,
        llm: Any = None,
        embedder: Any = None,
        workspace: Any = None,
        sandbox: Sandbox | None = None,
        client: Any = None,
        show_progress: bool = True,
    ) -> None:
        from toolkit.llm import LLM, get_llm
        from toolkit.workspace import Workspace

        self.workspace = (
            workspace
            if workspace is None or isinstance(workspace, Workspace)
            else Workspace(workspace)
        )
        self.llm = llm if isinstance(llm, LLM) else get_llm(llm)
        if self.workspace is not None and self.llm.cache is not None:
            self.llm.set_cache(self.workspace.cache_dir / "llm" / "completions.sqlite")
        self._embedder_spec = embedder
        self._embedder = None
        self.sandbox = sandbox or Sandbox()
        self.client = client  # a dask.distributed Client: apply functions on the cluster
        self.show_progress = show_progress

    @property
    def embedder(self):
        if self._embedder is None:
            from toolkit.embed import Embedder, get_embedder

            self._embedder = (
                self._embedder_spec
                if isinstance(self._embedder_spec, Embedder)
                else get_embedder(self._embedder_spec)
            )
        return self._embedder

    # ------------------------------------------------------------------ public entry point
    def run(
        self,
        folder: str | Path,
        attributes: list[str] | str | None = None,
        mode: str = "code+",
        sample_size: int = 10,
        num_candidates: int = 10,
        max_attributes: int = 8,
        max_induced: int = 12,
        max_functions: int = 24,
        min_precision: float = 0.5,
        max_chars: int = 1500,
        direct_tokens: int = 24,
        code_tokens: int = 192,
        seed: int = 0,
        sampling: str = "stratified",
        gold: pd.DataFrame | None = None,
        resume: bool = True,
    ) -> ExtractionResult:
        """Extract `attributes` (or identified ones) from every document under `folder`."""
        if sampling not in ("stratified", "random"):
            raise LoomError(f"unknown sampling {sampling!r}: use 'stratified' or 'random'")
        self._sampling = sampling
        if mode not in MODES:
            raise LoomError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if sample_size < 1 or num_candidates < 0:
            raise LoomError("sample_size must be >= 1 and num_candidates >= 0")
        attrs = self._check_attributes(attributes)
        # before any work: a sandbox that cannot isolate refuses here (SandboxError)
        isolation = self.sandbox.isolation() if mode != "direct" else {}
        docs, skipped = load_folder(folder, show_progress=self.show_progress)
        if docs.empty:
            why = "; ".join(f"{p}: {r}" for p, r in skipped.head(5).itertuples(index=False))
            raise LoomError(
                f"no readable documents in {folder} ({len(skipped)} files skipped"
                f"{': ' + why if why else ''}). Give a folder of .html/.txt/.md/.json/.pdf files"
            )
        params = {
            "folder": str(Path(folder).resolve()),
            "attributes": attrs,
            "mode": mode,
            "sample_size": sample_size,
            "num_candidates": num_candidates,
            "max_attributes": max_attributes,
            "seed": seed,
            "llm": self.llm.name,
            "max_chars": max_chars,
            "max_induced": max_induced,
            "max_functions": max_functions,
            "sampling": sampling,
            "min_precision": min_precision,
            "documents": len(docs),
        }
        ws, run = self.workspace, None
        if ws is not None:
            run = self._resumable_run(params) if resume else None
            if run is None:
                run = ws.start_run("extract", params)
                ws.save_table(run, "documents", docs[["doc_id", "path", "text"]])
                if not skipped.empty:
                    ws.save_table(run, "skipped", skipped)
        self.llm.reset_usage()
        try:
            result = self._run(
                docs,
                skipped,
                attrs,
                mode,
                sample_size,
                num_candidates,
                max_attributes,
                max_induced,
                max_functions,
                min_precision,
                max_chars,
                direct_tokens,
                code_tokens,
                seed,
                run,
            )
        except BaseException:
            if ws is not None and run is not None:
                # left 'running' so the same command resumes it; never marked complete
                ws.save_json(run, "interrupted", {"note": "re-run the same command to resume"})
            raise
        result.run_id = run
        if isolation:
            result.report["isolation"] = isolation
        if gold is not None:
            try:
                scores = result.evaluate(gold)
                result.report["evaluation"] = scores.to_dict(orient="records")
            except (LoomError, KeyError) as e:  # a gold table that does not fit is reported
                result.report["evaluation_error"] = f"gold table not usable: {e}"
                gold = None
        if ws is not None and run is not None:
            self._save(ws, run, result, gold, docs)
        return result

    # ------------------------------------------------------------------ stages
    def _check_attributes(self, attributes) -> list[str] | None:
        if attributes is None:
            return None
        if isinstance(attributes, str):
            attributes = [a for a in attributes.split(",")]
        names = []
        for a in attributes:
            n = prompts.attribute_name(a) if isinstance(a, str) else ""
            if not n:
                raise LoomError(
                    f"attribute {a!r} is not a usable name: give short names like "
                    "'date_of_birth' or 'postcode'"
                )
            if n not in names:
                names.append(n)
        if not names:
            raise LoomError("attributes is empty: give at least one name or leave it out")
        return names

    def _resumable_run(self, params: dict) -> str | None:
        runs = self.workspace.runs("extract")
        for r in runs.itertuples():
            if r.status == "running" and r.params == json.loads(json.dumps(params, default=str)):
                return str(r.run_id)
        return None

    def _stage(self, run: str | None, name: str, fn):
        """Checkpointed stage: reuse its saved JSON output on resume."""
        ws = self.workspace
        if ws is not None and run is not None:
            try:
                return ws.load_json(run, f"stage_{name}")
            except (LoomError, FileNotFoundError, OSError, ValueError):
                pass
        out = fn()
        if ws is not None and run is not None:
            ws.save_json(run, f"stage_{name}", out)
        return out

    def _run(
        self,
        docs,
        skipped,
        attrs,
        mode,
        sample_size,
        num_candidates,
        max_attributes,
        max_induced,
        max_functions,
        min_precision,
        max_chars,
        direct_tokens,
        code_tokens,
        seed,
        run,
    ) -> ExtractionResult:
        rng = random.Random(seed)
        n = len(docs)
        sample = _draw_sample(docs, sample_size, rng, getattr(self, "_sampling", "random"))
        views = [readable(t, f) for t, f in zip(docs["text"], docs["format"])]
        report: dict[str, Any] = {
            "documents": n,
            "skipped": skipped.to_dict(orient="records"),
            "sample": [docs["doc_id"][i] for i in sample],
            "mode": mode,
        }
        if attrs is None:
            with self.llm.stage("schema"):
                attrs = self._stage(
                    run,
                    "schema",
                    lambda: self._schema(
                        [views[i] for i in sample],
                        [docs["text"][i] for i in sample],
                        max_attributes,
                        max_chars,
                    ),
                )
            if not attrs:
                raise LoomError(
                    "no attributes could be identified from the sample; give them "
                    "with attributes=[...] / --attributes a,b"
                )
        report["attributes"] = attrs
        direct_idx = list(range(n)) if mode == "direct" else sample
        with self.llm.stage("direct" if mode == "direct" else "sample_direct"):
            direct = self._stage(
                run,
                "direct_all" if mode == "direct" else "direct_sample",
                lambda: self._direct(
                    [views[i] for i in direct_idx], attrs, max_chars, direct_tokens
                ),
            )
        docs_text = list(docs["text"])
        if mode == "direct":
            table = pd.DataFrame({"doc_id": docs["doc_id"], **{a: direct[a] for a in attrs}})
            table = table.replace({"": None})
            prov = self._provenance(docs, table, attrs, {a: ["llm-direct"] * n for a in attrs})
            return ExtractionResult(
                table, pd.DataFrame(columns=_FUNC_COLS), prov, self._tokens(mode), report, docs
            )
        sample_vals = {a: direct[a] for a in attrs}
        with self.llm.stage("codegen"):
            cands = self._stage(
                run,
                "candidates",
                lambda: self._candidates(
                    [docs_text[i] for i in sample],
                    [views[i] for i in sample],
                    sample_vals,
                    attrs,
                    num_candidates,
                    max_induced,
                    code_tokens,
                    seed,
                ),
            )
        scored = self._stage(
            run,
            "scores",
            lambda: self._score(
                cands,
                [docs_text[i] for i in sample],
                sample_vals,
                min_precision,
                max_functions,
                mode,
            ),
        )
        funcs = pd.DataFrame(scored, columns=_FUNC_COLS + ["precision", "recall"])
        kept = funcs[funcs["kept"]]
        kept_code = {
            f"{r.attribute}::{r.function_id}": cands[r.attribute][r.function_id]["code"]
            for r in kept.itertuples()
        }
        if self.client is not None:
            all_out, failures = run_on_cluster(self.sandbox, kept_code, docs_text, self.client)
        else:
            all_out, failures = self.sandbox.run(
                kept_code, docs_text, show_progress=self.show_progress
            )
        table = {"doc_id": list(docs["doc_id"])}
        sources: dict[str, list] = {}
        est: dict[tuple[str, str], tuple[float, float]] = {}
        unextractable = []
        for a in attrs:
            votes = {
                fid: all_out[f"{a}::{fid}"]
                for fid in kept[kept.attribute == a].function_id
                if f"{a}::{fid}" in all_out
            }
            for key, why in failures.items():
                if key.startswith(f"{a}::"):
                    funcs.loc[
                        (funcs.attribute == a) & (funcs.function_id == key[len(a) + 2 :]),
                        ["kept", "reason"],
                    ] = [False, f"failed on the full run: {why}"]
            if not votes:
                unextractable.append(a)
                table[a], sources[a] = [None] * n, [None] * n
                continue
            prior = {
                fid: float(
                    funcs[(funcs.attribute == a) & (funcs.function_id == fid)]["sample_f1"].iloc[0]
                )
                for fid in votes
            }
            if mode == "code":
                fid = next(iter(votes))
                table[a] = votes[fid]
                sources[a] = [fid if v else None for v in votes[fid]]
                cov = float(np.mean([bool(v) for v in votes[fid]]))
                est[(a, fid)] = (prior[fid], cov)
            else:
                vals, src, _, acc, cov = aggregate(
                    votes, {f: max(p, 0.5) for f, p in prior.items()}
                )
                table[a], sources[a] = vals, src
                for fid in votes:
                    est[(a, fid)] = (acc[fid], cov[fid])
        for (a, fid), (acc_, cov_) in est.items():
            sel = (funcs.attribute == a) & (funcs.function_id == fid)
            funcs.loc[sel, "est_accuracy"] = acc_
            funcs.loc[sel, "coverage"] = cov_
        report["unextractable"] = unextractable
        if unextractable:
            report["message"] = (
                "no function could extract: " + ", ".join(unextractable) + ". The sample had no "
                "value the LLM could find for them or every candidate failed; try a larger "
                "sample_size, more num_candidates or a stronger LLM"
            )
        report["functions_kept"] = int(funcs["kept"].sum())
        report["functions_total"] = len(funcs)
        report["failures"] = {k: v for k, v in failures.items()}
        table_df = pd.DataFrame(table)
        prov = self._provenance(docs, table_df, attrs, sources)
        funcs = funcs.drop(columns=["precision", "recall"])
        return ExtractionResult(table_df, funcs, prov, self._tokens(mode), report, docs)

    def _schema(self, views, raws, max_attributes, max_chars) -> list[str]:
        texts = [chunks(v, max_chars)[0][1] for v in views]
        comps = self.llm.complete([prompts.SCHEMA.format(text=t) for t in texts], max_tokens=48)
        mentions: Counter[str] = Counter()
        for c in comps:
            for a in set(prompts.parse_attribute_list(c.text)):
                mentions[a] += 1
        for raw in raws:  # labels the markup itself declares: "Label:" lines, th/dt cells, keys
            labels = set(re.findall(r"(?m)^[ \t-]*\**([A-Za-z][\w ]{1,30}?)\**\s*[:=]", raw))
            labels |= set(re.findall(r"(?i)<(?:th|dt)[^>]*>\s*([^<]{2,30}?)\s*</(?:th|dt)>", raw))
            labels |= set(re.findall(r'"([A-Za-z_][\w ]{1,30})"\s*:\s*[^{\[\s]', raw))
            for lab in labels:
                a = prompts.attribute_name(lab)
                if a:
                    mentions[a] += 1
        ranked = [a for a, c in mentions.most_common() if c >= max(2, len(raws) // 3)]
        if not ranked:
            ranked = [a for a, _ in mentions.most_common(max_attributes)]
        if len(ranked) > 1:
            vecs = self.embedder.encode([_attr_words(a) for a in ranked])
            keep: list[int] = []
            for i in range(len(ranked)):
                if all(float(vecs[i] @ vecs[j]) < 0.8 for j in keep):
                    keep.append(i)
            ranked = [ranked[i] for i in keep]
        return ranked[:max_attributes]

    def _best_chunk(self, view: str, attribute: str, max_chars: int) -> str:
        parts = chunks(view, max_chars)
        if len(parts) == 1:
            return parts[0][1]
        from toolkit.index import VectorIndex

        vecs = self.embedder.encode([p[1] for p in parts])
        index = VectorIndex(vecs.shape[1], metric="cosine")
        index.add(vecs)
        q = self.embedder.encode([_attr_words(attribute)])
        _, ids = index.search(q, 1)
        return parts[int(ids[0, 0])][1]

    def _direct(self, views, attrs, max_chars, max_tokens) -> dict[str, list[str]]:
        from tqdm.auto import tqdm

        jobs = [(i, a) for i in range(len(views)) for a in attrs]
        out = {a: [""] * len(views) for a in attrs}
        step = 32
        bar = tqdm(total=len(jobs), desc="direct extraction", disable=not self.show_progress)
        for s in range(0, len(jobs), step):
            part = jobs[s : s + step]
            ps = [
                prompts.DIRECT.format(
                    text=self._best_chunk(views[i], a, max_chars), attribute=_attr_words(a)
                )
                for i, a in part
            ]
            comps = self.llm.complete(ps, max_tokens=max_tokens, stop=["\n"])
            for (i, a), c in zip(part, comps):
                out[a][i] = prompts.ground(c.text, views[i], a)
            bar.update(len(part))
        bar.close()
        return out

    def _candidates(
        self, raws, views, sample_vals, attrs, num_candidates, max_induced, code_tokens, seed
    ) -> dict[str, dict[str, dict]]:
        rng = random.Random(seed)
        out: dict[str, dict[str, dict]] = {}
        jobs = []
        for a in attrs:
            out[a] = {}
            pairs = [(raws[i], v) for i, v in enumerate(sample_vals[a]) if v]
            for k, (kind, code) in enumerate(induce(pairs, max_induced)):
                out[a][f"induced_{kind}_{k}"] = {"source": "induced", "code": code}
            for k in range(num_candidates):
                with_vals = [i for i, v in enumerate(sample_vals[a]) if v]
                pool = with_vals if (k % 2 == 1 and with_vals) else list(range(len(raws)))
                pick = rng.sample(pool, min(2, len(pool)))
                examples = "\n\n".join(
                    f"--- document {j + 1} ---\n{raws[i][:700]}" for j, i in enumerate(pick)
                )
                if k % 2 == 1 and with_vals:
                    vals = ", ".join(f'"{sample_vals[a][i]}"' for i in pick)
                    p = prompts.CODE_WITH_VALUES.format(
                        examples=examples, values=vals, attribute=_attr_words(a)
                    )
                else:
                    p = prompts.CODE_PLAIN.format(examples=examples, attribute=_attr_words(a))
                temp = 0.0 if k < 2 else 0.7
                jobs.append((a, k, p, temp))
        for temp in sorted({j[3] for j in jobs}):
            part = [j for j in jobs if j[3] == temp]
            comps = self.llm.complete(
                [j[2] for j in part], max_tokens=code_tokens, temperature=temp, seed=seed
            )
            for (a, k, _, _), c in zip(part, comps):
                code = prompts.parse_code(c.text)
                out[a][f"llm_{k}"] = {"source": "llm", "code": code or "", "raw": c.text[:2000]}
        return out

    def _score(self, cands, raws, sample_vals, min_precision, max_functions, mode) -> list[list]:
        codes = {f"{a}::{fid}": c["code"] for a, fs in cands.items() for fid, c in fs.items()}
        outs, failures = self.sandbox.run(codes, raws)
        rows = []
        for a, fs in cands.items():
            target = [normalize(v) for v in sample_vals[a]]
            scored = []
            for fid, c in fs.items():
                key = f"{a}::{fid}"
                if not c["code"]:
                    rows.append(
                        [
                            a,
                            fid,
                            c["source"],
                            "",
                            0.0,
                            0.0,
                            0.0,
                            False,
                            "no code in the LLM's answer",
                            0.0,
                            0.0,
                        ]
                    )
                    continue
                if key in failures:
                    rows.append(
                        [
                            a,
                            fid,
                            c["source"],
                            c["code"],
                            0.0,
                            0.0,
                            0.0,
                            False,
                            failures[key],
                            0.0,
                            0.0,
                        ]
                    )
                    continue
                got = [normalize(v) for v in outs[key]]
                correct = sum(1 for g, t in zip(got, target) if g and g == t)
                npred, ngold = sum(1 for g in got if g), sum(1 for t in target if t)
                p = correct / npred if npred else 0.0
                r = correct / ngold if ngold else 0.0
                f1 = 2 * p * r / (p + r) if p + r else 0.0
                cov = npred / len(got) if got else 0.0
                if npred == 0:
                    reason = "abstains on every sample document"
                elif correct == 0 or p < min_precision:
                    reason = f"disagrees with direct extraction on the sample (precision {p:.2f})"
                else:
                    reason = ""
                scored.append(
                    [a, fid, c["source"], c["code"], f1, cov, f1, reason == "", reason, p, r]
                )
            scored.sort(key=lambda r: (-r[4], -r[9], r[1]))
            limit = 1 if mode == "code" else max_functions
            for k, r in enumerate(scored):
                if r[7] and k >= limit:
                    r[7], r[8] = False, f"not among the best {limit} on the sample"
            rows.extend(scored)
        return rows

    def _provenance(self, docs, table, attrs, sources) -> pd.DataFrame:
        rows = []
        for i, (doc_id, text) in enumerate(zip(docs["doc_id"], docs["text"])):
            for a in attrs:
                v = table[a].iloc[i]
                if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
                    continue
                s, e = _span(text, str(v))
                rows.append((doc_id, a, str(v), sources[a][i] or "", s, e))
        return pd.DataFrame(
            rows, columns=["doc_id", "attribute", "value", "function_id", "start", "end"]
        )

    def _tokens(self, mode: str) -> pd.DataFrame:
        rows = [{"mode": mode, "stage": st, **u} for st, u in self.llm.usage.items()]
        cols = ["mode", "stage", "calls", "cached_calls", "prompt_tokens", "completion_tokens"]
        return pd.DataFrame(rows, columns=cols)

    def _save(self, ws, run, result: ExtractionResult, gold, docs) -> None:
        ws.save_table(run, "table", result.table)
        ws.save_table(run, "functions", result.functions)
        ws.save_table(run, "provenance", result.provenance)
        ws.save_table(run, "tokens", result.tokens)
        if gold is not None:
            g = gold
            if "doc_id" not in g.columns and "path" in g.columns:
                g = docs[["doc_id", "path"]].merge(g, on="path").drop(columns=["path"])
            ws.save_table(run, "gold", g)
        ws.save_json(run, "report", result.report)
        tok = result.tokens
        summary = {
            "documents": len(result.table),
            "attributes": result.report.get("attributes"),
            "mode": result.report.get("mode"),
            "llm_tokens": int(tok["prompt_tokens"].sum() + tok["completion_tokens"].sum()),
            "functions_kept": result.report.get("functions_kept", 0),
            "coverage": float(result.table.drop(columns=["doc_id"]).notna().mean().mean()),
        }
        if "evaluation" in result.report:
            summary["f1"] = result.report["evaluation"][-1]["f1"]
        ws.finish_run(run, "complete", summary)


_FUNC_COLS = [
    "attribute",
    "function_id",
    "source",
    "code",
    "est_accuracy",
    "coverage",
    "sample_f1",
    "kept",
    "reason",
]
