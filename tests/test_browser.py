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
import re
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
             # a second page (tab) keeps its timers: Streamlit's auto-refresh runs in the page
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows",
             f"--user-data-dir={profile}", f"--remote-debugging-port={port}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/json/version", 60, proc, log)
        page = next(t for t in json.loads(_get(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            browser = Browser(ws)
            browser.port = port  # for more pages of the same browser (tab)
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
            yield browser
    finally:
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium_binary():
    return require_tool(find_chromium(), "chromium")


#: 2 restorers x 6 defenses: as many systems as the default tournament's tables, on 16 px images
TWELVE = dict(name="twelve", data={"name": "embedded", "split": "test", "images": 2, "size": 16},
              restorers=["identity", "tiny"],
              defenses=["none", {"name": "jpeg", "quality": 50}, "median", "bitdepth", "tvm", "noise"],
              attacks=["fgsm"], budgets=[{"norm": "linf", "eps": "4/255"}, {"norm": "linf", "eps": "8/255"}],
              samples_per_match=2)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("browser") / "arena.db")
    run_tournament(config(**TWELVE), db, executor="local", progress=False, command="arena run twelve.toml")
    return db


@pytest.fixture(scope="module")
def server(small_db, tmp_path_factory):
    """One dashboard server over the 12-system database for the module."""
    with dashboard_server(small_db, tmp_path_factory.mktemp("server")) as url:
        yield url


# the data grid's scroller: content taller than its box means rows hidden behind inner scrolling
SCROLL = """JSON.stringify(Array.from(document.querySelectorAll('[data-testid=stDataFrame]')).map(df => {
  const s = df.querySelector('.dvn-scroller'); return s ? [s.scrollHeight, s.clientHeight] : null; }))"""
CAPTIONS = """JSON.stringify(Array.from(document.querySelectorAll('[data-testid=stImage]')).map(
  i => (i.parentElement.innerText || '').trim()))"""
METRICS = """JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('[data-testid=stMetric]')).map(
  m => [m.querySelector('[data-testid=stMetricLabel]').innerText.trim(),
        m.querySelector('[data-testid=stMetricValue]').innerText.trim()])))"""


def click_at(browser, js_element: str) -> None:
    """A real mouse click (DevTools Input events) at the centre of the element ``js_element``."""
    box = json.loads(browser.evaluate(f"""(() => {{ const e = {js_element}; e.scrollIntoView({{block: 'center'}});
      const r = e.getBoundingClientRect(); return JSON.stringify([r.x + r.width / 2, r.y + r.height / 2]); }})()"""))
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def choose(browser, label: str, option: str, timeout_s: float = 30) -> None:
    """Open the selectbox labelled ``label`` and click ``option``, as a user does."""
    box = (f"Array.from(document.querySelectorAll('[data-testid=stSelectbox]')).find("
           f"b => b.querySelector('label').innerText.trim() === {json.dumps(label)})"
           ".querySelector('button[aria-haspopup=listbox]')")
    click_at(browser, box)
    item = (f"Array.from(document.querySelectorAll('[role=option]')).find("
            f"o => o.innerText.trim() === {json.dumps(option)})")
    end = time.monotonic() + timeout_s
    while not browser.evaluate(f"!!({item})"):
        if time.monotonic() > end:
            raise TimeoutError(f"no option {option!r} in {label!r}")
        time.sleep(0.2)
    click_at(browser, item)


def settle(browser, ready, timeout_s: float = 60) -> dict:
    """Wait, without reloading, until the script has rerun and ``ready(state)`` holds."""
    end, state = time.monotonic() + timeout_s, {}
    time.sleep(0.5)
    while time.monotonic() < end:
        state = json.loads(browser.evaluate(STATE) or "{}")
        if state.get("state") == "notRunning" and ready(state):
            time.sleep(0.5)
            return json.loads(browser.evaluate(STATE))
        time.sleep(0.3)
    raise TimeoutError(f"did not settle: {state.get('text', '')[:500]!r}")


@pytest.mark.slow
def test_dashboard_renders_the_leaderboard_in_a_browser(chromium_binary, small_db, server, tmp_path):
    expected = [r for r in views.leaderboard(open_reader(small_db)) if r["eps"] == pytest.approx(4 / 255)]
    assert len(expected) == 12
    with chromium(chromium_binary) as browser:
        state = browser.open(server + "/", lambda s: s["frames"] >= 2)
        shot = browser.screenshot(tmp_path / "leaderboard.png")
        tables = json.loads(browser.evaluate(READ_TABLES))
        scroll = json.loads(browser.evaluate(SCROLL))
    assert "Most robust system" in state["text"] and "oblivious threat model" in state["text"]
    assert "the attacker differentiates the undefended restorer" in state["text"]  # the definition
    # first table: the side-by-side one at 4/255, all 12 rows in rank order, none hidden
    board = tables[0]
    assert len(board) == 12
    assert [(r[1], r[2]) for r in board] == [(r["restorer"], r["defense"]) for r in expected]
    assert [r[0] for r in board] == [str(r["rank"]) for r in expected]
    assert [float(r[5].split()[0]) for r in board] == pytest.approx([r["robust_psnr"] for r in expected], abs=0.006)
    assert scroll and all(s is not None for s in scroll)
    for content, box in scroll:
        assert content <= box + 2, (content, box)  # no inner scrolling in any table
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1400, 1000)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # not blank


@pytest.mark.slow
def test_gallery_switches_matches_and_follows_a_leaderboard_row(chromium_binary, small_db, server):
    with chromium(chromium_binary) as browser:
        first = browser.open(server + "/gallery", lambda s: s["images"] >= 6)
        before = json.loads(browser.evaluate(CAPTIONS))
        choose(browser, "defense", "jpeg")
        after_state = settle(browser, lambda s: "identity + jpeg" in s["text"] and s["images"] >= 6)
        after = json.loads(browser.evaluate(CAPTIONS))
        # a leaderboard row's link: its gallery, opened on that system
        browser.open(server + "/", lambda s: s["frames"] >= 2 and "Gallery of " in s["text"])
        link = "Array.from(document.querySelectorAll('a')).find(a => a.innerText.includes('Gallery of '))"
        target = browser.evaluate(f"{link}.innerText")
        click_at(browser, link)
        followed = settle(browser, lambda s: s["images"] >= 6 and "Every image of this match" in s["text"])
        url = browser.evaluate("location.href")
    assert "identity + none" in first["text"] and "identity + jpeg" in after_state["text"]
    conn = open_reader(small_db)
    for text, defense in ((before, "none"), (after, "jpeg")):
        (match,) = [m for m in views.gallery_matches(conn) if (m["restorer"], m["defense"]) == ("identity", defense)
                    and m["eps"] == pytest.approx(4 / 255)]
        image = views.gallery(conn, match["id"])[0]
        assert any(f"restored, attacked: {image['adv_psnr']:.2f} dB" in c for c in text), text
    assert before != after
    system = target.split("Gallery of ", 1)[1].split(" at ")[0]
    assert "/gallery?" in url and system in followed["text"]


@pytest.mark.slow
def test_curves_csv_is_the_data_behind_the_figures(chromium_binary, small_db, server, tmp_path):
    import csv

    button = ("Array.from(document.querySelectorAll('[data-testid=stDownloadButton] button'))"
              ".find(b => b.innerText.includes('These curves (CSV)'))")
    with chromium(chromium_binary) as browser:
        browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(tmp_path))
        browser.open(server + "/curves", lambda s: "PSNR vs attack iterations" in s["text"])
        click_at(browser, button)
        path = poll("the CSV is saved", lambda: next(iter(tmp_path.glob("eps_curves_linf.csv")), None), 60, browser)
    rows = list(csv.DictReader(path.open()))
    want = [r for r in views.eps_curves(open_reader(small_db), norm="linf") if r["attack"] == "ALL"]
    assert len(rows) == len(want) == 12 * 3  # 12 systems x (clean, 4/255, 8/255), oblivious only
    got = {(r["threat"], r["restorer"], r["defense"], r["attack"], round(float(r["eps"]) * 255, 6)):
           float(r["robust_psnr"]) for r in rows}
    assert got == pytest.approx({(r["threat"], r["restorer"], r["defense"], r["attack"], round(r["eps"] * 255, 6)):
                                 r["robust_psnr"] for r in want})
    assert {r["norm"] for r in rows} == {"linf"}


