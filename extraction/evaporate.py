"""EVAPORATE: a folder of semi-structured documents -> a table, with provenance.

Modes: "direct" (the LLM reads every document), "code" (the best single extraction function
per attribute) and "code+" (many candidate functions, LLM-written and induced, scored on a
sample against direct extractions and ensembled by weak supervision). The LLM only ever reads
the sample in the code modes.

One run is `EvaporateConfig` -> stages -> workspace: `Evaporate.run` builds the config, and
`Evaporate.extract` calls the stages (extraction.stages, extraction.functions) in order,
each checkpointed in the workspace so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import random
from pathlib import Path
from typing import Any

import pandas as pd

from extraction import functions as fn
from extraction import stages
from extraction.budget import budget_report
from extraction.config import (
    MODES,
    EvaporateConfig,
    check_attributes,  # noqa: F401 - the CLI imports it from here
    config_from,
)
from extraction.documents import fingerprint, load_folder, readable
from extraction.heldout import add_heldout
from extraction.quality import sample_warnings
from extraction.result import ExtractionResult, evaluate
from extraction.sandbox import Sandbox
from toolkit.errors import LoomError
from toolkit.llm import token_total
from toolkit.llm.answers import USAGE_COLUMNS, AnswerLog
from toolkit.progress import deprecated_progress, resolve_progress

#: Reasons a function is not kept that are about its answers, not about the sandbox.
QUALITY_REASONS = ("abstains", "disagrees", "not among", "no code")
__all__ = ["Evaporate", "EvaporateConfig", "ExtractionResult", "MODES", "evaluate"]
log = logging.getLogger(__name__)


class Evaporate:
    """EVAPORATE over a folder of documents, on any `toolkit.llm` LLM.

    llm: an LLM, a spec for `toolkit.llm.get_llm` (URL, model path) or None for the embedded
    default; embedder: an Embedder or a spec for `toolkit.embed.get_embedder` (chunk
    retrieval and attribute dedup); workspace: a Workspace or folder to write results into;
    sandbox: where candidate functions run (docs/extraction.md, Security model); client: a
    dask.distributed Client to apply functions on a cluster.
    """

    def __init__(
        self,
        llm: Any = None,
        embedder: Any = None,
        workspace: Any = None,
        sandbox: Sandbox | None = None,
        client: Any = None,
        progress: bool | None = None,
        show_progress: bool | None = None,
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
        self.client = client
        self.progress = resolve_progress(
            deprecated_progress(progress, "show_progress", show_progress, "Evaporate")
        )

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
        sample_size: int | None = None,
        num_candidates: int | None = None,
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
        config: EvaporateConfig | None = None,
        max_llm_tokens: int | None = None,
        constrained: bool = False,
        constrained_candidates: int = 4,
    ) -> ExtractionResult:
        """Extract `attributes` (or identified ones) from every document under `folder`.

        The keywords build an `EvaporateConfig`; pass `config=` instead to reuse one.
        sample_size / num_candidates None: sized for the LLM (`config.AUTO_SIZES`).
        """
        options = dict(
            attributes=attributes, mode=mode, sample_size=sample_size,
            num_candidates=num_candidates, max_attributes=max_attributes,
            max_induced=max_induced, max_functions=max_functions, min_precision=min_precision,
            max_chars=max_chars, direct_tokens=direct_tokens, code_tokens=code_tokens, seed=seed,
            sampling=sampling, max_llm_tokens=max_llm_tokens, constrained=constrained,
            constrained_candidates=constrained_candidates,
        )  # fmt: skip
        defaults = {k: p.default for k, p in inspect.signature(Evaporate.run).parameters.items()}
        config = config_from(config, options, defaults)
        return self.extract(folder, config, gold=gold, resume=resume)

    def extract(
        self,
        folder: str | Path,
        cfg: EvaporateConfig,
        gold: pd.DataFrame | None = None,
        resume: bool = True,
    ) -> ExtractionResult:
        """Run the stages for `cfg` over `folder`, checkpointed in the workspace.

        Every LLM answer is cached as it arrives, so an interrupted run resumes losing at most
        the answers in flight; a new run over the same folder marks the stale `running` runs
        it supersedes `abandoned`."""
        if not isinstance(cfg, EvaporateConfig):
            raise LoomError(
                f"cfg is a {type(cfg).__name__}, not an EvaporateConfig: build one with "
                "EvaporateConfig(attributes=..., mode=...) or call run(folder, ...) with keywords"
            )
        cfg = cfg.resolved(server=self.llm.is_server)
        # before any work: a sandbox that cannot isolate refuses here (SandboxError)
        isolation = self.sandbox.isolation() if cfg.mode != "direct" else {}
        docs, skipped = load_folder(folder, progress=self.progress)
        if docs.empty:
            why = "; ".join(f"{p}: {r}" for p, r in skipped.head(5).itertuples(index=False))
            raise LoomError(
                f"no readable documents in {folder} ({len(skipped)} files skipped"
                f"{': ' + why if why else ''}). Give a folder of .html/.txt/.md/.json/.pdf or "
                "other UTF-8 text files"
            )
        params = {"folder": str(Path(folder).resolve()), **dataclasses.asdict(cfg),
                  "llm": self.llm.name, "documents": len(docs),
                  "documents_sha256": fingerprint(docs)}  # fmt: skip
        ws, run = self.workspace, None
        if ws is not None:
            run = self._resumable_run(params) if resume else None
            if run is None:
                run = ws.start_run("extract", params)
                self._abandon_superseded(params["folder"], run)
            saved = set(ws.tables(run)["name"])  # a run killed while starting lacks them
            if "documents" not in saved:
                ws.save_table(run, "documents", docs[["doc_id", "path", "text"]])
            if not skipped.empty and "skipped" not in saved:
                ws.save_table(run, "skipped", skipped)
        self.llm.reset_usage()
        log_path = ws.cache_dir / "llm" / "answers.sqlite" if ws is not None else None
        self._answers = AnswerLog(log_path, run or "in-memory")
        try:
            with self.llm.observe(self._answers.record):
                result = self._stages(docs, skipped, cfg, run)
            result.run_id = run
            result.report["llm_tokens"] = {  # across resumed invocations, and this one
                "total": token_total(result.tokens),
                "this_invocation": int(result.tokens["invocation_tokens"].sum()),
                "invocation": self._answers.invocation,
            }
            if isolation:
                result.report["isolation"] = isolation
            if gold is not None:
                try:
                    result.report["evaluation"] = result.evaluate(gold).to_dict(orient="records")
                except (LoomError, KeyError) as e:  # a gold table that does not fit is reported
                    result.report["evaluation_error"] = f"gold table not usable: {e}"
                    gold = None
            if ws is not None and run is not None:
                self._save(ws, run, result, gold, docs)
        except KeyboardInterrupt:
            if ws is not None and run is not None:
                # left 'running' so the same command resumes it; never marked complete
                ws.save_json(run, "interrupted", {"note": "re-run the same command to resume"})
                ws.release_run(run)  # resumable by this process or another
            raise
        except Exception as e:
            if ws is not None and run is not None:
                log.error("extract run %s failed: %s: %s", run, type(e).__name__, e)
                ws.finish_run(run, "failed", {
                    "error": f"{type(e).__name__}: {e}",
                    "resume": "the stages done so far are saved: re-running the same command "
                              "resumes from them (resume=False / --no-resume starts over)",
                })  # fmt: skip
            raise
        return result

    # ------------------------------------------------------------------ the stages
    def _stages(self, docs, skipped, cfg: EvaporateConfig, run) -> ExtractionResult:
        n = len(docs)
        sample = stages.draw_sample(docs, cfg.sample_size, random.Random(cfg.seed), cfg.sampling)
        views = [readable(t, f) for t, f in zip(docs["text"], docs["format"])]
        texts = list(docs["text"])
        report: dict[str, Any] = {
            "documents": n,
            "skipped": skipped.to_dict(orient="records"),
            "sample": [docs["doc_id"][i] for i in sample],
            "mode": cfg.mode,
        }
        attrs = list(cfg.attributes) if cfg.attributes else None
        if attrs is None:
            with self.llm.stage("schema"):
                attrs = self._checkpoint(run, "schema", lambda: stages.identify_schema(
                    self, [views[i] for i in sample], [texts[i] for i in sample], cfg))  # fmt: skip
            if not attrs:
                raise LoomError(
                    "no attributes could be identified from the sample; give them "
                    "with attributes=[...] / --attributes a,b"
                )
        report["attributes"] = attrs
        direct_idx = list(range(n)) if cfg.mode == "direct" else sample
        with self.llm.stage("direct" if cfg.mode == "direct" else "sample_direct"):
            direct = self._checkpoint(
                run, "direct_all" if cfg.mode == "direct" else "direct_sample",
                lambda: stages.direct_answers(self, [views[i] for i in direct_idx], attrs, cfg),
            )  # fmt: skip
        if cfg.mode == "direct":
            report["warnings"] = sample_warnings(direct, direct, self.llm.name)
            table = pd.DataFrame({"doc_id": docs["doc_id"], **{a: direct[a] for a in attrs}})
            table = table.replace({"": None})
            prov = stages.provenance(docs, table, attrs, {a: ["llm-direct"] * n for a in attrs})
            empty = pd.DataFrame(columns=fn.FUNCTION_COLUMNS)
            return ExtractionResult(table, empty, prov, self._tokens(cfg.mode), report, docs)
        raws = [texts[i] for i in sample]
        with self.llm.stage("choose"):  # the LLM breaks ties between a page's signals
            sample_vals, report["sample_values"] = stages.sample_values(
                raws, {a: direct[a] for a in attrs}, llm=self.llm
            )
        report["warnings"] = sample_warnings(sample_vals, direct, self.llm.name)
        budget = None
        if cfg.max_llm_tokens is not None:
            budget = lambda: cfg.max_llm_tokens - self._answers.total_tokens()  # noqa: E731
        with self.llm.stage("codegen"):
            cands = self._checkpoint_frame(
                run, "candidates",
                lambda: fn.write_candidates(self.llm, raws, sample_vals, cfg, budget=budget,
                                            progress=self.progress),
            )  # fmt: skip
        if cfg.max_llm_tokens is not None:
            report["budget"] = budget_report(cfg, cands, attrs, self._answers.total_tokens())
        scored = self._checkpoint_frame(
            run, "scores", lambda: add_heldout(  # + held-out precision/recall (k-fold)
                self.sandbox, fn.score_candidates(self.sandbox, cands, raws, sample_vals, cfg),
                raws, sample_vals, cfg.max_induced,
            ),
        )  # fmt: skip
        funcs, values, sources, unextractable = fn.apply_functions(self, scored, texts, cfg)
        for a in attrs:  # an attribute without any candidate function is still a column
            if a not in values:
                values[a], sources[a] = [None] * n, [None] * n
                unextractable.append(a)
        values = {a: values[a] for a in attrs}
        report["unextractable"] = unextractable
        if unextractable:
            report["message"] = (
                "no function could extract: " + ", ".join(unextractable) + ". The sample had no "
                "value the LLM could find for them or every candidate failed; try a larger "
                "sample_size, more num_candidates or a stronger LLM"
            )
            if cfg.num_candidates == 0:
                report["message"] += " (num_candidates=0: only LLM-free induced functions ran)"
        report["functions_kept"] = int(funcs["kept"].sum())
        report["functions_total"] = len(funcs)
        report["failures"] = [  # functions the sandbox dropped, and why
            {"attribute": r.attribute, "function_id": r.function_id, "reason": r.reason}
            for r in funcs.itertuples()
            if r.reason and not r.reason.startswith(QUALITY_REASONS)
        ]
        table = pd.DataFrame({"doc_id": list(docs["doc_id"]), **values})
        prov = stages.provenance(docs, table, attrs, sources)
        return ExtractionResult(
            table,
            funcs.reindex(columns=fn.FUNCTION_COLUMNS),
            prov,
            self._tokens(cfg.mode),
            report,
            docs,
        )

    # ------------------------------------------------------------------ workspace plumbing
    def _resumable_run(self, params: dict) -> str | None:
        runs = self.workspace.runs("extract")
        for r in runs.itertuples():  # interrupted (running) or failed part-way: resume it
            if r.status in ("running", "failed") and r.params == json.loads(
                json.dumps(params, default=str)
            ):
                return str(r.run_id)
        return None

    def _checkpoint(self, run: str | None, name: str, compute):
        """A stage whose JSON output is saved, and reused when the run resumes."""
        ws = self.workspace
        if ws is not None and run is not None:
            try:
                return ws.load_json(run, f"stage_{name}")
            except (LoomError, FileNotFoundError, OSError, ValueError):
                pass
        out = compute()
        if ws is not None and run is not None:
            ws.save_json(run, f"stage_{name}", out)
        return out

    def _checkpoint_frame(self, run: str | None, name: str, compute) -> pd.DataFrame:
        """A stage's table, checkpointed with its columns (an empty table keeps them)."""

        def frame_json():
            df = compute()
            return {"columns": list(df.columns), "records": df.to_dict(orient="records")}

        saved = self._checkpoint(run, name, frame_json)
        if isinstance(saved, list):  # a checkpoint written before the columns were kept
            return pd.DataFrame.from_records(saved)
        return pd.DataFrame.from_records(saved["records"], columns=saved["columns"])

    def _tokens(self, mode: str) -> pd.DataFrame:
        """Tokens per stage over every invocation of the run (each answer once) and, in
        `invocation_*`, what this invocation generated."""
        usage = self._answers.usage()
        usage.insert(0, "mode", mode)
        return usage[["mode", *USAGE_COLUMNS]]

    def _abandon_superseded(self, folder: str, run: str) -> None:
        """Mark `abandoned` the stale `running` extract runs over `folder` that the new `run`
        replaces (started with other options, or --no-resume); a live one is left alone."""
        ws = self.workspace
        for r in ws.runs("extract").itertuples():
            if r.run_id == run or r.status != "running" or r.params.get("folder") != folder:
                continue
            if ws.is_active(r.run_id):
                continue
            try:
                ws.finish_run(r.run_id, "abandoned", {
                    "superseded_by": run,
                    "note": "re-started with other options; its LLM answers stay in the "
                            "workspace cache, so running its options again costs no tokens",
                })  # fmt: skip
                log.info("extract run %s superseded by %s: marked abandoned", r.run_id, run)
            except LoomError as e:  # taken by another process in the meantime
                log.info("run %s not marked abandoned: %s", r.run_id, e)

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
        summary = {
            "documents": len(result.table),
            "attributes": result.report.get("attributes"),
            "mode": result.report.get("mode"),
            "llm_tokens": token_total(result.tokens),
            "llm_tokens_this_invocation": int(result.tokens["invocation_tokens"].sum()),
            "functions_kept": result.report.get("functions_kept", 0),
            "coverage": float(result.table.drop(columns=["doc_id"]).notna().mean().mean()),
        }
        if "evaluation" in result.report:
            summary["f1"] = result.report["evaluation"][-1]["f1"]
        ws.finish_run(run, "complete", summary)
