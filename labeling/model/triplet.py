"""TripletModel: closed-form (FlyingSquid-style) accuracies of a symmetric-error model."""

from __future__ import annotations

import numpy as np

from labeling.model.base import register_model
from labeling.model.conditional import ConditionalModel
from labeling.model.votes import VoteBlocks, compress_rows


@register_model
class TripletModel(ConditionalModel):
    """Closed-form triplet estimator (FlyingSquid style) of a symmetric-error ("one coin") model.

    For LFs i, j voting together, the centred agreement M_ij = (k P(agree) - 1)/(k - 1)
    equals b_i b_j with b_i = (k acc_i - 1)/(k - 1); each b_i is the median over triplets
    of sqrt(|M_ij M_ik / M_jk|), negative when the LF's agreement with the others (median
    M_ij) is below chance. No iterations: one pass over L for the pair statistics.
    """

    def _fit(
        self,
        L: np.ndarray,
        seed: int = 0,
        min_overlap: int = 10,
        max_triplets: int = 2000,
    ) -> None:
        """min_overlap: rows two LFs must vote on together to form a pair; max_triplets: pairs
        sampled per LF (with `seed`)."""
        import torch

        dev = self._torch_device()
        n, m = L.shape
        k = self.cardinality
        with torch.no_grad():
            Lu, w = compress_rows(L, dev)
            blocks = VoteBlocks(Lu, k, dev, 0, w)
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
                # the triplets give |b_i|; M_ij = b_i b_j gives its sign, taking most LFs to be
                # better than chance (as the matrix completion does): an LF that disagrees with
                # the others more than chance is below chance, not perfect
                if np.median(M[i, js]) < 0:
                    b[i] = -b[i]
        fallback = np.isnan(b)
        b = np.where(fallback, 0.0, np.clip(b, -1.0 / (k - 1), 1.0 - 1e-4))
        acc = (1.0 + (k - 1) * b) / k
        self.fit_info["lfs_without_triplets"] = int(fallback.sum())
        self.fit_info["min_overlap"] = int(min_overlap)
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

    def degenerate_reason(self) -> str:
        """Names the LFs the triplet estimator could not place (too few co-votes)."""
        missing = self.fit_info.get("lfs_without_triplets", 0)
        if not missing:
            return ""
        return (
            f"TripletModel needs each LF to vote together with two others on at least "
            f"min_overlap={self.fit_info.get('min_overlap', 10)} rows; {missing} of {self.m} LFs "
            "had no such triplet and got the chance accuracy 1/k (lower min_overlap= on small "
            "data)."
        )