#: a tournament `arena run` takes a while over: 12 PGD matches of many steps, one Ray worker.
#: Adaptive, so that each defense is attacked anew (oblivious matches share one computation
#: per budget, arena/run/share.py)
LIVE_TOML = """
name = "live"
threat_models = ["adaptive"]
workers = 1
samples_per_match = 0
[data]
name = "embedded"
split = "test"
images = 1
size = 16
[[restorers]]
name = "identity"
[[defenses]]
name = "none"
[[defenses]]
name = "median"
[[defenses]]
name = "bitdepth"
[[attacks]]
name = "pgd"
""" + "".join(f'[[budgets]]\neps = "{k}/255"\nsteps = {{steps}}\n' for k in (1, 2, 4, 8))
#: PGD iterations per match: 12 matches of 2000 took 20 s under Ray on a shared two-core machine, of
#: 3000 as little as 15 s on a quieter one
LIVE_STEPS = 5000
BANNER = re.compile(r"A tournament is running: (\d+) of (\d+) matches stored, (\d+) in flight")
# counts the script runs (full or fragment) the page starts from now on, without reloading it
COUNT_RUNS = """(() => { window.__runs = 0; if (window.__observed) return true; window.__observed = true;
  const app = document.querySelector('[data-testid=stApp]');
  new MutationObserver(ms => ms.forEach(m => { if (app.getAttribute('data-test-script-state') === 'running')
    window.__runs++; })).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  return true; })()"""


