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
from sim.report.page import unpack_strings, write_page
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
    data = json.loads(m.group(1))
    for key in ("steps", "wire", "tracks"):  # each repeated string is held once (the page's script unpacks them too)
        data[key] = unpack_strings(data[key], data["S"])
    return data


def test_page_is_self_contained(tmp_path):
    html, out = _page(tmp_path)
    assert out.read_text(encoding="utf-8") == html
    # nothing is loaded from anywhere: no external scripts, styles, images, fonts or links
    assert not re.search(r"<(script|img|iframe|link)[^>]+(src|href)=", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    assert "<svg" in html and html.count("</html>") == 1


def _cite(data: dict, e: dict) -> str:
    return e["c"] if "c" in e else data["rules"].get(e.get("r"), {}).get("c", "")


def test_every_step_has_an_explanation_with_a_citation(tmp_path):
    html, _ = _page(tmp_path)
    data = _data(html)
    sc = load_text(SMALL, "page-small.yaml")
    assert len(data["steps"]) == len(sc.steps)
    for i, s in enumerate(data["steps"]):
        assert s["e"]["i"] == i
        assert _cite(data, s["e"]).strip(), f"step {i} has no citation"
    # the bind over the TIME_WAIT entry: its facts, and the re-run what-ifs
    last = data["steps"][-1]["e"]
    assert "EADDRINUSE" in last["o"] and any("TIME_WAIT entry" in f for f in last["f"])
    assert any("whose process server has exited" in f for f in last["f"] + last.get("s", []))
    assert any(changed and "SO_REUSEADDR" in label for label, _, changed in last["wi"])
    # the note of a step and the description of the scenario are on the page
    assert data["steps"][6]["e"]["n"] == "the server closes first"
    assert "<code>code</code>" in html


def _replay(data: dict) -> list[dict]:
    """The page's deltas applied in order, as the page's script does: the graph after each step."""
    nodes: dict[str, dict] = {}
    edges: dict[tuple, str] = {}

    def apply(d: dict) -> None:
        for n in d.get("nr", []):
            nodes.pop(n)
            for e in [e for e in edges if n in e]:
                del edges[e]
        for a, b in d.get("er", []):
            del edges[(a, b)]
        for n, upd in d.get("n", {}).items():
            node = nodes.setdefault(n, {})
            for k, v in upd.items():
                if v is None:
                    node.pop(k, None)
                else:
                    node[k] = v
        for a, b, rel in d.get("ea", []):
            edges[(a, b)] = rel

    apply(data["base"])
    out = []
    for s in data["steps"]:
        apply(s["d"])
        out.append({"nodes": {n: dict(d) for n, d in nodes.items()}, "edges": dict(edges)})
    return out


def test_the_page_holds_the_trace_once_and_replays_every_step(tmp_path):
    """Replaying the page's deltas gives, at every step, the object graph the model recorded."""
    from sim.graph import record
    from sim.report.page import SHOWN

    html, _ = _page(tmp_path)
    data = _data(html)
    rec = record(load_text(SMALL, "page-small.yaml"), seed=0)
    for i, got in enumerate(_replay(data)):
        g = rec.after(i)
        assert set(got["nodes"]) == set(g.nodes), f"step {i}"
        assert got["edges"] == {(a, b): d.get("rel", "") for a, b, d in g.edges(data=True)}, f"step {i}"
        for n, d in g.nodes(data=True):
            want = {k: v for k, v in d.items() if (k == "kind" or k in SHOWN[d["kind"]])
                    and v is not None and v is not False}
            assert got["nodes"][n] == want, f"step {i} node {n}"
    assert any(d["kind"] == "timewait" for d in _replay(data)[-1]["nodes"].values())
    # the state diagram knows the path of the accepted connection, ending in TIME_WAIT
    paths = {v["label"]: v["path"] for v in data["tracks"].values()}
    acc = next(p for label, p in paths.items() if label.startswith("accepted connection conn"))
    assert [p[1].split("|")[0] for p in acc][:2] == ["LISTEN", "SYN_RECV"]
    assert acc[-1][1].endswith("|TIME_WAIT")
    assert all(data["moves"][p[1]][0] is None or data["moves"][p[1]][0].startswith("tr-") for p in acc)


def test_page_size_grows_with_the_steps_not_their_square(tmp_path):
    from sim.bench import steps_scenario
    from sim.report.page import render_page

    sizes = {n: len(render_page(load_text(steps_scenario(n), "x.yaml")).encode()) for n in (2, 6, 10)}
    first, second = (sizes[6] - sizes[2]) / (4 * 5), (sizes[10] - sizes[6]) / (4 * 5)
    # a kernel snapshot per step was 20-60 kB and grew with the run; now a step costs its deltas, its
    # explanation and its segments on the wire (the ladder), the same for every connection
    assert second < 1.15 * first, (first, second)
    assert second < 3000, second


def test_page_from_the_command_line(tmp_path):
    out = tmp_path / "lesson.html"
    target = LESSON1[0] if LESSON1 else ROOT / "scenarios" / "restart-time-wait-no-reuseaddr.yaml"
    p = subprocess.run(["socksim", "run", str(target), "--html", str(out), "-q"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    data = _data(out.read_text(encoding="utf-8"))
    for i, s in enumerate(data["steps"]):
        assert _cite(data, s["e"]).strip(), f"step {i} of {target.name} has no citation"


def test_python_svg_fallback_page(tmp_path, monkeypatch):
    """Without Graphviz the state diagram comes from the pure-Python layout; the page is just as complete."""
    monkeypatch.setenv("SOCKSIM_NO_DOT", "1")
    html, _ = _page(tmp_path)
    assert 'data-engine="python"' in html
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
        assert js("window.__errors") == []
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
        # every step's view rebuilt from the deltas: the tables and the drawing
        last = js("+document.getElementById('step-slider').max")
        js(f"window.socksimShow({last})")
        graph = js("document.getElementById('graph').innerHTML")
        assert "TIME_WAIT entry" in graph and "8080" in graph and 'class="node k-timewait' in graph
        tables = [js(f"window.socksimView({i}).tables") for i in range(last + 1)]
        assert "no port is in use" in tables[0]
        assert "TIME_WAIT" in tables[8] and "exited" in tables[8]
        assert "EADDRINUSE" in js(f"window.socksimView({last}).explain")
        assert "What would have changed the outcome" in js(f"window.socksimView({last}).explain")
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


def test_wire_ladder_in_headless_chromium_at_two_sizes(tmp_path):
    """The ladder of segments beside the timeline: one arrow per segment of the trace, each
    linked to its step (a click moves the page there; the current step's segments are marked,
    later ones dimmed), the TCP states on the lifelines, labels that do not overlap and stay
    legible, at a desktop and at a narrow window size."""
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is not installed (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    sc = load_text(SMALL, "page-small.yaml")
    trace = run(sc, SimBackend(seed=0), seed=0)
    page = tmp_path / "wire.html"
    write_page(sc, trace, str(page), seed=0)
    wire = [(w.rec, w.flags) for w in trace.wire]
    assert wire[:3] == [(4, "SYN"), (4, "SYN|ACK"), (4, "ACK")]  # the handshake, under connect
    cdp = DevTools(binary, tmp_path / "profile")
    try:
        tid = next(t["targetId"] for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        sess = cdp.send("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        cdp.send("Page.enable", session=sess)

        def js(expr: str):
            res = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=sess)
            if "exceptionDetails" in res:
                raise AssertionError(f"page script failed: {res['exceptionDetails']}")
            return res["result"].get("value")

        for width, height in ((1400, 900), (800, 1000)):
            cdp.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                     "deviceScaleFactor": 1, "mobile": False}, session=sess)
            cdp.send("Page.navigate", {"url": page.resolve().as_uri()}, session=sess)
            deadline = time.monotonic() + 30
            while not js("document.readyState === 'complete' && typeof window.socksimShow === 'function'"):
                assert time.monotonic() < deadline, "the page did not load"
                time.sleep(0.05)
            segs = js("Array.prototype.map.call(document.querySelectorAll('#ladder g.seg'),"
                      " function (g) { return [+g.getAttribute('data-step'), g.querySelector('text.lbl').textContent]; })")
            assert [(s, t.split(" ")[0]) for s, t in segs] == wire
            # a click on a segment goes to its step; that step's segments are marked, later ones dimmed
            fin = next(i for i, (_, f) in enumerate(wire) if "FIN" in f)
            js(f"document.querySelectorAll('#ladder g.seg')[{fin}].dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
            step = wire[fin][0]
            assert js("+document.getElementById('step-slider').value") == step
            marks = js("Array.prototype.map.call(document.querySelectorAll('#ladder g.seg'), function (g) {"
                       " return (g.classList.contains('cur') ? 'c' : '') + (g.classList.contains('future') ? 'f' : ''); })")
            assert marks == ["c" if s == step else ("f" if s > step else "") for s, _ in wire]
            states = js("Array.prototype.map.call(document.querySelectorAll('#ladder g.state text'),"
                        " function (t) { return t.textContent; })")
            assert {"ESTABLISHED", "FIN_WAIT2", "CLOSE_WAIT", "TIME_WAIT"} <= set(states), states
            boxes = js("""Array.prototype.map.call(document.querySelectorAll('#ladder text'), function (t) {
                var r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom,
                parseFloat(getComputedStyle(t).fontSize)]; })""")
            assert min(b[4] for b in boxes) >= 9, "ladder text is legible at the page's default size"
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    overlap = min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1
                    assert not overlap, ("ladder labels overlap", a, b)
            # the drawing scrolls inside its panel instead of widening the page
            assert js("document.documentElement.scrollWidth") <= width + 1
            assert js("window.__errors === undefined || window.__errors.length === 0")
    finally:
        cdp.close()


def test_packed_strings_round_trip():
    """Each repeated string is held once; a string that begins with the reference mark survives."""
    from sim.report.page import pack_strings

    data = {"steps": [{"w": "accept(srv) as a1", "s": ["@home", "listener srv of server (fd 3)"]},
                      {"w": "accept(srv) as a2", "s": ["@home", "listener srv of server (fd 3)"],
                       "listener srv of server (fd 3)": [1, 2.5, None, True, "@@"]}]}
    packed, table = pack_strings(data)
    assert unpack_strings(packed, table) == data
    assert table.count("listener srv of server (fd 3)") == 1
    assert json.dumps(packed).count("listener srv") == 0


def test_a_load_step_is_summarised_on_the_page(tmp_path):
    """A load step's state changes are one line per transition-table row with its count, however
    many connections the step made; the counts add up to the connections' recorded transitions."""
    from sim.graph import record

    sc = load_file(ROOT / "scenarios" / "load-ephemeral-exhaustion.yaml")
    out = tmp_path / "load.html"
    data = _data(write_page(sc, None, str(out), seed=0))
    step = next(i for i, st in enumerate(sc.steps) if getattr(st, "load", None) is not None)
    rows = data["steps"][step]["e"]["du"]
    rec = record(sc, seed=0, graphs=False)
    moves = [t for t in rec.transitions if t.step == step]
    assert len(moves) > 40 and len(rows) <= 40
    counts = {}
    for t in moves:
        counts[f"{t.src} --{t.event}--> {t.dst}"] = counts.get(f"{t.src} --{t.event}--> {t.dst}", 0) + 1
    shown = {r.split(" x ", 1)[1].split(" (t=")[0]: int(r.split(" x ", 1)[0]) for r in rows if " x " in r}
    assert shown == counts
