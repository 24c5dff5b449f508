"""Groups of dependent LFs in a label model: one joint table per group instead of a product.

A group (clique) C of LFs that copy or echo each other gets P(lambda_C = votes | Y = y) as
one table over its joint votes (abstains included), so its votes count once in the
posterior, as much as they are worth together, and never once per copy. Every other LF
keeps its own P(lambda_i | Y). The tables are fitted by EM together with the class balance.
A table holds only the vote combinations seen in the fit rows; it is smoothed towards the
product of its members' marginals (Dirichlet prior of weight `smoothing` x |C|), and a
combination never seen falls back to that product, scaled the same way, so every table
sums to one over all (k+1)^|C| combinations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labeling.model.votes import VoteBlocks, row_chunks


def max_group_size(k: int) -> int:
    """Largest group whose joint vote still has an int64 code: (k+1)^size < 2^62."""
    return max(2, int(62 // np.log2(k + 1)))


def split_groups(
    groups: Sequence[Sequence[int]], k: int
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Groups that fit one table, and the (rare) groups too large that had to be cut."""
    size = max_group_size(k)
    out, cut = [], []
    for g in groups:
        g = tuple(int(j) for j in g)
        if len(g) <= size:
            out.append(g)
            continue
        cut.append(g)
        out += [g[s : s + size] for s in range(0, len(g), size) if len(g[s : s + size]) > 1]
    return out, cut


def group_codes(L: np.ndarray, members: Sequence[int], k: int) -> np.ndarray:
    """Each row's joint vote of `members` as one int64 (Horner code over votes + 1)."""
    code = np.zeros(len(L), dtype=np.int64)
    for j in members:
        code = code * (k + 1) + (L[:, j] + 1)
    return code


def _product_logs(logc: Any, members: Sequence[int], votes: Any) -> Any:
    """sum_t log P(lambda_member_t = votes[:, t] | y): (rows, k)."""
    out = 0.0
    for t, j in enumerate(members):
        out = out + logc[j][votes[:, t] + 1]
    return out


class GroupTables:
    """Fitted joint tables of the dependent groups (numpy; what save() keeps)."""

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        configs: Sequence[np.ndarray],
        tables: Sequence[np.ndarray],
        unseen: Sequence[np.ndarray],
    ) -> None:
        self.groups = [tuple(int(j) for j in g) for g in groups]
        self.configs = list(configs)  # sorted codes of the combinations seen at fit
        self.tables = list(tables)  # (len(configs), k): P(combination | y)
        self.unseen = list(unseen)  # (k,): scale of the marginal product for unseen ones

    def log_terms(self, L: np.ndarray, logc: Any, device: str) -> Any:
        """(n, k) torch float64: sum over groups of log P(joint votes of the row | y)."""
        import torch

        k = logc.shape[-1]
        out = torch.zeros(len(L), k, dtype=torch.float64, device=device)
        for g, members in enumerate(self.groups):
            code = group_codes(L, members, k)
            cfg = self.configs[g]
            pos = np.clip(np.searchsorted(cfg, code), 0, max(len(cfg) - 1, 0))
            seen = torch.as_tensor(cfg[pos] == code, device=device)
            tab = torch.log(torch.as_tensor(self.tables[g], device=device).clamp_min(1e-300))
            votes = torch.as_tensor(L[:, list(members)], device=device)
            fallback = _product_logs(logc, members, votes) + torch.log(
                torch.as_tensor(self.unseen[g], device=device)
            )
            out += torch.where(seen[:, None], tab[torch.as_tensor(pos, device=device)], fallback)
        return out


