"""The base class of every label model: fit/predict/score, save/load and the HTML repr.

Subclasses implement `_fit`, `_proba` and `get_weights` (and `_state`/`_set_state`/`_config`
for what save() must keep) and register with `@register_model` so that load() finds them.
"""

from __future__ import annotations

import html
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labeling.arguments import check_kwargs, keyword_names
from labeling.constants import ABSTAIN
from labeling.metrics import metric_score
from labeling.model.checks import (
    LabelMatrixError,
    check_column_order,
    check_training_args,
    check_Y,
)
from labeling.model.diagnostics import degenerate_message
from labeling.model.sparse import check_votes, is_sparse, rows_without_votes, voting_lfs
from toolkit.errors import LoomError
from toolkit.progress import resolve_progress

logger = logging.getLogger(__name__)

TIE_POLICIES = ("abstain", "random", "true-random")

#: How far from 1 a class_balance may sum without a warning (rounded priors: 3 x 0.33).
BALANCE_TOLERANCE = 0.02

#: Arguments of Snorkel's LabelModel.fit that loom does not take, and why (said instead of
#: "unexpected argument"). A model that implements one lists it in its `_fit` signature.
UNSUPPORTED_FIT_ARGS = {
    "dependencies": "only LabelModel models dependencies between LFs "
    "(LabelModel.fit(L, dependencies='auto' or [(i, j), ...])); TripletModel is robust to a "
    "few dependent pairs",
    "optimizer_config": "loom fits with its own Adam loop; only lr=, n_epochs= and l2= tune it",
    "lr_scheduler": "loom fits with a constant learning rate (lr=)",
    "lr_scheduler_config": "loom fits with a constant learning rate (lr=)",
    "prec_init": "loom starts from majority vote, not from a fixed LF precision",
    "mu_eps": "loom bounds the estimated probabilities itself",
}

#: Saved class name -> label model class, filled by `register_model`.
MODELS: dict[str, type[BaseLabelModel]] = {}


