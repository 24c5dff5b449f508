"""The shipped notebooks (docs/notebooks/*.ipynb) run top to bottom and report their numbers.

Each notebook asserts its own key numbers in a cell (so a notebook that silently degrades
fails here) and ends with a cell printing a JSON line `LOOM_RESULTS {...}` that these tests
read back and check again. Committed notebooks must carry no outputs (nbstripout-style check).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "docs" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
MARK = "LOOM_RESULTS "


def _kernel_name() -> str:
    """A kernelspec that runs this interpreter (the project's venv), registered if missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec("python3")
        exe = spec.argv[0]
        if exe in ("python", "python3") or Path(exe).resolve() == Path(sys.executable).resolve():
            return "python3"
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(user=True, kernel_name="loom-venv", display_name="loom (.venv)")
    return "loom-venv"


def strip_problems(path: Path) -> list[str]:
    """What makes a committed notebook not clean: outputs, execution counts, widget state."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
    if "widgets" in nb.metadata:
        problems.append("notebook metadata holds widget state")
    return problems


def run_notebook(path: Path, workdir: Path, timeout: int = 1200) -> tuple[dict, float, object]:
    """Execute a notebook in `workdir` (its workspace goes there); return (results, seconds, nb)."""
    nb = nbformat.read(path, as_version=4)
    env_backup = dict(os.environ)
    os.environ.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "LOOM_WORKSPACE": str(workdir / "workspace"),
            "LOOM_CACHE": os.environ.get("LOOM_CACHE", str(Path.home() / ".cache" / "loom")),
        }
    )
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=_kernel_name(),
            resources={"metadata": {"path": str(path.parent)}},
        )
        t0 = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    results = None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(MARK):
                    results = json.loads(line[len(MARK) :])
    assert results is not None, f"{path.name} printed no '{MARK}{{...}}' line"
    return results, elapsed, nb


def html_outputs(nb) -> str:
    """All text/html outputs of an executed notebook, concatenated."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                parts.append(data["text/html"])
    return "\n".join(parts)


def shown(value: float, html: str) -> bool:
    """Whether `value` appears with 3 decimals in the HTML (either rounding of a tie)."""
    return any(f"{value + d:.3f}" in html for d in (-5e-4, 0.0, 5e-4))


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    assert {"labeling.ipynb", "linking.ipynb", "extraction.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path):
    problems = strip_problems(path)
    assert not problems, (
        f"{path.relative_to(ROOT)} is not stripped ({'; '.join(problems[:5])}): run "
        "`.venv/bin/python docs/notebooks/strip.py` before committing"
    )


def test_strip_check_catches_outputs(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [cell, nbformat.v4.new_code_cell("x = 2")]
    p = tmp_path / "dirty.ipynb"
    nbformat.write(nb, p)
    assert strip_problems(p) == ["cell 0 has outputs", "cell 0 has execution_count 3"]
    sys.path.insert(0, str(NB_DIR))
    try:
        from strip import strip_notebook
    finally:
        sys.path.remove(str(NB_DIR))
    assert strip_notebook(p) is True
    assert strip_problems(p) == []
    assert strip_notebook(p) is False


def test_docs_link_the_notebooks():
    readme = (ROOT / "README.md").read_text()
    index = (NB_DIR / "README.md").read_text()
    assert "docs/notebooks" in readme
    for name in ("labeling.ipynb", "linking.ipynb", "extraction.ipynb"):
        assert name in index


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_labeling_notebook(tmp_path):
    res, secs, nb = run_notebook(NB_DIR / "labeling.ipynb", tmp_path)
    print(f"labeling.ipynb ran in {secs:.0f} s: {res}")
    assert res["n_lfs"] >= 10
    assert res["lm_acc"] >= res["mv_acc"] - 0.02
    assert res["lm_acc"] > 0.7
    assert res["liger_acc_all"] > res["lm_acc_all"]
    assert res["end_model_weak_acc"] > 0.65
    assert res["end_model_weak_acc"] >= res["end_model_gold_acc"] - 0.05
    html = html_outputs(nb)
    assert "rows x 13 LFs" in html  # LFAnalysis summary
    assert "est. accuracy" in html  # the label model's weights table
    for key in ("mv_acc", "lm_acc", "end_model_weak_acc", "end_model_gold_acc"):
        assert shown(res[key], html), key  # the tables show the asserted numbers


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_linking_notebook(tmp_path):
    res, secs, nb = run_notebook(NB_DIR / "linking.ipynb", tmp_path)
    print(f"linking.ipynb ran in {secs:.0f} s: {res}")
    assert res["f1"] > 0.5
    assert res["f1_tuned"] > res["f1"]
    assert res["f1_finetuned"] > res["f1_before_finetune"] + 0.05
    assert res["f1_finetuned"] > 0.85
    html = html_outputs(nb)
    for key in ("f1", "f1_tuned", "f1_finetuned"):
        assert shown(res[key], html), key


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_extraction_notebook(tmp_path):
    res, secs, nb = run_notebook(NB_DIR / "extraction.ipynb", tmp_path)
    print(f"extraction.ipynb ran in {secs:.0f} s: {res}")
    assert res["rows"] == 40 and res["attributes"] == 3
    assert res["functions_kept"] >= 3
    assert res["f1"] > 0.5
    assert res["provenance_rows"] > 0 and res["located"] > 0.9
    html = html_outputs(nb)
    assert "ExtractionResult(40 documents" in html  # the result's own HTML view
    assert shown(res["f1"], html)
    assert "<mark>" in html  # a value shown in its document context
