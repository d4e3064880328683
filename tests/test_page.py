"""The HTML page: self-contained, an explanation with a citation at every step, and -- in headless
Chromium -- a step slider that changes the explanation and the object graph.

The browser test drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
commands on fd 3, replies on fd 4, NUL-separated JSON), so it needs nothing but the browser. Without
Chromium it is skipped with the reason, except when ``CI=true``, where it fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sim.engine import SimBackend
from sim.report.page import write_page
from sim.scenario.loader import load_file, load_text
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent
LESSON1 = sorted((ROOT / "scenarios" / "lessons").glob("01-*.yaml"))

SMALL = """
name: page-small
description: |
  A server restarted over its own TIME_WAIT entry.
  Text with `code`.
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: listen, sock: srv, backlog: 5}
  - {proc: client, call: socket, as: c}
  - {proc: client, call: connect, sock: c, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: accept, sock: srv, as: conn}
  - {proc: server, call: close, sock: conn, note: "the server closes first"}
  - {proc: client, call: close, sock: c}
  - {proc: server, call: exit}
  - observe: {what: sockstat}
  - sleep: 1
  - {proc: client, call: socket, as: s2}
  - {proc: client, call: bind, sock: s2, addr: 127.0.0.1, port: 8080, expect: EADDRINUSE}