def register_model(cls: type[BaseLabelModel]) -> type[BaseLabelModel]:
    """Class decorator: make a label model loadable by name (`BaseLabelModel.load`)."""
    MODELS[cls.__name__] = cls
    return cls


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
    """Common interface of every label model (votes are -1 = abstain or 0..k-1).

    `accepts_sparse`: whether fit/predict_proba/predict/score take a scipy.sparse CSR label
    matrix (stored value = vote + 1, abstain not stored; labeling.model.sparse).
    """

    accepts_sparse = False

    def __init__(
        self, cardinality: int = 2, device: str | None = None, progress: bool | None = None
    ) -> None:
        if not isinstance(cardinality, (int, np.integer)) or cardinality < 2:
            raise LabelMatrixError(
                f"cardinality must be an integer >= 2 (number of classes), got {cardinality!r}"
            )
        self.cardinality = int(cardinality)
        self.device = device
        self.progress = progress
        self.m: int | None = None
        self.class_balance: np.ndarray | None = None
        self.lf_names: list[str] | None = None
        self.fit_info: dict[str, Any] = {}

    # ---- to implement -------------------------------------------------------------------
    def _fit(self, L: np.ndarray) -> None:
        """Estimate the parameters from L; the keyword parameters are the model's fit options."""
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
            if abs(p.sum() - 1.0) > BALANCE_TOLERANCE:  # counts or a slip: said, not silent
                logger.warning(
                    "class_balance %s sums to %.4g, not 1: taken as relative weights, prior %s "
                    "(pass P(Y = y) per class to silence this)",
                    p.tolist(),
                    p.sum(),
                    np.round(p / p.sum(), 4).tolist(),
                )
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
        n_epochs: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        progress: bool | None = None,
        lf_names: list[str] | None = None,
        **kwargs: Any,
    ) -> BaseLabelModel:
        """Fit on an (n, m) label matrix; Y_dev / class_balance only set the class prior.

        n_epochs / lr: None = the model's default (LabelModel 200 epochs at lr 0.01,
        DawidSkene at most 200 EM iterations); a model without epochs or a learning rate
        warns that it ignores them. Other keywords are the model's own options (the keyword
        parameters of its `_fit`); anything else is an UnknownArgumentError naming the close
        matches. Snorkel's `progress_bar=` is `progress=`.
        progress: show a bar (None: the model's `progress`, else on in notebooks/terminals).
        After fit, `fit_warnings_` lists what fit warned about (LFs that never vote, rows
        without votes, a degenerate fit); empty when all is well.
        """
        name = type(self).__name__
        options = self.fit_options()
        if "progress_bar" in kwargs:  # Snorkel's spelling
            bar = kwargs.pop("progress_bar")
            progress = bar if progress is None else progress
        check_kwargs(
            f"{name}.fit()",
            kwargs,
            [*keyword_names(BaseLabelModel.fit, skip=("L_train",)), "progress_bar", *options],
            UNSUPPORTED_FIT_ARGS,
        )
        check_training_args(name, n_epochs, lr)
        ignored = [a for a, v in (("n_epochs", n_epochs), ("lr", lr)) if v is not None]
        ignored = [a for a in ignored if a not in options]
        if ignored:
            msg = (
                f"{name}.fit() ignores {' and '.join(a + '=' for a in ignored)}: {name} has no "
                "training epochs or learning rate"
            )
            logger.info(msg)
            warnings.warn(msg, UserWarning, stacklevel=2)
        L = self._check_votes(L_train, None, "L_train")
        n, m = L.shape
        if isinstance(L_train, pd.DataFrame) and lf_names is None:
            lf_names = [str(c) for c in L_train.columns]
        names = list(lf_names) if lf_names is not None else [f"lf_{i}" for i in range(m)]
        if len(names) != m:
            raise LabelMatrixError(f"lf_names has {len(names)} names but L_train has {m} columns")
        # checked before lf_names is replaced: a rejected prior leaves an earlier fit usable
        fixed = self._set_class_balance(class_balance, Y_dev, n)
        self.lf_names = names
        self.fit_warnings_: list[str] = []
        self._voting = voting_lfs(L)  # one pass over L, reused by _fit and the checks below
        silent = ~self._voting
        if silent.any():
            names = [self.lf_names[i] for i in np.nonzero(silent)[0][:5]]
            self._fit_warning(
                f"{int(silent.sum())} LF(s) never vote in L_train (e.g. {names}): they carry no "
                "information and get the prior accuracy 1/k; check them with LFAnalysis"
            )
        empty = int(rows_without_votes(L).sum())
        self.fit_info = {"n": n, "m": m, "rows_without_votes": empty}
        if empty:
            self._fit_warning(
                f"{empty} of {n} rows have no votes: predict_proba gives them P(Y | every LF abstained) "
                "and -1 from predict (drop them with filter_unlabeled_dataframe)"
            )
        self._fixed_balance = fixed
        show = resolve_progress(progress if progress is not None else self.progress)
        given = {"n_epochs": n_epochs, "lr": lr, "seed": seed, "progress": show}
        shared = {a: v for a, v in given.items() if a in options and v is not None}
        self._fit(L, **shared, **kwargs)
        self.m = m
        degenerate = degenerate_message(self, L, seed, voting=self._voting)
        if degenerate:
            self._fit_warning(degenerate)
        return self

    def _check_votes(self, L: Any, m: int | None, what: str = "L") -> Any:
        """A checked label matrix: dense int64, or canonical CSR when the model takes sparse."""
        if m is not None:
            check_column_order(L, self.lf_names, what)
        if is_sparse(L) and not self.accepts_sparse:
            raise LabelMatrixError(
                f"{type(self).__name__} does not take a sparse {what}: use LabelModel or "
                "MajorityVoter, or densify it with labeling.model.from_sparse_votes(L) if it "
                "fits in memory"
            )
        return check_votes(L, self.cardinality, m, what)

    def fit_options(self) -> list[str]:
        """The keyword options this model's fit reads beyond L (its `_fit` parameters)."""
        return keyword_names(self._fit, skip=("L",))

    def degenerate_reason(self) -> str:
        """Why the fitted model may be unable to estimate anything ("" when nothing to add)."""
        return ""

    def _fit_warning(self, msg: str) -> None:
        """Warn (UserWarning and the log) about the fit, and keep it in fit_warnings_."""
        self.fit_warnings_.append(msg)
        logger.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)

    def predict_proba(self, L: Any) -> np.ndarray:
        """P(Y = y | votes) for each row, shape (n, k) (abstaining is evidence too)."""
        self._check_fitted()
        return self._proba(self._check_votes(L, self.m))

    def predict(
        self,
        L: Any,
        return_probs: bool = False,
        tie_break_policy: str = "abstain",
        seed: int = 0,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Most likely class per row; ties -> -1 ("abstain") or a random tied class ("random").

        Rows where every LF abstained always get -1. With return_probs, returns
        (predictions, probabilities) as Snorkel does (fit_predict elsewhere returns
        probabilities first, as predict_proba).
        """
        if tie_break_policy not in TIE_POLICIES:
            raise LoomError(
                f"tie_break_policy must be one of {TIE_POLICIES}, got {tie_break_policy!r}"
            )
        L = self._check_votes(L, self.m)
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
        pred[rows_without_votes(L)] = ABSTAIN
        return (pred, probs) if return_probs else pred

    def score(
        self,
        L: Any,
        Y: Any,
        metrics: str | list[str] | tuple[str, ...] = ("accuracy",),
        tie_break_policy: str = "abstain",
    ) -> dict[str, float]:
        """Metrics of predict(L) against gold Y on the rows the model labels (-1 preds dropped)."""
        if isinstance(metrics, str):  # one metric name, not its letters
            metrics = [metrics]
        L = self._check_votes(L, self.m)
        y = check_Y(Y, L.shape[0], self.cardinality)
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
            "fit_warnings": getattr(self, "fit_warnings_", []),
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
        model.fit_warnings_ = list(meta.get("fit_warnings", []))
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
