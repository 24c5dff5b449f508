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