"""


def _page(tmp_path: Path, text: str = SMALL) -> tuple[str, Path]:
    sc = load_text(text, "page-small.yaml")
    trace = run(sc, SimBackend(seed=0), seed=0)
    out = tmp_path / "page.html"
    html = write_page(sc, trace, str(out), seed=0)
    return html, out


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert m, "the page carries its data as JSON"
    return json.loads(m.group(1))


def test_page_is_self_contained(tmp_path):
    html, out = _page(tmp_path)
    assert out.read_text(encoding="utf-8") == html
    # nothing is loaded from anywhere: no external scripts, styles, images, fonts or links
    assert not re.search(r"<(script|img|iframe|link)[^>]+(src|href)=", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    assert "<svg" in html and html.count("</html>") == 1


def test_every_step_has_an_explanation_with_a_citation(tmp_path):
    html, _ = _page(tmp_path)
    data = _data(html)
    sc = load_text(SMALL, "page-small.yaml")
    assert len(data["steps"]) == len(sc.steps)
    for i, s in enumerate(data["steps"]):
        cite = re.search(r'<div class="cite">(.*?)</div>', s["explain"], re.S)
        assert cite and cite.group(1).strip(), f"step {i} has no citation"
        assert "decided by" in s["explain"]
        assert 0 <= s["graph"] < len(data["graphs"])
    # the bind over the TIME_WAIT entry: its facts, and the re-run what-ifs
    last = data["steps"][-1]["explain"]
    assert "EADDRINUSE" in last and "TIME_WAIT entry" in last
    assert "whose process server has exited" in last
    assert "What would have changed the outcome" in last and "SO_REUSEADDR" in last
    # the note of a step and the description of the scenario are on the page
    assert "the server closes first" in data["steps"][6]["explain"]
    assert "<code>code</code>" in html


def test_graphs_and_tables_follow_the_steps(tmp_path):
    html, _ = _page(tmp_path)
    data = _data(html)
    graphs = [data["graphs"][s["graph"]] for s in data["steps"]]
    assert len(set(graphs)) >= 5, "the object graph changes as the scenario runs"
    assert "TIME_WAIT entry" in graphs[-1] and "8080" in graphs[-1]
    tables = [s["tables"] for s in data["steps"]]
    assert "no port is in use" in tables[0]
    assert "TIME_WAIT" in tables[8] and "exited" in tables[8]
    # the state diagram knows the path of the accepted connection, ending in TIME_WAIT
    paths = {v["label"]: v["path"] for v in data["tracks"].values()}
    acc = next(p for label, p in paths.items() if label.startswith("accepted connection conn"))
    assert [p["text"].split(" --")[0] for p in acc][:2] == ["LISTEN", "SYN_RECV"]
    assert acc[-1]["text"].endswith("TIME_WAIT")
    assert all(p["edge"] is None or p["edge"].startswith("tr-") for p in acc)


def test_page_from_the_command_line(tmp_path):
    out = tmp_path / "lesson.html"
    target = LESSON1[0] if LESSON1 else ROOT / "scenarios" / "restart-time-wait-no-reuseaddr.yaml"
    p = subprocess.run(["socksim", "run", str(target), "--html", str(out), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    data = _data(out.read_text(encoding="utf-8"))
    for i, s in enumerate(data["steps"]):
        cite = re.search(r'<div class="cite">(.*?)</div>', s["explain"], re.S)
        assert cite and cite.group(1).strip(), f"step {i} of {target.name} has no citation"


def test_python_svg_fallback_page(tmp_path, monkeypatch):
    """Without Graphviz the drawings come from the pure-Python layout; the page is just as complete."""
    monkeypatch.setenv("SOCKSIM_NO_DOT", "1")
    html, _ = _page(tmp_path)
    data = _data(html)
    assert all('data-engine="python"' in g for g in data["graphs"])
    assert 'id="st-ESTABLISHED"' in html and 'id="tr-ESTABLISHED-FIN_WAIT1"' in html


# ------------------------------------------------------------------------------- headless Chromium


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class DevTools:
    """The Chrome DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, profile: Path):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()
        # move the child's ends clear of fds 3 and 4 before the shell puts them there
        hi_r, hi_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(res_w)
        cmd_r, res_w = hi_r, hi_w
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "about:blank"]
        # bash (multi-digit fds) puts our pipe ends on fds 3 and 4, then becomes the browser
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'] + args,
            pass_fds=(cmd_r, res_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 20.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            r, _, _ = select.select([self.res_r], [], [], left)
            if r:
                chunk = os.read(self.res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self) -> None:
        try:
            os.write(self.cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.cmd_w)
        os.close(self.res_r)


def test_page_in_headless_chromium(tmp_path):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is not installed (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    target = LESSON1[0] if LESSON1 else None
    _, small = _page(tmp_path)  # a scenario with connections, for the state diagram
    if target is not None:
        sc = load_file(target)
        trace = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
        page = tmp_path / "lesson.html"
        write_page(sc, trace, str(page), seed=sc.seed)
    else:
        page = small
    cdp = DevTools(binary, tmp_path / "profile")
    try:
        targets = cdp.send("Target.getTargets")["targetInfos"]
        tid = next(t["targetId"] for t in targets if t["type"] == "page")
        sess = cdp.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        cdp.send("Page.enable", session=sess)
        cdp.send("Network.enable", session=sess)
        cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source":
                 "window.__errors = []; window.addEventListener('error', function (e) {"
                 " window.__errors.push(String(e.message)); });"}, session=sess)

        def js(expr: str):
            res = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=sess)
            if "exceptionDetails" in res:
                raise AssertionError(f"page script failed: {res['exceptionDetails']}")
            return res["result"].get("value")

        def load(p: Path) -> None:
            cdp.send("Page.navigate", {"url": p.resolve().as_uri()}, session=sess)
            deadline = time.monotonic() + 30
            while not js(f"location.pathname.endsWith('{p.name}') && document.readyState === 'complete' "
                         "&& typeof window.socksimShow === 'function'"):
                assert time.monotonic() < deadline, f"{p.name} did not load"
                time.sleep(0.05)

        load(page)
        n = js("+document.getElementById('step-slider').max") + 1
        assert n >= 5
        seen = []
        for i in range(n):
            js(f"(function () {{ var s = document.getElementById('step-slider'); s.value = {i};"
               f" s.dispatchEvent(new Event('input', {{bubbles: true}})); }})()")
            seen.append(js("""(function () {
                var ex = document.getElementById('explanation');
                var cite = ex.querySelector('.cite');
                var cur = document.querySelector('#timeline tr.current');
                return {explain: ex.innerText, cite: cite ? cite.innerText.trim() : '',
                        graph: document.getElementById('graph').innerHTML,
                        nodes: document.querySelectorAll('#graph svg g.node').length,
                        row: cur ? +cur.getAttribute('data-step') : -1,
                        label: document.getElementById('step-label').textContent,
                        hl: document.querySelectorAll('#states svg .hl').length};
            })()"""))
        for i, s in enumerate(seen):
            assert s["row"] == i, f"timeline row follows the slider at step {i}"
            assert s["explain"].startswith(f"Step {i}"), s["explain"][:80]
            assert "decided by" in s["explain"] and s["cite"], f"step {i} shows no citation"
            assert s["nodes"] > 0, f"step {i} shows no object graph"
            assert s["label"].startswith(f"step {i}:")
            if i:
                assert s["explain"] != seen[i - 1]["explain"], f"explanation did not change at step {i}"
        graphs = [s["graph"] for s in seen]
        assert len(set(graphs)) >= 3, "the object graph changes between steps"
        assert graphs[0] != graphs[-1]
        # the buttons and the keyboard move too
        js("window.socksimShow(0)")
        js("document.getElementById('next').click()")
        assert js("+document.getElementById('step-slider').value") == 1
        js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
        assert js("+document.getElementById('step-slider').value") == 2
        assert js("location.hash") == "#step=2"
        assert js("window.__errors") == []
        # the state diagram: the path of the step's connection, growing with the steps
        load(small)
        js("window.socksimShow(4)")
        early = js("document.querySelectorAll('#states svg g.edge.hl').length")
        js("""(function () { var s = document.getElementById('conn-select');
              for (var k = 0; k < s.options.length; k++)
                if (s.options[k].text.indexOf('accepted connection conn') === 0) s.value = s.options[k].value;
              s.dispatchEvent(new Event('change')); window.socksimShow(12); })()""")
        late = js("document.querySelectorAll('#states svg g.edge.hl').length")
        assert 0 < early < late, (early, late)
        assert js("document.querySelectorAll('#states svg g.node.cur').length") == 1
        assert js("document.getElementById('path-text').textContent").endswith("FIN_WAIT2 --rcv_fin--> TIME_WAIT")
        assert js("document.querySelector('#states svg g.node.cur').id") == "st-TIME_WAIT"
        assert js("window.__errors") == []
        # nothing but the files themselves were requested
        urls = [e["params"]["request"]["url"] for e in cdp.events if e.get("method") == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(("file:", "data:", "about:")) for u in urls), urls
    finally:
        cdp.close()
