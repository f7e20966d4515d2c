"""The dashboard as a user sees it: `arena dashboard` as a real server, in headless Chromium.

Streamlit renders in the browser over a websocket, so the page is read through the Chrome
DevTools Protocol (stdlib + the `websockets` package Streamlit already depends on): load,
wait until the script has finished, read the leaderboard's cells from the data grid's
accessible table, save a screenshot. Skipped where Chromium is not installed
(scripts/test.sh installs Debian's); under CI=true a missing one fails instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import connect

from arena.run.driver import run_tournament
from arena.store import views
from arena.store.db import open_reader
from helpers import config, require_tool

pytestmark = pytest.mark.browser


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("/usr/bin/chromium")  # off the PATH too

# the glide data grid draws on a canvas; its accessible <table> carries the cell text
READ_TABLES = """JSON.stringify(Array.from(document.querySelectorAll('[data-testid=stDataFrame]')).map(
  df => Array.from(df.querySelectorAll('tr')).map(
    tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim())).filter(r => r.length)))"""
STATE = """JSON.stringify({state: document.querySelector('[data-testid=stApp]')
  ? document.querySelector('[data-testid=stApp]').getAttribute('data-test-script-state') : null,
  frames: document.querySelectorAll('[data-testid=stDataFrame]').length,
  images: Array.from(document.querySelectorAll('[data-testid=stImage] img')).filter(i => i.naturalWidth > 0).length,
  text: document.body ? document.body.innerText : ''})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _wait_for(url: str, deadline_s: float, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {deadline_s} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """End the process group we started (the server or the browser and its children)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def dashboard_server(db: str, log_dir: Path):
    """`arena dashboard --db DB --port P` in its own process group; yields its URL."""
    port, log = free_port(), log_dir / "dashboard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "arena.cli", "dashboard", "--db", db, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/_stcore/health", 90, proc, log)
        yield url
    finally:
        _stop(proc)


class Browser:
    """Just enough of the DevTools Protocol: navigate, evaluate, screenshot."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]
        return result.get("value")

    def open(self, url: str, ready, timeout_s: float = 60.0) -> dict:
        """Load ``url`` and wait until Streamlit has run the script and ``ready(state)`` holds."""
        self.call("Page.navigate", url=url)
        end, state = time.monotonic() + timeout_s, {}
        while time.monotonic() < end:
            state = json.loads(self.evaluate(STATE) or "{}")
            if state.get("state") == "notRunning" and ready(state):
                time.sleep(1.0)  # let the grid and images paint before a screenshot
                return json.loads(self.evaluate(STATE))
            time.sleep(0.3)
        raise TimeoutError(f"{url} did not render: {state.get('state')!r}, text {state.get('text', '')[:500]!r}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium(binary: str, width: int = 1400, height: int = 1000):
    port = free_port()
    profile = tempfile.mkdtemp(prefix="arena-chromium-")
    log = Path(profile) / "chromium.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--remote-debugging-port={port}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/json/version", 60, proc, log)
        page = next(t for t in json.loads(_get(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            browser = Browser(ws)
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
            yield browser
    finally:
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def chromium_binary():
    return require_tool(find_chromium(), "chromium")


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("browser") / "arena.db")
    run_tournament(config(), db, executor="local", progress=False, command="arena run small.toml")
    return db


@pytest.mark.slow
def test_dashboard_renders_the_leaderboard_in_a_browser(chromium_binary, small_db, tmp_path):
    expected = views.leaderboard(open_reader(small_db))
    with dashboard_server(small_db, tmp_path) as url, chromium(chromium_binary) as browser:
        state = browser.open(url + "/", lambda s: s["frames"] >= 2)
        shot = browser.screenshot(tmp_path / "leaderboard.png")
        tables = json.loads(browser.evaluate(READ_TABLES))
        gallery = browser.open(url + "/gallery", lambda s: s["images"] >= 6)
        browser.screenshot(tmp_path / "gallery.png")
    assert "Leaderboard" in state["text"] and "oblivious threat model" in state["text"]
    # first table: the only budget's leaderboard, in rank order, with the stored numbers
    board = tables[0]
    assert [(r[2], r[3]) for r in board] == [(r["restorer"], r["defense"]) for r in expected]
    assert [r[0] for r in board] == [str(r["rank"]) for r in expected]
    assert [r[1] for r in board] == ["ranked"] * len(expected)  # every match done and re-scored
    assert [float(r[6]) for r in board] == pytest.approx([r["robust_psnr"] for r in expected])
    assert gallery["images"] == 6 and "ground truth" in gallery["text"]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 1000)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # not blank


def test_dashboard_command_refuses_a_missing_database(tmp_path):
    out = subprocess.run([sys.executable, "-m", "arena.cli", "dashboard", "--db", str(tmp_path / "none.db"),
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "does not exist" in out.stderr
