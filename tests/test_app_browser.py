"""Browser test: serve the app on 127.0.0.1 and load every page in headless Chromium.

Chromium (Debian package `chromium`) is driven over the DevTools protocol with the
`websockets` client that streamlit already depends on: navigate, wait until Streamlit has
rendered the page, read the DOM, save a screenshot. Skips only when Chromium is missing.
Set LOOM_SCREENSHOTS=<folder> to keep the screenshots (docs/img was made that way).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from test_app_fixtures import build_app_workspace

CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)
# page -> (texts that must be on it, whether a chart is drawn in its first tab)
PAGES = {
    "Runs": (["Run details", "Kind", "Status"], False),
    "Labeling": (["LF summary", "Overlaps and conflicts between LFs"], True),
    "Extraction": (["Extracted table", "Candidate functions", "Documents"], False),
    "Linking": (["Pairs", "precision", "recall"], True),
    "Embeddings": (["Run"], True),  # an embed run or a label run, whichever is newest
}


@pytest.fixture(scope="session")
def app_workspace(tmp_path_factory) -> Path:
    return build_app_workspace(tmp_path_factory)


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]
STATE_JS = """JSON.stringify({
  h1: Array.from(document.querySelectorAll('h1')).map(e => e.innerText.trim()),
  text: document.body ? document.body.innerText : '',
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  errors: Array.from(document.querySelectorAll('[data-testid="stAlertContentError"]')).map(e => e.innerText),
  skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
  running: !!document.querySelector('[data-testid="stStatusWidget"]'),
  charts: document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').length,
  ready: document.readyState
})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class Chromium:
    """A headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="loom-chromium-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        end = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > end or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t.get("type") == "page")
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        )
        self.ids = itertools.count(1)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def state(self) -> dict:
        res = self.call("Runtime.evaluate", expression=STATE_JS, returnByValue=True)
        return json.loads(res["result"]["value"])

    def load(self, url: str, heading: str, timeout: float = 90.0) -> dict:
        """Open `url`; wait until the page's h1 is `heading` and Streamlit stopped running."""
        self.call("Page.navigate", url=url)
        end = time.time() + timeout
        stable = 0
        state: dict = {}
        while time.time() < end:
            time.sleep(0.5)
            state = self.state()
            done = heading in state["h1"] and not state["running"] and not state["skeletons"]
            stable = stable + 1 if done else 0
            if stable >= 4:  # 2 s without a rerun: charts have drawn
                return state
        raise TimeoutError(f"{url} did not finish rendering: {str(state)[:500]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if getattr(self, "_stack", None):
                self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def serve(workspace: Path) -> Iterator[str]:
    """`loom app`'s streamlit command on an ephemeral 127.0.0.1 port; yields the base URL."""
    from apps.commands.app import streamlit_command

    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        streamlit_command(workspace, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.seek(0)
        out = log.read().decode(errors="replace")
        log.close()
        assert "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def served_app(app_workspace):
    with serve(app_workspace) as url:
        yield url


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed: apt-get install -y chromium (Debian package)",
)
def test_every_page_renders_in_chromium(served_app, tmp_path):
    out = Path(os.environ.get("LOOM_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    browser = Chromium()
    try:
        for page, (expected, chart) in PAGES.items():
            state = browser.load(f"{served_app}/?page={page}", heading=page)
            shot = out / f"app-{page.lower()}.png"
            browser.screenshot(shot)
            assert shot.stat().st_size > 10_000, f"{page}: screenshot is nearly empty"
            assert state["exceptions"] == 0, (
                f"{page}: Streamlit exception box: {state['text'][:2000]}"
            )
            assert not state["errors"], f"{page}: error message(s): {state['errors']}"
            for text in expected:
                assert text in state["text"], f"{page}: {text!r} not on the page"
            if chart:
                assert state["charts"] > 0, f"{page}: no chart was drawn"
    finally:
        browser.close()


def screenshots(workspace: Path, out: Path, height: int = 1000) -> None:
    """Save a screenshot of every page of the app over `workspace` into `out` (for docs/img)."""
    out.mkdir(parents=True, exist_ok=True)
    with serve(workspace) as url:
        browser = Chromium(height=height)
        try:
            for page in PAGES:
                browser.load(f"{url}/?page={page}", heading=page)
                browser.screenshot(out / f"app-{page.lower()}.png")
        finally:
            browser.close()


if __name__ == "__main__":  # python tests/test_app_browser.py WORKSPACE OUT_FOLDER
    screenshots(Path(sys.argv[1]), Path(sys.argv[2]))
