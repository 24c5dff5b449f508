"""Appliers: run LFs over a DataFrame (or a dask DataFrame) into a label matrix L (n x m)."""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from labeling.arguments import whole_number_at_least
from labeling.constants import ABSTAIN
from labeling.lf import LabelingFunction, Row, begin_batch, end_batch
from labeling.lf.checks import LFError, as_vote, shadowed_field_hint, vectorized_votes
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress


class ApplierMetadata(NamedTuple):
    """Faults per LF (only non-zero with fault_tolerant=True): rows where the LF raised or
    returned a value that is not a vote; `errors` holds the first such problem per LF."""

    faults: dict[str, int]
    errors: dict[str, str] = {}


def _check_lfs(lfs: Sequence[Any]) -> list[Any]:
    lfs = list(lfs)
    if not lfs:
        raise LoomError("no labeling functions given")
    names = []
    for lf in lfs:
        if not callable(lf) or not hasattr(lf, "name"):
            raise LoomError(
                f"{lf!r} is not a labeling function: decorate it with @labeling_function()"
            )
        names.append(lf.name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LoomError(f"LF names must be unique; repeated: {dup}")
    return lfs


# state inherited by forked workers (so LFs written in a notebook need not be picklable)
_FORK_STATE: dict[str, Any] = {}


def _rows_worker(bounds: tuple[int, int]) -> tuple[np.ndarray, dict[str, int], dict[str, str]]:
    st = _FORK_STATE
    return _apply_rows(
        st["records"][bounds[0] : bounds[1]],
        st["index"][bounds[0] : bounds[1]],
        st["lfs"],
        st["fault_tolerant"],
        st["cardinality"],
        st["row_type"],
    )


def _apply_rows(
    records: list[dict],
    index: Sequence[Any],
    lfs: list[Any],
    fault_tolerant: bool,
    cardinality: int | None,
    row_type: str,
    bar: Any = None,
) -> tuple[np.ndarray, dict[str, int], dict[str, str]]:
    """Votes of row LFs, faults per LF and the first fault's message per LF."""
    out = np.full((len(records), len(lfs)), ABSTAIN, dtype=np.int64)
    faults = dict.fromkeys((lf.name for lf in lfs), 0)
    errors: dict[str, str] = {}
    for r, (rec, idx) in enumerate(zip(records, index)):
        if row_type == "series":
            x: Any = pd.Series(rec, name=idx)
        else:
            x = Row(rec)
            x.name = idx
        for j, lf in enumerate(lfs):
            try:
                out[r, j] = as_vote(lf(x), lf.name, idx, cardinality)
            except LFError as e:  # a value that is not a vote
                if not fault_tolerant:
                    raise LFError(
                        f"{e}; fix the LF or apply with fault_tolerant=True to record abstains "
                        "and count the faults"
                    ) from None
                faults[lf.name] += 1
                errors.setdefault(lf.name, str(e))
            except Exception as e:
                faults[lf.name] += 1
                if fault_tolerant and lf.name in errors:
                    continue
                msg = (
                    f"LF {lf.name!r} raised on row {idx!r} ({type(e).__name__}: {e})"
                    f"{shadowed_field_hint(lf, rec, row_type, idx)}"
                )
                if fault_tolerant:
                    errors[lf.name] = msg
                    continue
                raise LFError(
                    f"{msg}. Fix the LF or apply with fault_tolerant=True to record abstains and "
                    "count the faults"
                ) from e
        if bar is not None and r % 1000 == 999:
            bar.update(1000)
    return out, faults, errors


class LFApplier:
    """Apply LFs to a DataFrame: vectorized LFs on the whole frame, row LFs per data point.

    Row LFs may be Snorkel LFs (`snorkel.labeling.labeling_function`): they get a data point
    whose fields read as `x.text` or `x["text"]` (`row_type="series"` passes a pandas Series,
    exactly as Snorkel's PandasLFApplier does).
    """

    def __init__(
        self, lfs: Sequence[Any], cardinality: int | None = None, row_type: str = "row"
    ) -> None:
        self.lfs = _check_lfs(lfs)
        self.names = [lf.name for lf in self.lfs]
        if cardinality is not None and not whole_number_at_least(cardinality, 2):
            raise LoomError(
                f"LFApplier(cardinality={cardinality!r}): use the number of classes k (an "
                "integer >= 2; votes are then checked to be -1 or 0..k-1), or None to skip the check"
            )
        self.cardinality = None if cardinality is None else int(cardinality)
        if row_type not in ("row", "series"):
            raise LoomError(f"row_type must be 'row' or 'series', got {row_type!r}")
        self.row_type = row_type

    def __repr__(self) -> str:
        return f"LFApplier, LFs: {self.names}"

    def apply(
        self,
        df: pd.DataFrame | Sequence[Any],
        n_jobs: int = 1,
        progress: bool | None = None,
        fault_tolerant: bool = False,
        return_meta: bool = False,
        min_rows_per_job: int = 20_000,
    ) -> np.ndarray | tuple[np.ndarray, ApplierMetadata]:
        """L (n, m) int64, -1 = abstain; `n_jobs` > 1 forks processes for the row LFs.

        progress: show bars (None: on in notebooks and terminals). fault_tolerant: an LF that
        raises, or returns a value that is not a vote, abstains on that row instead of stopping
        the run; the faults are counted per LF (`return_meta=True`) and warned about.
        """
        L, meta = self._apply(df, n_jobs, progress, fault_tolerant, min_rows_per_job)
        if fault_tolerant and any(meta.faults.values()):
            warnings.warn(_faults_message(meta.faults, meta.errors), stacklevel=2)
        return (L, meta) if return_meta else L

    def _apply(
        self,
        df: pd.DataFrame | Sequence[Any],
        n_jobs: int = 1,
        progress: bool | None = None,
        fault_tolerant: bool = False,
        min_rows_per_job: int = 20_000,
    ) -> tuple[np.ndarray, ApplierMetadata]:
        from tqdm.auto import tqdm

        if not whole_number_at_least(min_rows_per_job, 1):
            raise LoomError(
                f"LFApplier.apply(min_rows_per_job={min_rows_per_job!r}): use a positive number "
                "of rows (a process is forked only when each gets at least that many)"
            )
        progress = resolve_progress(progress)

        if not isinstance(df, pd.DataFrame):
            if isinstance(df, (list, tuple)) and df and all(hasattr(x, "__dict__") for x in df):
                df = pd.DataFrame([vars(x) for x in df])
            else:
                raise LoomError(
                    f"LFApplier.apply needs a pandas DataFrame (or a list of objects), got {type(df).__name__}"
                )
        n = len(df)
        L = np.full((n, len(self.lfs)), ABSTAIN, dtype=np.int64)
        faults = dict.fromkeys(self.names, 0)
        errors: dict[str, str] = {}
        vec = [j for j, lf in enumerate(self.lfs) if getattr(lf, "vectorized", False)]
        rows = [j for j, lf in enumerate(self.lfs) if not getattr(lf, "vectorized", False)]
        begin_batch()
        try:
            with tqdm(
                total=len(vec), desc="vectorized LFs", disable=not progress or not vec, leave=False
            ) as bar:
                for j in vec:
                    lf = self.lfs[j]
                    bar.update(1)
                    try:
                        out = lf(df)
                    except LoomError:
                        raise
                    except Exception as e:
                        span = f"{df.index[0]!r}..{df.index[-1]!r}" if n else "(none)"
                        msg = (
                            f"vectorized LF {lf.name!r} raised on the batch of rows {span} "
                            f"({type(e).__name__}: {e})"
                        )
                        if fault_tolerant:
                            faults[lf.name] += n
                            errors.setdefault(lf.name, msg)
                            continue
                        raise LFError(f"{msg}; fix the LF or apply with fault_tolerant=True") from e
                    L[:, j], bad, problem = vectorized_votes(
                        out, lf.name, df.index, self.cardinality, fault_tolerant
                    )
                    if bad:
                        faults[lf.name] += bad
                        errors.setdefault(lf.name, problem)
        finally:
            end_batch()
        if rows and n:
            row_lfs = [self.lfs[j] for j in rows]
            records = df.to_dict("records")
            index = df.index.tolist()
            jobs = min(
                max(1, n_jobs if n_jobs > 0 else os.cpu_count() or 1), max(1, n // min_rows_per_job)
            )
            if jobs <= 1 or "fork" not in mp.get_all_start_methods():
                with tqdm(total=n, desc="row LFs", disable=not progress, leave=False) as bar:
                    res = [
                        _apply_rows(
                            records,
                            index,
                            row_lfs,
                            fault_tolerant,
                            self.cardinality,
                            self.row_type,
                            bar,
                        )
                    ]
            else:
                _FORK_STATE.update(
                    records=records,
                    index=index,
                    lfs=row_lfs,
                    fault_tolerant=fault_tolerant,
                    cardinality=self.cardinality,
                    row_type=self.row_type,
                )
                edges = np.linspace(0, n, jobs * 4 + 1).astype(int)
                bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
                try:
                    with mp.get_context("fork").Pool(jobs) as pool:
                        res = list(
                            tqdm(
                                pool.imap(_rows_worker, bounds),
                                total=len(bounds),
                                desc="row LFs",
                                disable=not progress,
                                leave=False,
                            )
                        )
                finally:
                    _FORK_STATE.clear()
            L[:, rows] = np.vstack([r[0] for r in res])
            for _, f, errs in res:
                for k, v in f.items():
                    faults[k] += v
                for k, v in errs.items():
                    errors.setdefault(k, v)
        return L, ApplierMetadata(faults, errors)


PandasLFApplier = LFApplier


class DaskLFApplier:
    """Apply LFs to a dask DataFrame, one LFApplier per partition on the dask scheduler in use
    (e.g. a `dask.distributed` Client or LocalCluster); rows come back in partition order."""

    def __init__(
        self, lfs: Sequence[Any], cardinality: int | None = None, row_type: str = "row"
    ) -> None:
        self.applier = LFApplier(lfs, cardinality, row_type)
        self.names = self.applier.names

    def apply(
        self,
        ddf: Any,
        fault_tolerant: bool = False,
        return_meta: bool = False,
        scheduler: Any = None,
    ) -> np.ndarray | tuple[np.ndarray, ApplierMetadata]:
        """L (n, m) int64 for the whole dask DataFrame."""
        import dask

        if not hasattr(ddf, "to_delayed"):
            raise LoomError(
                f"DaskLFApplier.apply needs a dask DataFrame, got {type(ddf).__name__}; use LFApplier for pandas"
            )
        applier = self.applier

        def run(part: pd.DataFrame) -> tuple[np.ndarray, ApplierMetadata]:
            # no warning per partition: one for the whole frame, below
            return applier._apply(part, progress=False, fault_tolerant=fault_tolerant)

        tasks = [dask.delayed(run)(p) for p in ddf.to_delayed()]
        kw = {"scheduler": scheduler} if scheduler is not None else {}
        results = dask.compute(*tasks, **kw)
        L = (
            np.vstack([r[0] for r in results])
            if results
            else np.zeros((0, len(self.names)), np.int64)
        )
        faults = dict.fromkeys(self.names, 0)
        errors: dict[str, str] = {}
        for _, meta in results:
            for k, v in meta.faults.items():
                faults[k] += v
            for k, v in meta.errors.items():
                errors.setdefault(k, v)
        if fault_tolerant and any(faults.values()):
            warnings.warn(_faults_message(faults, errors), stacklevel=2)
        return (L, ApplierMetadata(faults, errors)) if return_meta else L


def _faults_message(faults: dict[str, int], errors: dict[str, str]) -> str:
    bad = {k: v for k, v in faults.items() if v}
    first = "; ".join(errors[k] for k in bad if k in errors)
    return (
        f"LFs raised or returned values that are not votes on some rows (recorded as abstain): "
        f"{bad}. First problem per LF: {first}"
    )


def lf_names(lfs: Sequence[LabelingFunction]) -> list[str]:
    """Names of LFs, in order."""
    return [lf.name for lf in lfs]