def fit_groups_em(
    blocks: VoteBlocks,
    groups: Sequence[Sequence[int]],
    cond: Any,
    p: Any,
    n_iter: int,
    tol: float,
    fixed_balance: bool,
    smoothing: float,
) -> tuple[Any, GroupTables, Any, int]:
    """EM for independent LFs plus one joint table per group; returns (cond, tables, p, iters).

    cond (m, k+1, k) and p start from an estimate that ignored the groups (e.g. matrix
    completion without the groups' overlap blocks); the first E-step counts each group
    member's votes with weight 1/|group|, so that a group is not over-trusted before its
    table exists. cond keeps every LF's marginal P(lambda_i | y), group members included.
    """
    import torch

    m, k = blocks.m, cond.shape[2]
    dev = cond.device
    L = blocks.L.numpy()
    grouped = np.zeros(m, dtype=bool)
    scale = torch.ones(m, dtype=torch.float32, device=dev)
    inverse, configs, cfg_votes = [], [], []
    for g in groups:
        grouped[list(g)] = True
        scale[list(g)] = 1.0 / len(g)
        cfg, first, inv = np.unique(group_codes(L, g, k), return_index=True, return_inverse=True)
        configs.append(cfg)
        inverse.append(torch.as_tensor(inv.reshape(-1), device=dev))
        cfg_votes.append(torch.as_tensor(L[first][:, list(g)], device=dev))
    keep = torch.as_tensor(~grouped, dtype=torch.float32, device=dev)  # others: in the tables
    eye = torch.eye(k, dtype=torch.float64, device=dev) * (smoothing / k)
    tables: list[Any] = []
    unseen: list[Any] = []
    done = 0
    for step in range(1, max(n_iter, 2) + 1):  # the tables exist from the second E-step on
        done = step
        logc = torch.log(cond.clamp_min(1e-12))
        w_scale = keep if tables else scale
        W = ((logc[:, 1:, :] - logc[:, :1, :]) * w_scale[:, None, None]).reshape(m * k, k)
        base = torch.log(p.clamp_min(1e-12)) + (logc[:, 0, :] * w_scale[:, None]).sum(0)
        log_tabs = [torch.log(t.clamp_min(1e-30)) for t in tables]
        counts = torch.zeros(m * k, k, dtype=torch.float64, device=dev)
        Ny = torch.zeros(k, dtype=torch.float64, device=dev)
        gcounts = [torch.zeros(len(c), k, dtype=torch.float64, device=dev) for c in configs]
        for s, (A, w) in blocks:
            score = A @ W + base
            for g, lt in enumerate(log_tabs):
                score = score + lt[inverse[g][s]]
            Q = torch.softmax(score, 1) * w
            counts += (A.T @ Q).double()
            Ny += Q.sum(0).double()
            for g in range(len(groups)):
                gcounts[g].index_add_(0, inverse[g][s], Q.double())
        vote_p = (counts.reshape(m, k, k) + eye) / (Ny + smoothing)
        abst = (1.0 - vote_p.sum(1, keepdim=True)).clamp_min(1e-9)
        new = torch.cat([abst, vote_p], 1)
        new = new / new.sum(1, keepdim=True)
        new_logc = torch.log(new.clamp_min(1e-300))
        new_tables, unseen = [], []
        for g, members in enumerate(groups):
            alpha = smoothing * len(members)
            prior = torch.exp(_product_logs(new_logc, members, cfg_votes[g]))
            new_tables.append(((gcounts[g] + alpha * prior) / (Ny + alpha)).float())
            unseen.append(alpha / (Ny + alpha))
        new = new.float()
        new_p = p if fixed_balance else ((Ny + 1.0) / (Ny.sum() + k)).float()
        delta = max(float((new - cond).abs().max()), float((new_p - p).abs().max()))
        if tables:
            delta = max(delta, max(float((a - b).abs().max()) for a, b in zip(new_tables, tables)))
        else:
            delta = float("inf")
        cond, p, tables = new, new_p, new_tables
        if delta < tol:
            break
    fitted = GroupTables(
        groups,
        configs,
        [t.double().cpu().numpy() for t in tables],
        [u.cpu().numpy() for u in unseen],
    )
    return cond, fitted, p, done


def group_log_joint(
    L: np.ndarray,
    cond: np.ndarray,
    p: np.ndarray,
    tables: GroupTables | None,
    device: str = "cpu",
) -> np.ndarray:
    """log p(y) + log P(votes of the row | y), shape (n, k), float64 (exact, not shifted).

    tables: the dependent groups' joint tables (None: every LF independent given y).
    """
    import torch

    m, k = L.shape[1], cond.shape[2]
    grouped = np.zeros(m, dtype=bool)
    for g in tables.groups if tables is not None else []:
        grouped[list(g)] = True
    logc = torch.log(torch.as_tensor(cond, dtype=torch.float64, device=device).clamp_min(1e-300))
    single = logc.clone()
    single[torch.as_tensor(grouped, device=device)] = 0.0
    flat = single.reshape(m * (k + 1), k)
    offs = torch.arange(0, m * (k + 1), k + 1, device=device)
    logp = torch.log(torch.as_tensor(p, dtype=torch.float64, device=device).clamp_min(1e-300))
    out = np.empty((len(L), k), dtype=np.float64)
    for s in row_chunks(len(L), m * k, device):
        Lc = torch.as_tensor(L[s], device=device)
        score = flat[(Lc + 1 + offs).reshape(-1)].reshape(len(Lc), m, k).sum(1) + logp
        if tables is not None:
            score = score + tables.log_terms(L[s], logc, device)
        out[s] = score.cpu().numpy()
    return out


__all__ = ["GroupTables", "fit_groups_em", "group_codes", "group_log_joint", "split_groups"]
