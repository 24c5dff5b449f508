"""Position embeddings beyond the teacher's learned table, for long inputs after conversion.

A converted encoder keeps its teacher's learned absolute position table (512 rows for
MiniLM). Linear attention itself has no length limit, so only the positions cap the input.
`position_embeddings` reads the table for inputs of any length up to `max_positions`:

- "interpolate" (default): position interpolation (Chen et al. 2023, "Extending Context
  Window of Large Language Models via Positional Interpolation") applied per input: a text
  of n <= 512 tokens reads the table exactly as the teacher does; a text of n > 512 tokens
  reads it at the fractional positions p * 511 / (n - 1), linearly interpolated between
  neighbouring rows, so its first and last tokens keep the teacher's first and last
  positions. Each row of a padded batch is scaled by its own length (padding changes
  nothing).
- "tile": Longformer's initialisation (Beltagy et al. 2020): position p reads row p mod 512.
- "none": the teacher's cap; longer inputs raise.
"""

from __future__ import annotations

import torch
from torch import nn

from toolkit.errors import LoomError
from toolkit.validate import is_whole_number

POSITION_MODES = ("interpolate", "tile", "none")


def check_positions(positions: str, max_positions: int | None, table: int) -> int:
    """The longest input (in tokens, special tokens included) that `positions` allows."""
    if positions not in POSITION_MODES:
        raise LoomError(f"positions={positions!r}: use one of {POSITION_MODES}")
    if positions == "none":
        if max_positions is not None and max_positions != table:
            raise LoomError(
                f"max_positions={max_positions} needs positions='interpolate' or 'tile'; "
                f"positions='none' keeps the teacher's {table}"
            )
        return table
    if max_positions is None:
        return table
    if not is_whole_number(max_positions) or max_positions < table:
        raise LoomError(
            f"max_positions={max_positions!r}: give a whole number of tokens >= the teacher's "
            f"{table} (e.g. 4096), or positions='none'"
        )
    return int(max_positions)  # numpy ints were refused, and would not write to JSON


def position_embeddings(
    table: torch.Tensor, lengths: torch.Tensor, n: int, positions: str
) -> torch.Tensor:
    """(B, n, hidden) position embeddings from `table` (L, hidden) for rows of real `lengths`.

    Rows of at most L tokens read rows 0..n-1 of the table exactly (interpolation weight 0);
    padded positions past a row's length read a valid row and are masked out downstream.
    """
    rows = table.shape[0]
    idx = torch.arange(n, device=table.device)
    if positions == "tile":
        return table[idx % rows].unsqueeze(0).expand(lengths.shape[0], -1, -1)
    if positions != "interpolate":
        raise LoomError(f"positions={positions!r} does not read past row {rows}")
    last = (lengths.to(table.device).clamp_min(2) - 1).to(torch.float64)
    scale = (last / (rows - 1)).clamp_min(1.0)  # 1.0 exactly for rows that fit the table
    pos = (idx[None, :].to(torch.float64) / scale[:, None]).clamp(max=rows - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=rows - 1)
    frac = (pos - lo.to(torch.float64)).to(table.dtype)[..., None]
    low = table[lo]
    return low + frac * (table[hi] - low)


def embed_long(embeddings: nn.Module, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """A HF BERT embeddings module's forward with the given position embeddings (B, n, hidden).

    The same sums in the same order as `BertEmbeddings.forward` (words + token type, then
    + positions, LayerNorm, dropout), so rows of short inputs equal the teacher's bit for bit.
    """
    words = embeddings.word_embeddings(ids)
    types = embeddings.token_type_embeddings(torch.zeros_like(ids))
    x = words + types
    x = x + pos.to(x.dtype)
    return embeddings.dropout(embeddings.LayerNorm(x))
