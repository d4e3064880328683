"""`socksim report`: HTML and Markdown from sweeps and traces, never overwriting, and the page
opened in headless Chromium (no page error, every image decoded)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sim.cli import main

CHROMIUM = "/usr/bin/chromium"

TINY = """
name: tiny-ports
description: |
  A hundred ports at a few hundred connections per second, the client closing first.
  Sources:
  - __inet_hash_connect() in net/ipv4/inet_hashtables.c
host:
  sysctls: {ip_local_port_range: [40000, 40099], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9999, rate: 200, duration: 1, accept_proc: server, listener: srv}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A sweep run file, its JSON lines, and a single run's trace, made once."""
    d = tmp_path_factory.mktemp("runs")
    sc = d / "tiny.yaml"
    sc.write_text(TINY)
    sweep, lines, trace = d / "sweep.json", d / "sweep.jsonl", d / "trace.json"
    assert main(["sweep", str(sc), "--param", "rate=100..400:100", "--param", "tcp_tw_reuse=0,2", "--jobs", "1",
                 "--no-progress", "-q", "-o", str(sweep), "--jsonl", str(lines)]) == 0
    assert main(["run", str(sc), "--json", str(trace), "-q"]) == 0
    return {"sweep": sweep, "jsonl": lines, "trace": trace, "scenario": sc}


@pytest.fixture(scope="module")
def reports(runs, tmp_path_factory) -> dict[str, Path]:
    """The sweep's and the trace's reports, written once."""
    d = tmp_path_factory.mktemp("reports")
    for what in ("sweep", "trace"):
        assert main(["report", str(runs[what]), "-o", str(d / what), "-q"]) == 0
    return {"sweep": d / "sweep", "trace": d / "trace"}


