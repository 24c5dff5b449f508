"""What `Workspace.check()` reports: files and catalog rows that disagree, damaged tables,
runs whose process died. It only reads: nothing is deleted or rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

#: The kinds of finding, in the order a report lists them, with what to do about each.
KINDS = {
    "interrupted_run": "the process writing it stopped (killed or crashed) before finishing; "
    "re-run the same command (`loom extract` resumes it, other commands start a new run)",
    "missing_file": "the catalog lists the table but its file is gone; re-run the job",
    "unreadable_table": "the file is truncated or corrupt Parquet; re-run the job "
    "(the file is kept for inspection)",
    "row_count_mismatch": "the file does not hold the rows the catalog recorded (replaced "
    "after it was recorded); re-run the job",
    "unlisted_file": "a table file the catalog does not list (its writer stopped before "
    "recording it); kept as it is, a re-run writes it again",
    "unlisted_run_folder": "a run folder the catalog does not list (its process stopped while "
    "starting the run); kept as it is",
    "temp_file": "a temporary file left by an interrupted write; safe to delete",
}


@dataclass(frozen=True)
class Finding:
    """One thing `check()` found: its kind (a key of KINDS), the run and table, the file."""

    kind: str
    run: str
    name: str = ""
    path: str = ""
    detail: str = ""

    def line(self) -> str:
        what = f"run {self.run}" + (f", table {self.name}" if self.name else "")
        where = f" ({self.path})" if self.path else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.kind}: {what}{where}{detail}. {KINDS[self.kind]}"


@dataclass
class WorkspaceReport:
    """The findings of `Workspace.check()`; `ok` when there are none."""

    path: Path
    findings: list[Finding] = field(default_factory=list)
    runs_checked: int = 0
    tables_checked: int = 0
    active_runs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def interrupted_runs(self) -> list[str]:
        return [f.run for f in self.of_kind("interrupted_run")]

    def lines(self) -> list[str]:
        """One line per finding, each saying what to do."""
        return [f.line() for f in self.findings]

    def to_frame(self) -> pd.DataFrame:
        cols = ["kind", "run", "name", "path", "detail"]
        return pd.DataFrame([[getattr(f, c) for c in cols] for f in self.findings], columns=cols)

    def __str__(self) -> str:
        head = (
            f"workspace {self.path}: {self.runs_checked} runs, {self.tables_checked} tables "
            f"checked, {len(self.active_runs)} running now"
        )
        if self.ok:
            return head + "; no problems found"
        return "\n".join([head + f"; {len(self.findings)} finding(s):", *self.lines()])


def is_temp_file(name: str) -> bool:
    """Names `atomic_write_bytes` gives its temporary files (`.<target>.<random>.tmp`)."""
    return name.startswith(".") and name.endswith(".tmp")


def scan(
    root: Path,
    runs: pd.DataFrame,
    tables: pd.DataFrame,
    listing: dict[str, list[str]],
    is_active: Callable[[str], bool],
    deep: bool = True,
) -> WorkspaceReport:
    """Compare the catalog (`runs`, `tables`) with the files (`listing`: run folder -> names).

    Runs a live process is writing are skipped for files in flight (a table file is written
    before its catalog row); `deep` also opens every listed Parquet footer.
    """
    report = WorkspaceReport(root, runs_checked=len(runs), tables_checked=len(tables))
    out = report.findings
    known = set(runs["run_id"])
    active = {r for r in runs.loc[runs["status"] == "running", "run_id"] if is_active(r)}
    report.active_runs = sorted(active)
    for r in runs.itertuples():
        if r.status == "running" and r.run_id not in active:
            out.append(Finding("interrupted_run", r.run_id, detail=f"kind {r.kind}"))
    listed: dict[str, set[str]] = {}
    for t in tables.itertuples():
        listed.setdefault(t.run_id, set()).add(f"{t.name}.parquet")
        out.extend(_check_table(root, t, deep))
    for folder, names in sorted(listing.items()):
        if folder not in known:
            if not is_active(folder):
                detail = "empty" if not names else f"{len(names)} file(s)"
                out.append(
                    Finding("unlisted_run_folder", folder, path=f"runs/{folder}", detail=detail)
                )
            continue
        if folder in active:
            continue  # files in flight
        for name in sorted(names):
            rel = f"runs/{folder}/{name}"
            if is_temp_file(name):
                out.append(Finding("temp_file", folder, path=rel))
            elif name.endswith(".parquet") and name not in listed.get(folder, set()):
                out.append(Finding("unlisted_file", folder, name[: -len(".parquet")], rel))
    order = list(KINDS)
    report.findings = sorted(out, key=lambda f: (order.index(f.kind), f.run, f.name))
    return report


def _check_table(root: Path, t, deep: bool) -> Iterable[Finding]:
    rel = t.path if isinstance(t.path, str) and t.path else f"runs/{t.run_id}/{t.name}.parquet"
    path = root / rel
    if not path.exists():
        return [Finding("missing_file", t.run_id, t.name, rel)]
    if not deep:
        return []
    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as e:  # pyarrow raises several types for damaged files
        return [Finding("unreadable_table", t.run_id, t.name, rel, str(e).splitlines()[0])]
    if pd.notna(t.rows) and int(t.rows) != rows:
        detail = f"file has {rows} rows, catalog says {int(t.rows)}"
        return [Finding("row_count_mismatch", t.run_id, t.name, rel, detail)]
    return []
