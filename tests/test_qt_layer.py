"""The Qt layer: which system calls Qt calls make (per personality), tcp_poll(), real Qt's version
in a real trace, and the skip when PySide6 is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from sim.engine import SimBackend
from sim.kernel.poll import POLLIN, POLLOUT, tcp_poll
from sim.scenario.loader import load_text
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent

LISTEN = """name: t
processes:
  a: {}
steps:
  - qt: {proc: a, object: srv, call: QTcpServer.listen, addr: 127.0.0.1, port: 7000}
    expect: true
"""


def _calls(personality: str) -> list[str]:
    sc = load_text(LISTEN)
    trace = run(sc, SimBackend(seed=0), personality=personality)
    rec = trace.steps[0]
    assert rec.ret is True and rec.rule == "qt.tcpserver_listen"
    return [c["call"] + ("(SO_REUSEADDR)" if c["args"].get("opt") == "SO_REUSEADDR" else "")
            + (f"({c['args']['backlog']})" if c["call"] == "listen" else "") for c in rec.syscalls]


def test_listen_on_linux_sets_so_reuseaddr_before_bind_and_passes_backlog_50():
    # qtcpserver.cpp configureCreatedSocket() (Q_OS_UNIX) and the default listenBacklogSize;
    # the same sequence as strace of Qt 6.12 shows (docs/qt.md)
    assert _calls("linux") == ["socket", "setsockopt(SO_REUSEADDR)", "bind", "listen(50)"]


def test_listen_on_windows_sets_no_reuse_option_and_starts_winsock():
    # configureCreatedSocket() sets nothing outside Unix; QWindowsSockInit calls WSAStartup
    assert _calls("windows") == ["WSAStartup", "socket", "set_nonblocking", "bind", "listen(50)"]


def test_tcp_poll_listener_is_readable_only_with_a_queued_connection():
    sc = load_text("""name: t
processes:
  a: {}
steps:
  - {proc: a, call: socket, as: l}
  - {proc: a, call: bind, sock: l, addr: 127.0.0.1, port: 7001}
  - {proc: a, call: listen, sock: l, backlog: 5}
  - {proc: a, call: socket, as: c}
""")
    b = SimBackend(seed=0)
    run(sc, b)
    k = b.kernel
    lst = k.procs["a"].files.fds[3].sock
    assert tcp_poll(lst) & POLLIN == 0
    b.call(99, "a", "connect", {"sock": 4, "addr": "127.0.0.1", "port": 7001})
    assert tcp_poll(lst) & POLLIN
    assert tcp_poll(k.procs["a"].files.fds[4].sock) & POLLOUT


def test_without_pyside6_qt_scenarios_cannot_run_on_real_qt(monkeypatch):
    from sim.real import qt_control

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    ok, why = qt_control.available()
    assert not ok and "socksim[qt]" in why


def test_a_real_qt_trace_records_the_qt_version():
    from sim.real.backend import RealBackend
    from sim.real.qt_control import available

    ok, why = RealBackend.available()
    qt_ok, qt_why = available()
    if not (ok and qt_ok):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but real Qt cannot run here: {why}; {qt_why}")
        pytest.skip(f"{why}; {qt_why}")
    from PySide6 import QtCore

    trace = run(load_text(LISTEN), RealBackend())
    assert trace.steps[0].ret is True
    assert trace.summary["qt"]["qVersion"] == QtCore.qVersion()