@contextmanager
def tab(browser):
    """A second page of the same Chromium (its own DevTools connection)."""
    req = urllib.request.Request(f"http://127.0.0.1:{browser.port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as r:
        target = json.loads(r.read())
    with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
        page = Browser(ws)
        page.port = browser.port
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        yield page


def poll(what: str, probe, timeout_s: float, page=None, every_s: float = 0.5):
    """``probe()`` until it returns something truthy (returned); fails after ``timeout_s``,
    quoting ``page``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if found := probe():
            return found
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s" + (f"; the page: {page_text(page)[:600]!r}"
                                                                     if page else ""))


def page_text(page) -> str:
    return json.loads(page.evaluate(STATE) or "{}").get("text", "")


@pytest.mark.ray
@pytest.mark.slow
def test_pages_follow_a_running_tournament_without_a_reload(chromium_binary, tmp_path):
    """`arena run` (real Ray) on a tournament that lasts a minute or more, and `arena dashboard`
    started before its database exists. Without any reload, the leaderboard says a tournament
    is running and its stored count grows, the Runs page's counts grow, the leaderboard ends on
    the final ranking, and then the pages stop refreshing."""
    db = str(tmp_path / "live.db")
    cfg = tmp_path / "live.toml"
    cfg.write_text(LIVE_TOML.format(steps=LIVE_STEPS))
    log = tmp_path / "tournament.log"
    with dashboard_server(db, tmp_path) as url, chromium(chromium_binary) as board, tab(board) as runs:
        board.open(url + "/", lambda s: "No results yet" in s["text"])
        runs.open(url + "/runs", lambda s: "No results yet" in s["text"])
        with open(log, "w") as out:
            run = subprocess.Popen([sys.executable, "-m", "arena.cli", "run", str(cfg), "--db", db, "--quiet"],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            banners, counts = watch_run(run, board, runs, log)
            assert run.wait(timeout=400) == 0, log.read_text()[-3000:]
        finally:
            _stop(run)
        expected = views.leaderboard(open_reader(db))
        first_eps = [r for r in expected if r["eps"] == pytest.approx(expected[0]["eps"])]

        board.call("Page.bringToFront")  # a background page does not draw its data grids (no animation frames)

        def final_board():
            if "A tournament is" in page_text(board):
                return None
            tables = json.loads(board.evaluate(READ_TABLES))
            return tables if tables and len(tables[0]) == len(first_eps) and tables[0][0][0].isdigit() else None

        tables = poll("the leaderboard shows the final ranking", final_board, 120, board)
        # a page refreshing every few seconds never has a quiet window: this fails then
        poll("the leaderboard stops rerunning once the tournament has ended", lambda: quiet_window(board), 90, board)
        loads = [p.evaluate("performance.getEntriesByType('navigation').length") for p in (board, runs)]
        final_runs = json.loads(runs.evaluate(METRICS) or "{}")
    stored = [b[0] for b in banners]
    assert stored[-1] > stored[0], banners  # the leaderboard's count grew on the same page
    assert {b[1] for b in banners} == {12}  # 3 defenses x 4 budgets, as planned
    assert len({c["done"] for c in counts}) >= 2 and int(counts[-1]["done"]) > int(counts[0]["done"])
    assert any(c["running"] != "0" for c in counts)
    # once a match is in flight, the total is the one the driver planned (before: nothing stored yet)
    assert {c["planned"] for c in counts if c["done"] != "0" or c["running"] != "0"} == {"12"}
    assert any(c["ETA"].endswith(" s") for c in counts)
    assert final_runs["done"] == "12" and final_runs["running"] == "0"
    # the page opened before the database ends on the final ranking: rank, system, robust PSNR
    # (the side-by-side table: rank, restorer, defense, status, clean, oblivious, adaptive, ...)
    board_rows = tables[0]
    assert [(r[1], r[2]) for r in board_rows] == [(r["restorer"], r["defense"]) for r in first_eps]
    assert [r[0] for r in board_rows] == [str(r["rank"]) for r in first_eps]
    assert [float(r[6].split()[0]) for r in board_rows] == pytest.approx([r["robust_psnr"] for r in first_eps],
                                                                         abs=0.006)
    assert loads == [1, 1]  # one navigation per page: everything changed in place


def watch_run(run, board, runs, log: Path, timeout_s: float = 400):
    """Look at both pages every half second while ``run`` goes, never reloading them, until the
    leaderboard's banner has shown two stored counts, the leaderboard has rerun twice and the
    Runs page's done count has grown. Returns (banner counts, Runs counts)."""
    banners: list[tuple[int, int, int]] = []
    counts: list[dict] = []
    counting = False
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        text = page_text(board)
        if (m := BANNER.search(text)) and (not banners or banners[-1][0] != int(m[1])):
            banners.append((int(m[1]), int(m[2]), int(m[3])))
        if banners and not counting:  # from the first sight of the running state on
            counting = board.evaluate(COUNT_RUNS)
        c = json.loads(runs.evaluate(METRICS) or "{}")
        if c.get("done") and (not counts or c != counts[-1]):
            counts.append(c)
        reruns = board.evaluate("window.__runs || 0") if counting else 0
        if (len(banners) >= 2 and reruns >= 2 and len({c["done"] for c in counts}) >= 2
                and any(c["running"] != "0" for c in counts) and any(c["ETA"] != "—" for c in counts)):
            return banners, counts
        if run.poll() is not None:
            raise AssertionError(f"the tournament ended before the pages showed it running: leaderboard "
                                 f"{banners}, Runs {counts}, reruns {reruns}; page {text[:400]!r}; "
                                 f"log {log.read_text()[-1500:]!r}")
        time.sleep(0.5)
    raise AssertionError(f"not seen running within {timeout_s:.0f} s: leaderboard {banners}, Runs {counts}")


def quiet_window(page, window_s: float = 12) -> bool:
    """The page starts at most one script run in ``window_s`` (one look of the idle check may
    fall in it); a page refreshing every few seconds never does."""
    page.evaluate(COUNT_RUNS)
    time.sleep(window_s)
    return page.evaluate("window.__runs") <= 1


def test_dashboard_command_starts_before_the_database_exists(tmp_path):
    with dashboard_server(str(tmp_path / "none.db"), tmp_path) as url:
        assert _get(f"{url}/_stcore/health") == b"ok"
    assert not (tmp_path / "none.db").exists()  # waiting must not create it


def test_dashboard_command_refuses_a_foreign_database(tmp_path):
    import sqlite3

    path = tmp_path / "foreign.db"
    sqlite3.connect(path).execute("create table x (y int)").connection.commit()
    out = subprocess.run([sys.executable, "-m", "arena.cli", "dashboard", "--db", str(path),
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "not a udc-arena database" in out.stderr
