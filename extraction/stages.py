"""The stages of an extraction run that are not about candidate functions: the sample, the
schema, the direct answers and the provenance of every value."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from extraction import prompts
from extraction.candidates import normalize
from extraction.chooser import choose_values
from extraction.config import RESERVED, EvaporateConfig
from extraction.documents import chunks
from extraction.functions import attr_words
from extraction.structure import declared_values, find_labels, label_spans

log = logging.getLogger(__name__)


def draw_sample(docs: pd.DataFrame, k: int, rng: random.Random, how: str) -> list[int]:
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


def value_span(text: str, value: str | None) -> tuple[int, int]:
    if not value:
        return -1, -1
    i = text.find(value)
    if i < 0:
        m = re.search(re.escape(value), text, re.IGNORECASE)
        if not m:
            return -1, -1
        i = m.start()
    return i, i + len(value)


def identify_schema(
    tools: Any, views: list[str], raws: list[str], cfg: EvaporateConfig
) -> list[str]:
    """Attribute names from the sample: the LLM's lists and the labels the markup declares."""
    max_attributes, max_chars = cfg.max_attributes, cfg.max_chars
    texts = [chunks(v, max_chars)[0][1] for v in views]
    comps = tools.llm.complete([prompts.SCHEMA.format(text=t) for t in texts], max_tokens=48)
    mentions: Counter[str] = Counter()
    for c in comps:
        for a in dict.fromkeys(prompts.parse_attribute_list(c.text)):  # ordered: no hash luck
            mentions[a] += 1
    for raw in raws:  # labels the markup itself declares: "Label:" lines, th/dt cells, keys
        names = [prompts.attribute_name(lab) for lab, _ in find_labels(raw)]
        for a in dict.fromkeys(names):  # in document order, so ties rank the same every run
            if a:
                mentions[a] += 1
    for a in RESERVED:  # the table's own columns: an attribute of that name would replace one
        if mentions.pop(a, None):
            log.info("schema: %r is a column of every result table, not proposed", a)
    ranked = [a for a, c in mentions.most_common() if c >= max(2, len(raws) // 3)]
    if not ranked:
        ranked = [a for a, _ in mentions.most_common(max_attributes)]
    if len(ranked) > 1:
        vecs = tools.embedder.encode([attr_words(a) for a in ranked])
        keep: list[int] = []
        for i in range(len(ranked)):
            if all(float(vecs[i] @ vecs[j]) < 0.8 for j in keep):
                keep.append(i)
        ranked = [ranked[i] for i in keep]
    return ranked[:max_attributes]


def best_chunk(embedder: Any, view: str, attribute: str, max_chars: int) -> str:
    """The part of a long document most about `attribute` (the whole of a short one).

    A part that holds the attribute's label (`Label:` line, `Label | value` row, JSON key)
    ranks before semantic similarity: the first such part is shown."""
    parts = chunks(view, max_chars)
    if len(parts) == 1:
        return parts[0][1]
    for s in label_spans(view, attribute):  # the first part holding the whole label line
        end = view.find("\n", s)
        end = len(view) if end < 0 else end
        for start, part in parts:
            if start <= s and min(end, s + max_chars // 2) <= start + len(part):
                return part
    from toolkit.index import VectorIndex

    vecs = embedder.encode([p[1] for p in parts])
    index = VectorIndex(vecs.shape[1], metric="cosine")
    index.add(vecs)
    q = embedder.encode([attr_words(attribute)])
    _, ids = index.search(q, 1)
    return parts[int(ids[0, 0])][1]


def direct_answers(
    tools: Any, views: list[str], attrs: list[str], cfg: EvaporateConfig
) -> dict[str, list[str]]:
    """The LLM's answer for every (document, attribute), grounded in the document."""
    max_chars, max_tokens = cfg.max_chars, cfg.direct_tokens
    jobs = [(i, a) for i in range(len(views)) for a in attrs]
    out = {a: [""] * len(views) for a in attrs}
    step = 32  # prompts built at a time; the bar moves and the cache fills per answer
    bar = tqdm(total=len(jobs), desc="direct extraction", disable=not tools.progress)
    for s in range(0, len(jobs), step):
        part = jobs[s : s + step]
        ps = [
            prompts.DIRECT.format(
                text=best_chunk(  # the embedder is loaded only for a document to split
                    tools.embedder if len(views[i]) > max_chars else None, views[i], a, max_chars
                ),
                attribute=attr_words(a),
            )
            for i, a in part
        ]
        comps = tools.llm.complete(
            ps, max_tokens=max_tokens, stop=["\n"], on_answer=lambda _c: bar.update(1)
        )
        for (i, a), c in zip(part, comps):
            out[a][i] = prompts.ground(c.text, views[i], a)
    bar.close()
    return out


def sample_values(
    raws: list[str], answers: dict[str, list[str]], llm: Any = None
) -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """The sample's values: what a document's own label for the attribute declares (a
    `Version:` header line, a `<th>Version</th>` cell, a `"version"` key), else what a web
    page's signals declare (`extraction.chooser`: og/JSON-LD/<title>/<time>; `llm` chooses
    where they tie), else the LLM's grounded answer. Returns them and, per attribute, how
    many came from labels, from page signals, from the LLM, and how many LLM answers a label
    contradicted."""
    values: dict[str, list[str]] = {}
    stats: dict[str, dict[str, int]] = {}
    for a, said in answers.items():
        labelled = declared_values(raws, a)
        page, page_stats = choose_values(raws, a, said, llm=llm)
        declared = [d or p for d, p in zip(labelled, page)]
        values[a] = [d or s for d, s in zip(declared, said)]
        stats[a] = {
            **{f"page_{k}": n for k, n in page_stats.items()},
            "from_labels": sum(1 for d in labelled if d),
            "from_llm": sum(1 for d, s in zip(declared, said) if s and not d),
            "llm_contradicted": sum(
                1 for d, s in zip(declared, said) if d and s and normalize(d) != normalize(s)
            ),
        }
    return values, stats


def provenance(
    docs: pd.DataFrame, table: pd.DataFrame, attrs: list[str], sources: dict
) -> pd.DataFrame:
    """Where each value came from: document, attribute, value, function, character span."""
    rows = []
    for i, (doc_id, text) in enumerate(zip(docs["doc_id"], docs["text"])):
        for a in attrs:
            v = table[a].iloc[i]
            if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
                continue
            s, e = value_span(text, str(v))
            rows.append((doc_id, a, str(v), sources[a][i] or "", s, e))
    return pd.DataFrame(
        rows, columns=["doc_id", "attribute", "value", "function_id", "start", "end"]
    )
