"""The SimPy engine, the runner and the socksim command."""

import json
import subprocess
import sys
from pathlib import Path

import simpy

from sim.engine import SimBackend
from sim.engine.host import FifoTimers
from sim.scenario.loader import load_text
from sim.scenario.runner import run

ACCEPT_BLOCKS = """
name: accept-blocks
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: listen, sock: srv, backlog: 5}
  - {proc: server, call: accept, sock: srv, as: conn, expect: 4}
  - {proc: server, call: socket, expect: PROCESS_BUSY}
  - {proc: client, call: socket, as: c}
  - {proc: client, call: connect, sock: c, port: 8080}
  - {proc: server, call: send, sock: conn, bytes: 10, expect: 10}
"""


def test_fifo_timers_fire_in_order_with_one_pending_timeout_per_duration():
    env = simpy.Environment()
    fired = []
    t = FifoTimers(env, lambda item: fired.append((env.now, item)))
    t.add(60.0, "a")
    env.run(until=1.0)
    t.add(60.0, "b")
    t.add(2.0, "c")
    env.run(until=100)
    assert fired == [(3.0, "c"), (60.0, "a"), (61.0, "b")]
    assert t.pending == 0


def test_blocked_accept_completes_after_connect_and_binds_its_name():
    sc = load_text(ACCEPT_BLOCKS.replace("expect: PROCESS_BUSY", "note: busy"), "t.yaml")
    tr = run(sc, SimBackend())
    acc = tr.steps[3]
    assert acc.blocked and acc.completed_after == 6 and acc.ret == 4
    assert tr.steps[4].err == "PROCESS_BUSY"
    assert tr.steps[7].ret == 10  # 'conn' was bound when accept returned


def test_same_seed_same_trace():
    text = """
name: det
host: {sysctls: {ip_local_port_range: [32768, 60999]}}
processes: {a: {}}
steps:
  - {proc: a, call: socket, as: s1}
  - {proc: a, call: bind, sock: s1, port: 0}
  - {proc: a, call: getsockname, sock: s1}
  - {proc: a, call: socket, as: s2}
  - {proc: a, call: listen, sock: s2}
  - {proc: a, call: getsockname, sock: s2}
"""
    sc = load_text(text, "det.yaml")
    a = run(sc, SimBackend(seed=7), seed=7).to_dict()
    b = run(sc, SimBackend(seed=7), seed=7).to_dict()
    c = run(sc, SimBackend(seed=8), seed=8).to_dict()
    for t in (a, b, c):
        t["meta"].pop("wall_seconds")
    assert a == b
    assert [s["ret"] for s in a["steps"]] != [s["ret"] for s in c["steps"]]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          cwd=cwd or Path(__file__).resolve().parent.parent, timeout=120)


def test_cli_run_json_and_exit_codes(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(ACCEPT_BLOCKS.replace("expect: PROCESS_BUSY", "note: busy"))
    out = tmp_path / "trace.json"
    r = _cli("run", str(f), "--json", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["backend"] == "sim" and len(data["steps"]) == 8
    assert "accept" in r.stdout and "sys.accept" in r.stdout
    f.write_text(ACCEPT_BLOCKS.replace("expect: 10", "expect: 11").replace("expect: PROCESS_BUSY", "note: busy"))
    r = _cli("run", str(f))
    assert r.returncode == 1 and "expectation" in r.stderr


def test_cli_version_help_list():
    assert _cli("--version").stdout.startswith("socksim ")
    for cmd in ("run", "crosscheck", "list", "rules"):
        r = _cli(cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout
    r = _cli("rules")
    assert "bind.explicit_port" in r.stdout and "inet_csk_get_port" in r.stdout


def test_cli_json_to_a_directory_is_bad_input(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(ACCEPT_BLOCKS.replace("expect: PROCESS_BUSY", "note: busy"))
    r = _cli("run", str(f), "--json", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
