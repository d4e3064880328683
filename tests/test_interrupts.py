"""Ctrl-C, SIGTERM and SIGHUP stop a command within a second or two: one line, exit 128+signal.

Each test starts socksim as a child process, waits (bounded) until it is busy, signals it and
waits (bounded) for it to end. A scheduler that accepts and never answers, or answers with other
bytes, is an error within --connect-timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

LONG = """
name: long-load
description: a load step that takes the simulator a long time
host:
  sysctls: {ip_local_port_range: [20000, 60999], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 4096}
  - load: {proc: client, port: 9999, rate: 2000, duration: 300, accept_proc: server, listener: srv}
"""

SHORT = """
name: short-load
host:
  sysctls: {ip_local_port_range: [40000, 40099], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9999, rate: 50, duration: 0.2, accept_proc: server, listener: srv}
"""


def _start(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "sim.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _stop(p: subprocess.Popen, sig: int, busy_after: float = 2.5, limit: float = 3.0) -> tuple[int, str, float]:
    time.sleep(busy_after)
    assert p.poll() is None, p.communicate()
    t0 = time.monotonic()
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=limit + 10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"still running {limit + 10} s after {signal.Signals(sig).name}")
    return p.returncode, err, time.monotonic() - t0


@pytest.fixture
def long_file(tmp_path: Path) -> Path:
    f = tmp_path / "long.yaml"
    f.write_text(LONG)
    return f


def _started(p: subprocess.Popen, limit: float = 60) -> str:
    """Wait (bounded) for the projection line that `run` prints before the run starts."""
    deadline = time.monotonic() + limit
    line = ""
    while time.monotonic() < deadline and p.poll() is None and "note: projected" not in line:
        if select.select([p.stderr], [], [], 0.5)[0]:
            line = p.stderr.readline()
    assert "note: projected" in line, line
    return line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_run_stops_with_one_line(long_file, sig):
    p = _start("run", str(long_file))
    _started(p)
    rc, err, took = _stop(p, sig, busy_after=1.0)
    assert rc == 128 + sig, err
    assert err.count("\n") == 1 and "Traceback" not in err and signal.Signals(sig).name in err, err
    assert took < 3.0, took


def test_explain_stops_with_one_line(long_file):
    rc, err, took = _stop(_start("explain", str(long_file)), signal.SIGINT)
    assert rc == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert took < 3.0, took


def test_a_sweep_stops_promptly_and_keeps_finished_points(tmp_path, long_file):
    out, lines = tmp_path / "run.json", tmp_path / "points.jsonl"
    # the first points are quick, the last one takes minutes: interrupted while it runs
    p = _start("sweep", str(long_file), "--param", "duration=0.05,0.1,300", "--jobs", "2",
               "--no-progress", "-q", "-o", str(out), "--jsonl", str(lines))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:  # a finished point is in the JSON lines
        tmp = [f for f in tmp_path.iterdir() if f.name.startswith(".points.jsonl.")]
        if tmp and tmp[0].read_text().count("\n") >= 1:
            break
        time.sleep(0.1)
    rc, err, took = _stop(p, signal.SIGINT, busy_after=0.5)
    assert rc == 130, err
    assert "Traceback" not in err and err.count("\n") == 1 and "points had finished" in err, err
    assert took < 3.0, took
    data = json.loads(out.read_text())
    assert data["interrupted"]["signal"] == "SIGINT"
    assert 1 <= len(data["points"]) < 3
    assert len(lines.read_text().splitlines()) == len(data["points"])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def _server(behaviour: str) -> tuple[socket.socket, threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            held.append(c)
            if behaviour == "garbage":
                try:
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
                    c.close()
                except OSError:
                    pass
        for c in held:
            c.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, done


@pytest.mark.parametrize("behaviour", ["silent", "garbage"])
def test_a_scheduler_that_does_not_speak_dask(capsys, tmp_path, behaviour):
    pytest.importorskip("distributed")
    from sim.cli import main

    short = tmp_path / "short.yaml"
    short.write_text(SHORT)
    srv, done = _server(behaviour)
    port = srv.getsockname()[1]
    from sim.sweep import SweepError
    from sim.sweep.command import _dask_executor

    try:
        rc = main(["sweep", str(short), "--param", "rate=10,20", "--scheduler", f"tcp://127.0.0.1:{port}",
                   "--connect-timeout", "1.5"])
        err = capsys.readouterr().err
        t0 = time.monotonic()
        with pytest.raises(SweepError):
            _dask_executor(f"tcp://127.0.0.1:{port}", 1.5)
        took = time.monotonic() - t0
    finally:
        done.set()
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert took < 1.5 + 2.0, took  # the connection handshake is bounded by the timeout
