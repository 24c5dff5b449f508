import re
import subprocess
import sys

import pandas as pd
import pytest

from apps.cli import main
from toolkit.workspace import Workspace


def test_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "apps.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("embed", "embed-server", "demo", "doctor"):
        assert cmd in out


def test_embed_command_writes_workspace(tmp_path, capsys, embedder):
    csv = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a red apple", "a green pear", "the stock market fell"]}).to_csv(
        csv, index=False
    )
    code = main(
        [
            "embed",
            str(csv),
            "--column",
            "text",
            "--out",
            str(tmp_path / "ws"),
            "--query",
            "fruit",
            "--k",
            "2",
        ]
    )
    assert code == 0
    ws = Workspace(tmp_path / "ws")
    run = ws.latest_run("embed")
    assert len(ws.load_table(run, "embeddings")) == 3
    hits = ws.load_table(run, "neighbours")
    assert set(hits["text"]) == {"a red apple", "a green pear"}
    assert str(ws.path) in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, args, message",
    [
        (b"text\nhello\n", ["--column", "body"], "has no column(s) ['body']"),
        (b"", [], "is empty"),
        (b"text\n", [], "no rows"),
        ("text\ncaf\u00e9\n".encode("latin-1"), [], "not UTF-8"),
        (b"text\nhello\n", ["--model", "/no/such/model"], "unknown embedding model"),
    ],
)
def test_cli_errors_exit_nonzero(tmp_path, capsys, content, args, message):
    csv = tmp_path / "in.csv"
    csv.write_bytes(content)
    code = main(["embed", str(csv), "--out", str(tmp_path / "ws"), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_file_subprocess_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "apps.cli", "embed", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# ---- issue 21: the first hour of a new user -------------------------------------------------


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_defaults(capsys):
    extract = _help(capsys, "extract")
    assert (
        "--sample-size SAMPLE_SIZE documents the LLM reads (code modes), >= 1; auto: 4 with a "
        "local LLM, 10 with a server URL (default: auto)" in extract
    )
    assert "(default: code+)" in extract and "0 = only LLM-free induced ones; auto: 2" in extract
    label = _help(capsys, "label")
    assert "(default: LabelModel)" in label and "--fault-tolerant" in label
    assert "the column the LFs read as x.text" in label
    link = _help(capsys, "link")
    assert "or 'none' (every nearest match kept) (default: auto)" in link
    assert "--char-weight" in link and "(default: auto)" in _help(capsys, "dedup")
    assert "(default: workspace)" in _help(capsys, "embed")


@pytest.fixture
def people(tmp_path):
    left = tmp_path / "people.csv"
    pd.DataFrame({"name": ["Ann Lee", "Ann Lee", "Bob Ray"], "city": ["Leeds"] * 3}).to_csv(
        left, index=False
    )
    right = tmp_path / "register.csv"
    pd.DataFrame({"full_name": ["Anne Lee"], "town": ["Leeds"]}).to_csv(right, index=False)
    return left, right


def test_dedup_and_link_errors_name_the_flag_and_the_file(tmp_path, capsys, people):
    left, right = people
    out = ["--out", str(tmp_path / "ws")]
    assert main(["dedup", str(left), "--on", "nme", *out]) == 2
    err = capsys.readouterr().err
    assert f"FILE {left} has no column(s) ['nme'] (named by --on)" in err
    assert "its columns are ['name', 'city']" in err
    assert main(["dedup", str(left), "--on", "name", "--blocking-on", "town", *out]) == 2
    assert "(named by --blocking-on)" in capsys.readouterr().err
    assert main(["link", str(left), str(right), "--on", "name", *out]) == 2
    assert f"RIGHT {right} has no column(s) ['name'] (named by --on)" in capsys.readouterr().err
    assert main(["link", str(left), str(right), *out]) == 2
    assert "--on name,city (both tables), or --left-on and --right-on" in capsys.readouterr().err
    # a gold file is checked before any model loads
    assert main(["dedup", str(left), "--on", "name", "--gold", str(right), *out]) == 2
    assert f"--gold {right} has no column(s) ['row_a', 'row_b']" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message of a CPU-only machine"
)
def test_device_flag_is_checked_before_work(tmp_path, capsys):
    csv = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a red apple"]}).to_csv(csv, index=False)
    assert main(["embed", str(csv), "--device", "cuda", "--out", str(tmp_path / "ws")]) == 2
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_doctor_says_what_this_installation_gives(capsys):
    import time

    t0 = time.perf_counter()
    status = main(["doctor"])
    took = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert status == 0, out
    assert re.search(r"  LLM +\S+ via (llama\.cpp|transformers): \d+ tokens/s \(\d+ tokens", out)
    assert re.search(r"  encoder +\S+: loads, dimension \d+", out)
    assert re.search(r"  GPU +(none|.+device)", out)
    for part in ("Dask", "Chromium", "seccomp"):
        assert f"  {part}" in out
    assert out.count("-> ") >= 5  # every part says what it means for the user
    assert took < 120, took  # about 5 s on an idle 2-core machine


def test_readme_and_troubleshooting_page_quote_the_real_commands_and_messages(
    tmp_path, capsys, people, monkeypatch
):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "loom doctor" in readme and "docs/troubleshooting.md" in readme
    page = (root / "docs" / "troubleshooting.md").read_text()
    monkeypatch.chdir(tmp_path)  # relative paths, as the page shows them
    left, right = (p.name for p in people)
    (tmp_path / "docs").mkdir()
    (tmp_path / "lfs.py").write_text(
        "from labeling import keyword_lf\ncardinality = 2\ngood = keyword_lf('good', ['great'], 1)\n"
    )
    commands = [
        ["dedup", left, "--on", "nme"],
        ["link", left, right, "--on", "name"],
        ["extract", "docs", "--sample-size", "0"],
        ["label", "--data", left, "--lfs", "lfs.py", "--cardinality", "3"],
    ]
    for command in commands:
        assert main(command) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith(f"loom {command[0]}: error: ")
        assert message in page, message