def _report(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["report", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _md_images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def _check_folder(out: Path) -> tuple[str, str]:
    page = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    imgs = _md_images(md)
    assert imgs, "the Markdown report links no figure"
    for rel in imgs:
        data = (out / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert sorted(p.name for p in (out / "img").iterdir()) == sorted(Path(r).name for r in imgs)
    # self-contained: every image inline, nothing fetched from anywhere
    assert page.count('<img src="data:image/png;base64,') == len(imgs)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    assert "http://" not in page and "https://" not in page
    return page, md


def test_sweep_report(reports):
    page, md = _check_folder(reports["sweep"])
    names = {Path(r).stem for r in _md_images(md)}
    # each metric against the parameter, and the series over time
    assert {"first_port_error_at", "time_wait_peak", "tcp_mem_peak_bytes", "accepted", "refused", "reset",
            "ok_fraction", "time_wait_over_time", "free_ports_over_time", "states_over_time"} <= names
    assert "Metrics against rate" in md
    assert "closed form" in md and "free ports / (rate x TIME\\_WAIT length)" in md
    assert "tcp\\_tw\\_reuse=0: ports run out from rate=200" in md  # 100 ports last 1 s at 100/s
    assert "tcp\\_tw\\_reuse=2" in md
    assert "socksim sweep" in md and "--param rate=100..400:100" in md  # how to reproduce it
    assert "\\_\\_inet\\_hash\\_connect()" in md  # Markdown's specials escaped
    assert "<li>__inet_hash_connect() in net/ipv4/inet_hashtables.c</li>" in page


def test_report_is_reproducible(capsys, runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _report(capsys, str(runs["trace"]), "-o", str(a), "-q")[0] == 0
    assert _report(capsys, str(runs["trace"]), "-o", str(b), "-q")[0] == 0
    assert (a / "index.html").read_bytes() == (b / "index.html").read_bytes()
    assert (a / "report.md").read_bytes() == (b / "report.md").read_bytes()


def test_trace_and_jsonl_reports(capsys, runs, reports, tmp_path):
    page, md = _check_folder(reports["trace"])
    names = {Path(r).stem for r in _md_images(md)}
    assert {"ports_over_time", "states_over_time"} <= names
    assert "first port error expected after 0.5 s, simulated 0.5 s" in md
    assert "## Timeline" in md and "EADDRNOTAVAIL" in md
    out2 = tmp_path / "reports" / "lines"  # the folder and its parents are created
    rc, stdout, err = _report(capsys, str(runs["jsonl"]), "-o", str(out2))
    assert rc == 0, err
    assert stdout.splitlines() == [str(out2 / "index.html"), str(out2 / "report.md")]
    _check_folder(out2)


def test_never_overwrites_without_force(capsys, runs, tmp_path):
    out = tmp_path / "r"
    assert _report(capsys, str(runs["trace"]), "-o", str(out), "-q")[0] == 0
    before = (out / "index.html").read_bytes()
    (out / "notes.txt").write_text("mine")
    (out / "img" / "stale.png").write_bytes(b"old figure")
    rc, stdout, err = _report(capsys, str(runs["trace"]), "-o", str(out), "--title", "Second")
    assert rc == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err
    assert (out / "index.html").read_bytes() == before
    rc, _, err = _report(capsys, str(runs["trace"]), "-o", str(out), "--title", "Second", "--force", "-q")
    assert rc == 0, err
    assert "<title>Second</title>" in (out / "index.html").read_text()
    assert not (out / "img" / "stale.png").exists()  # the old report's figures are gone
    assert (out / "notes.txt").read_text() == "mine"  # what is not the report's stays
    assert not [p for p in out.iterdir() if p.name.startswith(".report-")]


def test_bad_input(capsys, runs, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ([str(tmp_path / "missing.json"), "-o", str(tmp_path / "o1")], "no such file"),
        ([str(bad_json), "-o", str(tmp_path / "o2")], "not JSON"),
        ([str(other), "-o", str(tmp_path / "o3")], "not a socksim run file"),
        ([str(tmp_path), "-o", str(tmp_path / "o4")], "is a directory"),
        ([str(runs["trace"]), "-o", str(a_file)], "not a directory"),
    ]
    for argv, words in cases:
        rc, out, err = _report(capsys, *argv)
        assert rc == 2, argv
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (argv, err)
        assert "Traceback" not in err


# ----------------------------------------------------------------------------- headless Chromium


def _chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium)")


def open_in_chromium(*pages: Path, timeout: float = 60.0, probe: str | None = None,
                     probed: dict | None = None) -> list[tuple[list[dict], list[str]]]:
    """Load each page in one headless Chromium over the DevTools protocol (--remote-debugging-pipe).

    For each page: every <img> as {alt, complete, width}, and every page error: uncaught
    exceptions, console errors, log errors (a blocked or missing resource) and failed loads.
    With ``probe`` (a JavaScript expression whose value is a promise of JSON text), its value
    for each page goes to ``probed[page]``.
    """
    chromium = _chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="chromium-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def as_fds_3_and_4() -> None:  # the protocol pipe is fds 3 (in) and 4 (out) of the browser
        a = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-pipe", "about:blank"],
        pass_fds=(3, 4), preexec_fn=as_fds_3_and_4, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(to_browser_r)
    os.close(from_browser_w)
    buf = b""
    events: list[dict] = []
    ids = iter(range(1, 1 << 30))

    def read_until(pred, deadline: float) -> dict:
        nonlocal buf
        while True:
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                events.append(msg)
                if pred(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([from_browser_r], [], [], left)
            if ready:
                chunk = os.read(from_browser_r, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe: " + proc.stderr.read().decode(errors="replace")[-800:])
                buf += chunk

    def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
        i = next(ids)
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(to_browser_w, json.dumps(msg).encode() + b"\0")
        reply = read_until(lambda m: m.get("id") == i, time.monotonic() + timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def one(page: Path) -> tuple[list[dict], list[str]]:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            call(f"{domain}.enable", session=sid)
        call("Page.navigate", {"url": page.resolve().as_uri()}, session=sid)
        read_until(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == sid,
                   time.monotonic() + timeout)
        js = ("JSON.stringify(Array.from(document.images).map(i => "
              "({alt: i.alt, complete: i.complete, width: i.naturalWidth})))")
        res = call("Runtime.evaluate", {"expression": js, "returnByValue": True}, session=sid)
        images = json.loads(res["result"]["value"])
        if probe is not None and probed is not None:
            res = call("Runtime.evaluate", {"expression": probe, "returnByValue": True, "awaitPromise": True},
                       session=sid)
            probed[page] = json.loads(res["result"]["value"])
        errors = []
        for m in events:
            if m.get("sessionId") != sid:
                continue
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append("exception: " + str(d.get("text")) + " "
                              + str((d.get("exception") or {}).get("description", "")))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + json.dumps(p.get("args"))[:200])
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append("log: " + p["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                errors.append("load failed: " + p.get("errorText", ""))
        call("Target.closeTarget", {"targetId": target})
        return images, errors

    try:
        return [one(p) for p in pages]
    finally:
        try:
            call("Browser.close")
        except Exception:  # noqa: BLE001 -- the browser may be gone already
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_browser_w)
        os.close(from_browser_r)
        shutil.rmtree(profile, ignore_errors=True)


def test_chromium_finds_a_broken_page(tmp_path):
    """The check itself: a broken image, an outside resource and a script error are all seen."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; script-src 'unsafe-inline'\">"
        "</head><body><img alt='bad' src='data:image/png;base64,AAAA'>"
        "<img alt='outside' src='https://example.invalid/x.png'>"
        "<script>undefinedFunction()</script></body></html>")
    [(images, errors)] = open_in_chromium(page)
    assert [i["alt"] for i in images] == ["bad", "outside"]
    assert all(i["width"] == 0 for i in images)
    assert any("undefinedFunction" in e for e in errors)
    assert any("Content Security Policy" in e or "example.invalid" in e for e in errors), errors


def test_reports_open_in_chromium_without_errors(reports):
    _chromium_or_skip()
    pages = [reports["sweep"] / "index.html", reports["trace"] / "index.html"]
    for page, (images, errors) in zip(pages, open_in_chromium(*pages)):
        md = (page.parent / "report.md").read_text()
        assert errors == [], page
        assert len(images) == len(_md_images(md)) >= 2, page
        broken = [i["alt"] for i in images if not i["complete"] or i["width"] < 100]
        assert broken == [], page
