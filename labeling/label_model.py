"""Label models: turn a label matrix L (n rows x m LFs, -1 = abstain) into probabilistic labels.

All models share one interface (`BaseLabelModel`): fit, predict_proba, predict, score,
get_weights, save/load. The probabilistic ones (`LabelModel`, `DawidSkene`, `TripletModel`)
share one parameterisation: a class balance p(y) and, per LF, a table
P(lf_i = a | Y = y) over a in {abstain, 0..k-1}, so abstaining is evidence too (an LF that
only ever votes one class is informative through when it fires). Work is vectorised in torch
(one-hot blocks times small matrices), on the GPU when there is one.
"""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import LoomError

ABSTAIN = -1
TIE_POLICIES = ("abstain", "random", "true-random")


class LabelMatrixError(LoomError, ValueError):
    """A label matrix (or labels) with a bad shape or values."""


class LabelDtypeError(LoomError, TypeError):
    """A label matrix that does not hold integers."""


def _default_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_L(
    L: Any, cardinality: int | None = None, m: int | None = None, what: str = "L"
) -> np.ndarray:
    """Validate a label matrix and return it as int64 (n, m), or raise a clear error."""
    if isinstance(L, pd.DataFrame):
        L = L.to_numpy()
    if hasattr(L, "detach"):  # torch tensor
        L = L.detach().cpu().numpy()
    arr = np.asarray(L)
    if arr.ndim != 2:
        raise LabelMatrixError(
            f"{what} must be a 2-D array (n data points x m labeling functions), got shape "
            f"{arr.shape}; for a single LF use L.reshape(-1, 1)"
        )
    if arr.dtype.kind not in "iu":
        if (
            arr.dtype.kind == "f"
            and arr.size
            and np.isfinite(arr).all()
            and (arr == np.round(arr)).all()
        ):
            hint = f"convert it with {what}.astype(int)"
        else:
            hint = "label matrices hold integer votes: -1 (abstain) or 0..k-1"
        raise LabelDtypeError(f"{what} has dtype {arr.dtype}, expected integers; {hint}")
    n, mm = arr.shape
    if n == 0 or mm == 0:
        raise LabelMatrixError(
            f"{what} is empty (shape {arr.shape}): apply at least one LF to at least one row"
        )
    if m is not None and mm != m:
        raise LabelMatrixError(
            f"{what} has {mm} LF columns but the model was fitted on {m}: apply the same LFs in the same order"
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < ABSTAIN:
        col = int(np.nonzero((arr < ABSTAIN).any(0))[0][0])
        raise LabelMatrixError(
            f"{what} has value {lo} (e.g. in column {col}); votes must be -1 (abstain) or 0..k-1"
        )
    if cardinality is not None and hi >= cardinality:
        col = int(np.nonzero((arr >= cardinality).any(0))[0][0])
        raise LabelMatrixError(
            f"{what} has value {hi} (e.g. in column {col}) but cardinality is {cardinality}: "
            f"votes must be -1 (abstain) or 0..{cardinality - 1}. Pass the right cardinality, or if "
            "your LFs use 0 for abstain and 1..k for classes (old Snorkel), subtract 1"
        )
    return arr.astype(np.int64, copy=False)


def check_Y(Y: Any, n: int, cardinality: int, what: str = "Y") -> np.ndarray:
    """Validate gold labels (-1 = unknown allowed) of length n."""
    y = np.asarray(Y.to_numpy() if isinstance(Y, pd.Series) else Y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or len(y) != n:
        raise LabelMatrixError(f"{what} must be a 1-D array of length {n}, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise LabelDtypeError(
                f"{what} has dtype {y.dtype}: gold labels must be integers 0..k-1"
            )
    if len(y) and (y.min() < -1 or y.max() >= cardinality):
        raise LabelMatrixError(
            f"{what} has labels outside 0..{cardinality - 1} (min {y.min()}, max {y.max()})"
        )
    return y.astype(np.int64, copy=False)


class _hybridmethod:
    """`Model.load(path)` returns a new model; `model.load(path)` also fills `model` (Snorkel style)."""

    def __init__(self, func: Any) -> None:
        self.func = func

    def __get__(self, obj: Any, cls: type) -> Any:
        def bound(*args: Any, **kwargs: Any) -> Any:
            return self.func(cls, obj, *args, **kwargs)

        bound.__doc__ = self.func.__doc__
        return bound


class BaseLabelModel:
    """Common interface of every label model (votes are -1 = abstain or 0..k-1)."""

    def __init__(self, cardinality: int = 2, device: str | None = None) -> None:
        if not isinstance(cardinality, (int, np.integer)) or cardinality < 2:
            raise LabelMatrixError(
                f"cardinality must be an integer >= 2 (number of classes), got {cardinality!r}"
            )
        self.cardinality = int(cardinality)
        self.device = device
        self.m: int | None = None
        self.class_balance: np.ndarray | None = None
        self.lf_names: list[str] | None = None
        self.fit_info: dict[str, Any] = {}

    # ---- to implement -------------------------------------------------------------------
    def _fit(self, L: np.ndarray, **kw: Any) -> None:
        raise NotImplementedError

    def _proba(self, L: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def get_weights(self) -> np.ndarray:
        """Estimated accuracy of each LF when it votes, shape (m,)."""
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # ---- shared -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.m is None:
            raise LoomError(f"{type(self).__name__} is not fitted yet: call fit(L_train) first")

    def _set_class_balance(self, class_balance: Any, Y_dev: Any, n_hint: int) -> bool:
        """Set self.class_balance from the user's prior or Y_dev; return whether it is fixed."""
        k = self.cardinality
        if class_balance is not None:
            p = np.asarray(class_balance, dtype=np.float64).reshape(-1)
            if len(p) != k:
                raise LabelMatrixError(f"class_balance has {len(p)} entries but cardinality is {k}")
            if (p <= 0).any() or not np.isfinite(p).all():
                raise LabelMatrixError(f"class_balance must be positive, got {p.tolist()}")
            self.class_balance = p / p.sum()
            return True
        if Y_dev is not None:
            y = check_Y(Y_dev, len(np.asarray(Y_dev)), k, "Y_dev")
            y = y[y >= 0]
            if len(y) == 0:
                raise LabelMatrixError("Y_dev has no labels (all -1)")
            counts = np.bincount(y, minlength=k).astype(np.float64) + 1.0
            self.class_balance = counts / counts.sum()
            return True
        return False

    def fit(
        self,
        L_train: Any,
        Y_dev: Any = None,
        class_balance: Any = None,
        n_epochs: int = 200,
        lr: float = 0.01,
        seed: int = 0,
        progress: bool = False,
        lf_names: list[str] | None = None,
        **kwargs: Any,
    ) -> BaseLabelModel:
        """Fit on an (n, m) label matrix; Y_dev / class_balance only set the class prior."""
        L = check_L(L_train, self.cardinality, what="L_train")
        n, m = L.shape
        if isinstance(L_train, pd.DataFrame) and lf_names is None:
            lf_names = [str(c) for c in L_train.columns]
        self.lf_names = list(lf_names) if lf_names is not None else [f"lf_{i}" for i in range(m)]
        if len(self.lf_names) != m:
            raise LabelMatrixError(
                f"lf_names has {len(self.lf_names)} names but L_train has {m} columns"
            )
        silent = ~(L >= 0).any(0)
        if silent.any():
            names = [self.lf_names[i] for i in np.nonzero(silent)[0][:5]]
            warnings.warn(
                f"{int(silent.sum())} LF(s) never vote in L_train (e.g. {names}): they carry no "
                "information and get the prior accuracy 1/k; check them with LFAnalysis",
                stacklevel=2,
            )
        empty = int((L < 0).all(1).sum())
        self.fit_info = {"n": n, "m": m, "rows_without_votes": empty}
        if empty:
            warnings.warn(
                f"{empty} of {n} rows have no votes: predict_proba gives them P(Y | every LF abstained) "
                "and -1 from predict (drop them with filter_unlabeled_dataframe)",
                stacklevel=2,
            )
        fixed = self._set_class_balance(class_balance, Y_dev, n)
        self._fixed_balance = fixed
        self._fit(L, n_epochs=n_epochs, lr=lr, seed=seed, progress=progress, **kwargs)
        self.m = m
        return self

    def predict_proba(self, L: Any) -> np.ndarray:
        """P(Y = y | votes) for each row, shape (n, k) (abstaining is evidence too)."""
        self._check_fitted()
        return self._proba(check_L(L, self.cardinality, self.m))

    def predict(
        self,
        L: Any,
        return_probs: bool = False,
        tie_break_policy: str = "abstain",
        seed: int = 0,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Most likely class per row; ties -> -1 ("abstain") or a random tied class ("random").

        Rows where every LF abstained always get -1.
        """
        if tie_break_policy not in TIE_POLICIES:
            raise LoomError(
                f"tie_break_policy must be one of {TIE_POLICIES}, got {tie_break_policy!r}"
            )
        L = check_L(L, self.cardinality, self.m)
        probs = self.predict_proba(L)
        pred = probs.argmax(1).astype(np.int64)
        top = probs.max(1, keepdims=True)
        tied_mask = np.abs(probs - top) < 1e-6
        ties = tied_mask.sum(1) > 1
        if ties.any():
            if tie_break_policy == "abstain":
                pred[ties] = ABSTAIN
            else:
                rng = np.random.default_rng(None if tie_break_policy == "true-random" else seed)
                r = rng.random((int(ties.sum()), self.cardinality)) * tied_mask[ties]
                pred[ties] = r.argmax(1)
        pred[(L < 0).all(1)] = ABSTAIN
        return (pred, probs) if return_probs else pred

    def score(
        self,
        L: Any,
        Y: Any,
        metrics: list[str] | tuple[str, ...] = ("accuracy",),
        tie_break_policy: str = "abstain",
    ) -> dict[str, float]:
        """Metrics of predict(L) against gold Y on the rows the model labels (-1 preds dropped)."""
        from labeling.metrics import metric_score

        L = check_L(L, self.cardinality, self.m)
        y = check_Y(Y, len(L), self.cardinality)
        pred, probs = self.predict(L, return_probs=True, tie_break_policy=tie_break_policy)
        return {
            mt: metric_score(
                y,
                pred,
                probs=probs,
                metric=mt,
                filter_dict={"preds": [ABSTAIN], "golds": [ABSTAIN]},
            )
            for mt in metrics
        }

    # ---- persistence / display ----------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one .npz file."""
        self._check_fitted()
        path = Path(path)
        meta = {
            "class": type(self).__name__,
            "cardinality": self.cardinality,
            "m": self.m,
            "lf_names": self.lf_names,
            "fit_info": self.fit_info,
            "config": self._config(),
        }
        arrays = dict(self._state())
        if self.class_balance is not None:
            arrays["class_balance"] = np.asarray(self.class_balance)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta, default=str)), **arrays)
        return path

    def _config(self) -> dict[str, Any]:
        return {}

    @_hybridmethod
    def load(cls, obj: Any, path: str | Path) -> BaseLabelModel:
        """Load a model written by save(); `LabelModel.load(p)` or `model.load(p)`."""
        path = Path(path)
        if not path.exists():
            raise LoomError(f"no saved label model at {path}")
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        klass = MODELS.get(meta["class"])
        if klass is None:
            raise LoomError(f"{path} holds an unknown model class {meta['class']!r}")
        target = cls if cls is not BaseLabelModel else klass
        if not issubclass(klass, target):
            raise LoomError(f"{path} holds a {meta['class']}, not a {target.__name__}")
        model = klass(cardinality=meta["cardinality"], **meta.get("config", {}))
        model.m = meta["m"]
        model.lf_names = meta["lf_names"]
        model.fit_info = meta.get("fit_info", {})
        model.class_balance = arrays.pop("class_balance", None)
        model._set_state(arrays)
        if obj is not None:
            obj.__dict__.update(model.__dict__)
            return obj
        return model

    def weights_frame(self) -> pd.DataFrame:
        """LF names with their estimated accuracies (the workspace's `weights` table)."""
        self._check_fitted()
        return pd.DataFrame({"lf": self.lf_names, "accuracy": self.get_weights()})

    def __repr__(self) -> str:
        state = f"fitted on {self.m} LFs" if self.m is not None else "not fitted"
        return f"{type(self).__name__}(cardinality={self.cardinality}, {state})"

    def _repr_html_(self) -> str:
        head = html.escape(repr(self))
        if self.m is None:
            return f"<b>{head}</b>"
        rows = "".join(
            f"<tr><td>{html.escape(str(n))}</td><td>{w:.3f}</td>"
            f"<td><div style='background:#4c78a8;height:10px;width:{int(100 * w)}px'></div></td></tr>"
            for n, w in zip(self.lf_names, self.get_weights())
        )
        bal = ""
        if self.class_balance is not None:
            bal = "<p>class balance: " + ", ".join(f"{p:.3f}" for p in self.class_balance) + "</p>"
        return (
            f"<b>{head}</b>{bal}<table><tr><th>LF</th><th>est. accuracy</th><th></th></tr>"
            f"{rows}</table>"
        )


# ---------------------------------------------------------------------------------------
# torch helpers


def _chunks(n: int, width: int, device: str = "cpu") -> list[slice]:
    budget = 1 << 27 if str(device).startswith("cuda") else 1 << 24  # elements per block
    step = max(1024, budget // max(1, width))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _onehot(Lc: Any, k: int, dtype: Any) -> Any:
    """(b, m) int tensor -> (b, m*k) indicator of the votes (abstain -> all zero)."""
    import torch

    b, m = Lc.shape
    offs = torch.arange(0, m * k, k, device=Lc.device)
    A = torch.zeros(b, m * k, dtype=dtype, device=Lc.device)
    A.scatter_(1, Lc.clamp_min(0) + offs, (Lc >= 0).to(dtype))
    return A


def unique_rows(L: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct vote patterns of L: (patterns, inverse, counts), L == patterns[inverse].

    Rows are hashed by a product with random float64 weights, grouped with torch.unique
    (on the GPU when asked), and the grouping is verified exactly; on a (never seen)
    collision, L is returned as is.
    """
    import torch

    n, m = L.shape
    coef = np.random.default_rng(12345).random(m) + 0.5
    Lt = torch.from_numpy(L).to(device)
    h = (Lt + 2).to(torch.float64) @ torch.from_numpy(coef).to(device)
    _, inverse, counts = torch.unique(h, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), n, dtype=torch.int64, device=device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=device), reduce="amin")
    U = Lt[first]
    if not bool((U[inverse] == Lt).all()):
        return L, np.arange(n), np.ones(n, dtype=np.int64)
    return U.cpu().numpy(), inverse.cpu().numpy(), counts.cpu().numpy()


class _Blocks:
    """The one-hot vote matrix A (n, m*k) with row weights, in blocks; cached if it fits."""

    def __init__(
        self,
        L: np.ndarray,
        k: int,
        device: str,
        cache_bytes: int,
        weights: np.ndarray | None = None,
    ) -> None:
        import torch

        self.n, self.m = L.shape
        self.k = k
        self.device = device
        self.L = torch.from_numpy(L)
        w = np.ones(self.n) if weights is None else weights
        self.w = torch.as_tensor(w, dtype=torch.float32)
        self.total = float(w.sum())
        self.weighted = weights is not None
        self.slices = _chunks(self.n, self.m * k, device)
        self._blocks: list[Any] | None = None
        if self.n * self.m * k * 4 <= cache_bytes:
            self._blocks = [self._make(s) for s in self.slices]

    def _make(self, s: slice) -> tuple[Any, Any]:
        import torch

        Lc = self.L[s].to(self.device, non_blocking=True)
        return _onehot(Lc, self.k, torch.float32), self.w[s].to(self.device).unsqueeze(1)

    def __iter__(self):
        if self._blocks is not None:
            yield from zip(self.slices, self._blocks)
        else:
            for s in self.slices:
                yield s, self._make(s)


def _compress(L: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct rows with counts when that at least halves the work, else L itself."""
    if len(L) < 2000:
        return L, None
    probe = L[: min(len(L), 20_000)]
    if len(unique_rows(probe, device)[0]) > 0.7 * len(probe):
        return L, None  # (nearly) all rows distinct: grouping would not pay
    U, _, counts = unique_rows(L, device)
    if len(U) * 2 <= len(L):
        return U, counts
    return L, None


class _ConditionalModel(BaseLabelModel):
    """Label models parameterised by p(y) and P(lf_i = a | y): shared posterior and EM."""

    cache_bytes = 1 << 30

    def __init__(self, cardinality: int = 2, device: str | None = None) -> None:
        super().__init__(cardinality, device)
        self.cond: np.ndarray | None = None  # (m, k+1, k): P(lf_i = a-1 | Y = y)

    def _torch_device(self) -> str:
        return _default_device(self.device)

    def _config(self) -> dict[str, Any]:
        return {"device": self.device}

    def _state(self) -> dict[str, np.ndarray]:
        return {"cond": self.cond}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.cond = arrays["cond"]

    def get_weights(self) -> np.ndarray:
        """P(lf_i votes the true class | lf_i votes), from the fitted tables."""
        self._check_fitted()
        p = self.class_balance
        votes = self.cond[:, 1:, :]  # (m, k, k)
        correct = np.einsum("iyy,y->i", votes, p)
        fires = (votes.sum(1) * p).sum(1)
        acc = np.where(fires > 0, correct / np.maximum(fires, 1e-12), 1.0 / self.cardinality)
        return np.clip(acc, 0.0, 1.0)

    def get_conditional_probs(self) -> np.ndarray:
        """(m, k+1, k) table: [i, a+1, y] = P(lf_i = a | Y = y), a = -1 (abstain) .. k-1."""
        self._check_fitted()
        return self.cond.copy()

    def _weights_torch(self, cond: Any, p: Any) -> tuple[Any, Any]:
        import torch

        m, k = cond.shape[0], self.cardinality
        logc = torch.log(cond.clamp_min(1e-12))
        W = (logc[:, 1:, :] - logc[:, :1, :]).reshape(m * k, k)
        base = torch.log(p.clamp_min(1e-12)) + logc[:, 0, :].sum(0)
        return W, base

    def _proba(self, L: np.ndarray) -> np.ndarray:
        import torch

        dev = self._torch_device()
        k = self.cardinality
        cond = torch.as_tensor(self.cond, dtype=torch.float32, device=dev)
        p = torch.as_tensor(self.class_balance, dtype=torch.float32, device=dev)
        logc = torch.log(cond.clamp_min(1e-12))
        T = logc - logc[:, :1, :]  # (m, k+1, k): log-odds of each vote vs abstaining
        base = torch.log(p.clamp_min(1e-12)) + logc[:, 0, :].sum(0)
        m = L.shape[1]
        T = (T - T[:, :, :1]).reshape(m * (k + 1), k)[:, 1:].contiguous()  # relative to class 0
        base = base - base[0]
        offs = torch.arange(0, m * (k + 1), k + 1, device=dev)
        out = np.empty((len(L), k), dtype=np.float32)
        if dev == "cpu":  # numpy's take is the fastest gather on the CPU
            Tn = T.numpy()
            shift = (1 + offs).numpy()
            for s in _chunks(len(L), m * k, dev):
                idx = L[s] + shift
                logit = np.zeros((len(idx), k), dtype=np.float32)
                for c in range(k - 1):
                    logit[:, c + 1] = np.take(Tn[:, c], idx).sum(1)
                out[s] = torch.softmax(torch.from_numpy(logit) + base, 1).numpy()
            return out
        Lt = torch.from_numpy(L)
        with torch.no_grad():
            for s in _chunks(len(L), m * k, dev):
                idx = Lt[s].to(dev, non_blocking=True) + 1 + offs
                logit = torch.zeros(len(idx), k, dtype=torch.float32, device=dev)
                for c in range(k - 1):
                    logit[:, c + 1] = T[:, c][idx].sum(1)
                out[s] = torch.softmax(logit + base, 1).cpu().numpy()
        return out

    def _em(
        self,
        blocks: _Blocks,
        cond: Any,
        p: Any,
        n_iter: int,
        tol: float,
        fixed_balance: bool,
        smoothing: float,
        progress: bool,
        desc: str,
    ) -> tuple[Any, Any, int]:
        """EM on the full Dawid-Skene model (abstain as an outcome); returns (cond, p, iters)."""
        import torch
        from tqdm.auto import tqdm

        m, k = blocks.m, self.cardinality
        dev = cond.device
        eye = torch.eye(k, dtype=torch.float64, device=dev) * (smoothing / k)
        done = 0
        bar = tqdm(total=n_iter, desc=desc, disable=not progress, leave=False)
        for step in range(1, n_iter + 1):
            done = step
            W, base = self._weights_torch(cond, p)
            counts = torch.zeros(m * k, k, dtype=torch.float64, device=dev)
            Ny = torch.zeros(k, dtype=torch.float64, device=dev)
            for _, (A, w) in blocks:
                Q = torch.softmax(A @ W + base, 1) * w
                counts += (A.T @ Q).double()
                Ny += Q.sum(0).double()
            vote_p = (counts.reshape(m, k, k) + eye) / (Ny + smoothing)
            abst = (1.0 - vote_p.sum(1, keepdim=True)).clamp_min(1e-9)
            new = torch.cat([abst, vote_p], 1)
            new = (new / new.sum(1, keepdim=True)).float()
            new_p = p if fixed_balance else ((Ny + 1.0) / (Ny.sum() + k)).float()
            delta = max(float((new - cond).abs().max()), float((new_p - p).abs().max()))
            cond, p = new, new_p
            bar.update(1)
            if delta < tol:
                break
        bar.close()
        return cond, p, done

    def _init_from_votes(self, blocks: _Blocks, overlap: Any = None) -> tuple[Any, Any]:
        """cond and p from soft majority vote (the start point for EM and matrix completion).

        With `overlap` (an (m*k, m*k) tensor), also accumulates sum_rows w * A^T A into it.
        """
        import torch

        m, k = blocks.m, self.cardinality
        dev = blocks.device
        counts = torch.zeros(m * k, k, dtype=torch.float64, device=dev)
        Ny = torch.zeros(k, dtype=torch.float64, device=dev)
        for _, (A, w) in blocks:
            if overlap is not None:
                overlap += A.T @ (A * w) if blocks.weighted else A.T @ A
            v = A.reshape(len(A), m, k).sum(1)
            has = v.sum(1, keepdim=True) > 0
            Q = torch.where(has, (v == v.max(1, keepdim=True).values).float(), torch.zeros_like(v))
            Q = Q / Q.sum(1, keepdim=True).clamp_min(1.0) * w
            counts += (A.T @ Q).double()
            Ny += Q.sum(0).double()
        Ny = Ny + 1.0
        eye = 0.1 * torch.eye(k, dtype=torch.float64, device=dev)
        vote_p = (counts.reshape(m, k, k) + eye) / (Ny + 0.1)
        abst = (1.0 - vote_p.sum(1, keepdim=True)).clamp_min(1e-6)
        cond = torch.cat([abst, vote_p], 1)
        cond = cond / cond.sum(1, keepdim=True)
        p = Ny / Ny.sum()
        return cond.float(), p.float()

    def _em_rows(self, L: np.ndarray, em_sample: int | None, seed: int) -> np.ndarray:
        """The rows EM runs on: all of L, or a uniform sample of em_sample rows."""
        if em_sample and len(L) > em_sample:
            idx = np.sort(np.random.default_rng(seed).choice(len(L), em_sample, replace=False))
            self.fit_info["em_rows"] = int(em_sample)
            return L[idx]
        self.fit_info["em_rows"] = len(L)
        return L

    def _silent_fix(self, cond: np.ndarray, L: np.ndarray) -> np.ndarray:
        """LFs that never vote: abstain with probability 1 under every class."""
        silent = ~(L >= 0).any(0)
        if silent.any():
            cond[silent] = 0.0
            cond[silent, 0, :] = 1.0
        return cond


class DawidSkene(_ConditionalModel):
    """Dawid-Skene EM with one confusion matrix per LF (abstain as an outcome), from majority vote."""

    def _fit(
        self,
        L: np.ndarray,
        n_epochs: int = 100,
        lr: float = 0.0,
        seed: int = 0,
        progress: bool = False,
        tol: float = 1e-4,
        smoothing: float = 1.0,
        em_sample: int | None = None,
        **_: Any,
    ) -> None:
        import torch

        dev = self._torch_device()
        with torch.no_grad():
            Lu, w = _compress(self._em_rows(L, em_sample, seed), dev)
            blocks = _Blocks(Lu, self.cardinality, dev, self.cache_bytes, w)
            cond, p = self._init_from_votes(blocks)
            if self._fixed_balance:
                p = torch.as_tensor(self.class_balance, dtype=torch.float32, device=dev)
            cond, p, iters = self._em(
                blocks,
                cond,
                p,
                n_epochs,
                tol,
                self._fixed_balance,
                smoothing,
                progress,
                "DawidSkene EM",
            )
        self.cond = self._silent_fix(cond.cpu().numpy().astype(np.float64), L)
        self.class_balance = p.cpu().numpy().astype(np.float64)
        self.fit_info["em_iterations"] = iters


def _fit_mu(
    overlap: np.ndarray,
    mu0: np.ndarray,
    p: np.ndarray,
    k: int,
    n_epochs: int,
    lr: float,
    l2: float,
    progress: bool,
) -> tuple[np.ndarray, float]:
    """Matrix completion: Adam on ||mask*(O - mu P mu^T)||^2 + ||mu p - diag(O)||^2 (numpy, float64)."""
    from tqdm.auto import tqdm

    d = overlap.shape[0]
    mask = np.ones((d, d))
    for i in range(0, d, k):
        mask[i : i + k, i : i + k] = 0.0
    diag_o = np.diag(overlap)
    mu = mu0.copy()
    m1 = np.zeros_like(mu)
    m2 = np.zeros_like(mu)
    b1, b2, eps = 0.9, 0.999, 1e-8
    loss = 0.0
    for t in tqdm(range(1, n_epochs + 1), desc="LabelModel fit", disable=not progress, leave=False):
        muP = mu * p
        R = mask * (overlap - muP @ mu.T)
        r2 = muP.sum(1) - diag_o
        loss = float((R**2).sum() + (r2**2).sum() + l2 * ((mu - mu0) ** 2).sum())
        grad = -4.0 * (R @ muP) + 2.0 * r2[:, None] * p[None, :] + 2.0 * l2 * (mu - mu0)
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad**2
        step = lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
        mu = np.clip(mu - step, 1e-6, 1.0)
    return mu, loss


class LabelModel(_ConditionalModel):
    """Data-programming label model: matrix completion on the LF overlap matrix, then EM.

    Step 1 (Snorkel's estimator): O = A^T A / n over one-hot votes A; find mu (m*k x k),
    mu[i*k+a, y] = P(lf_i = a | Y = y), minimising ||mask * (O - mu P mu^T)||^2 +
    ||mu P 1 - diag(O)||^2 (mask hides each LF's own block), started from majority vote.
    Step 2 (`refine="em"`, default): maximum-likelihood EM from that estimate, which also
    re-estimates the class balance unless it was given. Both steps run on a uniform sample
    of at most `fit_sample` rows (default 200,000; None = all rows): plenty for the
    m*k*k parameters, and predict_proba then labels every row in one pass.
    """

    def __init__(
        self,
        cardinality: int = 2,
        device: str | None = None,
        refine: str = "em",
        verbose: bool = False,
    ) -> None:
        super().__init__(cardinality, device)
        if refine not in ("em", "none"):
            raise LoomError(f"refine must be 'em' or 'none', got {refine!r}")
        self.refine = refine

    def _config(self) -> dict[str, Any]:
        return {"device": self.device, "refine": self.refine}

    def _fit(
        self,
        L: np.ndarray,
        n_epochs: int = 200,
        lr: float = 0.01,
        seed: int = 0,
        progress: bool = False,
        em_iters: int = 100,
        tol: float = 1e-4,
        l2: float = 0.0,
        smoothing: float = 1.0,
        fit_sample: int | None = 200_000,
        em_sample: int | None = None,
        **_: Any,
    ) -> None:
        import torch

        dev = self._torch_device()
        m = L.shape[1]
        k = self.cardinality
        if em_sample is not None:  # older name of fit_sample
            fit_sample = em_sample
        S = self._em_rows(L, fit_sample, seed)
        self.fit_info["fit_rows"] = self.fit_info.pop("em_rows")
        n = len(S)
        with torch.no_grad():
            Lu, w = _compress(S, dev)
            blocks = _Blocks(Lu, k, dev, self.cache_bytes, w)
            overlap = torch.zeros(m * k, m * k, dtype=torch.float32, device=dev)
            cond0, p0 = self._init_from_votes(blocks, overlap)
            overlap = overlap.double().cpu().numpy() / n
        p = self.class_balance if self._fixed_balance else p0.double().cpu().numpy()
        mu0 = cond0[:, 1:, :].reshape(m * k, k).double().cpu().numpy()
        mu, loss = _fit_mu(overlap, mu0, p, k, n_epochs, lr, l2, progress)
        votes = mu.reshape(m, k, k)
        votes = votes / np.maximum(votes.sum(1, keepdims=True), 1.0)
        abst = np.clip(1.0 - votes.sum(1, keepdims=True), 1e-6, None)
        cond = np.concatenate([abst, votes], 1)
        cond /= cond.sum(1, keepdims=True)
        # guard against the label-swap solution: LFs are assumed better than chance on average
        acc = (np.diagonal(votes, axis1=1, axis2=2) * p).sum(1) / np.maximum(
            (votes.sum(1) * p).sum(1), 1e-9
        )
        if float(acc.mean()) < 1.0 / k:
            cond = cond0.double().cpu().numpy()
        self.fit_info["mc_loss"] = loss
        iters = 0
        if self.refine == "em":
            with torch.no_grad():
                ct, pt, iters = self._em(
                    blocks,
                    torch.as_tensor(cond, dtype=torch.float32, device=dev),
                    torch.as_tensor(p, dtype=torch.float32, device=dev),
                    em_iters,
                    tol,
                    self._fixed_balance,
                    smoothing,
                    progress,
                    "LabelModel EM",
                )
            cond, p = ct.double().cpu().numpy(), pt.double().cpu().numpy()
        self.fit_info["em_iterations"] = iters
        self.cond = self._silent_fix(cond, L)
        self.class_balance = np.asarray(p, dtype=np.float64)


class TripletModel(_ConditionalModel):
    """Closed-form triplet estimator (FlyingSquid style) of a symmetric-error ("one coin") model.

    For LFs i, j voting together, the centred agreement M_ij = (k P(agree) - 1)/(k - 1)
    equals b_i b_j with b_i = (k acc_i - 1)/(k - 1); each b_i is the median over triplets
    of sqrt(|M_ij M_ik / M_jk|). No iterations: one pass over L for the pair statistics.
    """

    def _fit(
        self,
        L: np.ndarray,
        n_epochs: int = 0,
        lr: float = 0.0,
        seed: int = 0,
        progress: bool = False,
        min_overlap: int = 10,
        max_triplets: int = 2000,
        **_: Any,
    ) -> None:
        import torch

        dev = self._torch_device()
        n, m = L.shape
        k = self.cardinality
        with torch.no_grad():
            Lu, w = _compress(L, dev)
            blocks = _Blocks(Lu, k, dev, 0, w)
            agree = torch.zeros(m, m, dtype=torch.float64, device=dev)
            both = torch.zeros(m, m, dtype=torch.float64, device=dev)
            for s, (A, wc) in blocks:
                Vf = (blocks.L[s].to(dev) >= 0).float()
                both += (Vf.T @ (Vf * wc)).double()
                AA = A.T @ (A * wc)
                agree += AA.reshape(m, k, m, k).diagonal(dim1=1, dim2=3).sum(-1).double()
            cov = (both.diagonal() / n).cpu().numpy()
            both = both.cpu().numpy()
            agree = agree.cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            M = (k * agree / np.maximum(both, 1) - 1.0) / (k - 1)
        ok = both >= min_overlap
        np.fill_diagonal(ok, False)
        rng = np.random.default_rng(seed)
        b = np.full(m, np.nan)
        for i in range(m):
            js = np.nonzero(ok[i])[0]
            if len(js) < 2:
                continue
            pairs = np.array([(a, c) for ai, a in enumerate(js) for c in js[ai + 1 :] if ok[a, c]])
            if len(pairs) == 0:
                continue
            if len(pairs) > max_triplets:
                pairs = pairs[rng.choice(len(pairs), max_triplets, replace=False)]
            num = M[i, pairs[:, 0]] * M[i, pairs[:, 1]]
            den = M[pairs[:, 0], pairs[:, 1]]
            good = np.abs(den) > 1e-3
            if good.any():
                b[i] = np.median(np.sqrt(np.abs(num[good] / den[good])))
        fallback = np.isnan(b)
        b = np.where(fallback, 0.0, np.clip(b, 0.0, 1.0 - 1e-4))
        acc = (1.0 + (k - 1) * b) / k
        self.fit_info["lfs_without_triplets"] = int(fallback.sum())
        cond = np.zeros((m, k + 1, k))
        cond[:, 0, :] = (1.0 - cov)[:, None]
        wrong = cov * (1.0 - acc) / (k - 1)
        for y in range(k):
            cond[:, 1:, y] = wrong[:, None]
            cond[:, y + 1, y] = cov * acc
        cond = np.clip(cond, 1e-9, None)
        cond /= cond.sum(1, keepdims=True)
        self.cond = self._silent_fix(cond, L)
        if not self._fixed_balance:
            self.class_balance = np.full(k, 1.0 / k)
            probs = self._proba(L)
            has = (L >= 0).any(1)
            bal = probs[has].mean(0) if has.any() else np.full(k, 1.0 / k)
            self.class_balance = (bal + 1e-3) / (bal + 1e-3).sum()


class MajorityVoter(BaseLabelModel):
    """Majority vote; ties split evenly in predict_proba; needs no fit (fit only records LFs)."""

    def _fit(self, L: np.ndarray, **_: Any) -> None:
        if self.class_balance is None:
            self.class_balance = np.full(self.cardinality, 1.0 / self.cardinality)
        self.m = L.shape[1]
        pred = self.predict(L)
        votes = L >= 0
        keep = votes & (pred >= 0)[:, None]
        hits = ((L == pred[:, None]) & keep).sum(0)
        tot = keep.sum(0)
        self._acc = np.where(tot > 0, hits / np.maximum(tot, 1), 1.0 / self.cardinality)

    def _state(self) -> dict[str, np.ndarray]:
        return {"acc": getattr(self, "_acc", np.zeros(0))}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._acc = arrays.get("acc")

    def get_weights(self) -> np.ndarray:
        """Agreement of each LF with the majority vote on the fit data (no true accuracies)."""
        self._check_fitted()
        return self._acc

    def predict_proba(self, L: Any) -> np.ndarray:
        """Vote shares of the top classes (ties split); rows without votes get the class prior."""
        L = check_L(L, self.cardinality, self.m)
        k = self.cardinality
        n = len(L)
        counts = np.zeros((n, k), dtype=np.float32)
        for y in range(k):
            counts[:, y] = (L == y).sum(1)
        top = counts.max(1, keepdims=True)
        probs = ((counts == top) & (top > 0)).astype(np.float32)
        s = probs.sum(1, keepdims=True)
        prior = self.class_balance if self.class_balance is not None else np.full(k, 1.0 / k)
        return np.where(s > 0, probs / np.maximum(s, 1), prior.astype(np.float32))

    def _proba(self, L: np.ndarray) -> np.ndarray:
        return self.predict_proba(L)


MajorityLabelVoter = MajorityVoter

MODELS: dict[str, type[BaseLabelModel]] = {
    "LabelModel": LabelModel,
    "DawidSkene": DawidSkene,
    "TripletModel": TripletModel,
    "MajorityVoter": MajorityVoter,
}


def get_label_model(name: str, cardinality: int, **kw: Any) -> BaseLabelModel:
    """An unfitted label model by name: LabelModel, DawidSkene, TripletModel or MajorityVoter."""
    aliases = {k.lower(): k for k in MODELS}
    aliases.update(
        {
            "majority": "MajorityVoter",
            "mv": "MajorityVoter",
            "ds": "DawidSkene",
            "triplet": "TripletModel",
            "flyingsquid": "TripletModel",
            "snorkel": "LabelModel",
        }
    )
    key = aliases.get(str(name).lower())
    if key is None:
        raise LoomError(f"unknown label model {name!r}: choose one of {sorted(MODELS)}")
    return MODELS[key](cardinality=cardinality, **kw)
