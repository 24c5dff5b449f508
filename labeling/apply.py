"""Appliers: run LFs over a DataFrame (or a dask DataFrame) into a label matrix L (n x m)."""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from labeling.constants import ABSTAIN
from labeling.lf import LabelingFunction, Row, begin_batch, end_batch
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress


class LFError(LoomError, RuntimeError):
    """A labeling function raised (or returned a bad value) on some data point."""


class ApplierMetadata(NamedTuple):
    """Faults per LF (only non-zero with fault_tolerant=True)."""

    faults: dict[str, int]


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


def _as_vote(value: Any, lf: str, index: Any, cardinality: int | None) -> int:
    if value is None:
        return ABSTAIN
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise LFError(
            f"LF {lf!r} returned {value!r} on row {index!r}: return -1 (abstain) or a class 0..k-1"
        ) from None
    if v != value or v < ABSTAIN or (cardinality is not None and v >= cardinality):
        raise LFError(
            f"LF {lf!r} returned {value!r} on row {index!r}: votes must be -1 (abstain) or 0..{'k-1' if cardinality is None else cardinality - 1}"
        )
    return v


# state inherited by forked workers (so LFs written in a notebook need not be picklable)
_FORK_STATE: dict[str, Any] = {}


def _rows_worker(bounds: tuple[int, int]) -> tuple[np.ndarray, dict[str, int]]:
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
) -> tuple[np.ndarray, dict[str, int]]:
    out = np.full((len(records), len(lfs)), ABSTAIN, dtype=np.int64)
    faults = dict.fromkeys((lf.name for lf in lfs), 0)
    for r, (rec, idx) in enumerate(zip(records, index)):
        if row_type == "series":
            x: Any = pd.Series(rec, name=idx)
        else:
            x = Row(rec)
            x.name = idx
        for j, lf in enumerate(lfs):
            try:
                value = lf(x)
            except Exception as e:
                if fault_tolerant:
                    faults[lf.name] += 1
                    continue
                raise LFError(
                    f"LF {lf.name!r} raised on row {idx!r} ({type(e).__name__}: {e}); fix the LF or "
                    "apply with fault_tolerant=True to record abstains and count the faults"
                ) from e
            out[r, j] = _as_vote(value, lf.name, idx, cardinality)
        if bar is not None and r % 1000 == 999:
            bar.update(1000)
    return out, faults


def _check_vectorized_output(values: Any, lf: str, n: int, cardinality: int | None) -> np.ndarray:
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
    if arr.shape != (n,):
        raise LFError(
            f"vectorized LF {lf!r} returned shape {arr.shape}; it must return one vote per row ({n},)"
        )
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            arr = arr.astype(np.int64)
        else:
            raise LFError(
                f"vectorized LF {lf!r} returned dtype {arr.dtype}: return integer votes (-1 = abstain)"
            )
    arr = arr.astype(np.int64, copy=False)
    if n and (arr.min() < ABSTAIN or (cardinality is not None and arr.max() >= cardinality)):
        bad = int(
            np.nonzero((arr < ABSTAIN) | ((arr >= cardinality) if cardinality else False))[0][0]
        )
        raise LFError(
            f"vectorized LF {lf!r} returned {arr[bad]} at row position {bad}: votes must be -1 or 0..k-1"
        )
    return arr


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
        self.cardinality = cardinality
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

        progress: show bars (None: on in notebooks and terminals).
        """
        from tqdm.auto import tqdm

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
        vec = [j for j, lf in enumerate(self.lfs) if getattr(lf, "vectorized", False)]
        rows = [j for j, lf in enumerate(self.lfs) if not getattr(lf, "vectorized", False)]
        begin_batch()
        try:
            with tqdm(
                total=len(vec), desc="vectorized LFs", disable=not progress or not vec, leave=False
            ) as bar:
                for j in vec:
                    lf = self.lfs[j]
                    try:
                        out = lf(df)
                    except LoomError:
                        raise
                    except Exception as e:
                        if fault_tolerant:
                            faults[lf.name] += n
                            warnings.warn(
                                f"vectorized LF {lf.name!r} raised {e!r}; recorded as abstain",
                                stacklevel=2,
                            )
                            bar.update(1)
                            continue
                        raise LFError(
                            f"vectorized LF {lf.name!r} raised on the batch of rows {df.index[0]!r}..{df.index[-1]!r} "
                            f"({type(e).__name__}: {e}); fix the LF or apply with fault_tolerant=True"
                        ) from e
                    L[:, j] = _check_vectorized_output(out, lf.name, n, self.cardinality)
                    bar.update(1)
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
                    part, f = _apply_rows(
                        records,
                        index,
                        row_lfs,
                        fault_tolerant,
                        self.cardinality,
                        self.row_type,
                        bar,
                    )
                parts, fl = [part], [f]
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
                parts, fl = [r[0] for r in res], [r[1] for r in res]
            L[:, rows] = np.vstack(parts)
            for f in fl:
                for k, v in f.items():
                    faults[k] += v
        if fault_tolerant and any(faults.values()):
            bad = {k: v for k, v in faults.items() if v}
            warnings.warn(f"LFs raised on some rows (recorded as abstain): {bad}", stacklevel=2)
        return (L, ApplierMetadata(faults)) if return_meta else L


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

        def run(part: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
            L, meta = applier.apply(
                part, progress=False, fault_tolerant=fault_tolerant, return_meta=True
            )
            return L, meta.faults

        tasks = [dask.delayed(run)(p) for p in ddf.to_delayed()]
        kw = {"scheduler": scheduler} if scheduler is not None else {}
        results = dask.compute(*tasks, **kw)
        L = (
            np.vstack([r[0] for r in results])
            if results
            else np.zeros((0, len(self.names)), np.int64)
        )
        faults = dict.fromkeys(self.names, 0)
        for _, f in results:
            for k, v in f.items():
                faults[k] += v
        return (L, ApplierMetadata(faults)) if return_meta else L


def lf_names(lfs: Sequence[LabelingFunction]) -> list[str]:
    """Names of LFs, in order."""
    return [lf.name for lf in lfs]
