"""Strip outputs, execution counts and widget state from notebooks (an nbstripout in 30 lines).

Usage: python docs/notebooks/strip.py [NOTEBOOK ...]   (default: every notebook next to this file)
tests/test_notebooks.py fails on a committed notebook that still carries outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip_notebook(path: str | Path) -> bool:
    """Remove outputs in place; return True if the file changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell.outputs, cell.execution_count = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    paths = sys.argv[1:] or sorted(str(p) for p in Path(__file__).parent.glob("*.ipynb"))
    for p in paths:
        print(("stripped " if strip_notebook(p) else "clean    ") + p)
