"""CLI glue the table-linking commands share (`loom cluster`, `loom aggregate`): the checked
`--output` file, writing it, and the cosine range of `--threshold`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from toolkit.errors import LoomError

WRITERS = (".csv", ".tsv", ".parquet", ".json", ".jsonl")


def check_output(
    path: str | None, flag: str = "--output", *, inputs: dict[str, str] | None = None
) -> Path | None:
    """The output file of `flag`, checked before any work: a known format, an existing folder,
    and none of `inputs` (argument name -> path, e.g. {"FILE": ...}), which it would overwrite."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in WRITERS:
        raise LoomError(f"{flag} {path}: name a file ending in one of {', '.join(WRITERS)}")
    if not out.parent.is_dir():
        raise LoomError(f"{flag} {path}: the folder {out.parent} does not exist; create it first")
    for name, given in (inputs or {}).items():
        if out.resolve() == Path(given).resolve():
            raise LoomError(
                f"{flag} {path} is {name} {given}: writing there would overwrite the input; "
                "name another file"
            )
    return out


def write_output(df: pd.DataFrame, out: Path) -> None:
    """Write `df` to `out` in the format its suffix names (one of WRITERS)."""
    kind = out.suffix.lower()
    if kind in (".csv", ".tsv"):
        df.to_csv(out, sep="\t" if kind == ".tsv" else ",", index=False)
    elif kind == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_json(out, orient="records", lines=kind == ".jsonl", force_ascii=False)


def check_cosine(value: float | str | None, flag: str = "--threshold") -> None:
    """A number given to `flag` must be a cosine similarity (-1..1); 'auto' and None pass."""
    if isinstance(value, (int, float)) and not -1 <= value <= 1:
        raise LoomError(f"{flag} {value}: give a cosine similarity between -1 and 1")
