"""Explanations: the deciding rule and its source, the facts, and what-if variants re-run on the model."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from sim.engine import SimBackend
from sim.explain import Explainer, print_explanations, render_text
from sim.scenario.loader import load_file, load_text
from sim.scenario.model import Scenario
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "scenarios" / "lessons").glob("*.yaml"))

RESTART = """
name: restart
processes: {server: {}, client: {}, server2: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: listen, sock: srv, backlog: 5}
  - {proc: client, call: socket, as: c}
  - {proc: client, call: connect, sock: c, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: accept, sock: srv, as: conn}
  - {proc: server, call: exit}
  - {proc: client, call: close, sock: c}
  - {proc: server2, call: socket, as: srv}
  - {proc: server2, call: bind, sock: srv, addr: 127.0.0.1, port: 8080, expect: EADDRINUSE}
"""


@pytest.fixture(scope="module")
def restart():
    return Explainer(load_text(RESTART, "restart.yaml"))


def test_the_deciding_rule_and_its_source(restart):
    e = restart.explain(9)
    assert e.outcome.startswith("-1 EADDRINUSE")
    assert e.rule == "bind.explicit_port" and "inet_csk_get_port()" in e.cite
    assert e.doc and e.decided_by == "rule"
    assert [r for r, _ in e.trail][:2] == ["sys.bind", "fd.lookup"] and all(c for _, c in e.trail)


def test_the_facts_name_the_time_wait_entry_its_flags_its_expiry_and_its_process(restart):
    e = restart.explain(9)
    held = [f for f in e.state if "port 8080 is held by a TIME_WAIT entry" in f]
    assert held, e.state
    f = held[0]
    assert "without SO_REUSEADDR" in f
    # the entry expires 60 s after it was made, rounded up by the timer wheel -- the model's value
    g = restart.r.before(9)
    tw = next(d for _, d in g.nodes(data=True) if d.get("kind") == "timewait")
    assert f"expiring at t={tw['expires']:g} s" in f and tw["expires"] >= tw["entry"] + 60
    assert "whose process server has exited" in f
    assert "accepted connection conn of server" in f


def test_what_ifs_are_re_runs_of_the_model(restart):
    e = restart.explain(9)
    by = {w.label: w for w in e.whatifs}
    both = next(w for label, w in by.items() if label.startswith("with SO_REUSEADDR on the old listener srv of server")
                and "and on the new socket srv of server2" in label)
    assert both.changed and both.outcome == "ok"
    new_only = next(w for label, w in by.items() if label.startswith("with SO_REUSEADDR on the new socket srv of server2"))
    assert not new_only.changed and new_only.outcome.startswith("-1 EADDRINUSE")
    wait = next(w for label, w in by.items() if label.startswith("if this call came"))
    assert wait.changed and wait.outcome == "ok"
    assert restart.runs >= 3
    # the same variant, built by hand and run on the plain runner, gives the same outcome
    data = load_text(RESTART, "restart.yaml").model_dump(by_alias=True)
    data["steps"].insert(9, {"proc": "server2", "call": "setsockopt", "sock": "srv", "opt": "SO_REUSEADDR"})
    data["steps"].insert(1, {"proc": "server", "call": "setsockopt", "sock": "srv", "opt": "SO_REUSEADDR"})
    tr = run(Scenario.model_validate(data), SimBackend())
    assert tr.steps[-1].err is None


def test_what_ifs_follow_the_model_not_a_script(restart, monkeypatch):
    """Change the conflict rule and the what-if answers change with it."""
    from sim.kernel import ports

    orig = ports.bind_conflict

    def lenient(sk, sk2, relax, reuseport_ok):  # TIME_WAIT entries never conflict in this world
        return False if getattr(sk2, "is_tw", False) and sk.reuse else orig(sk, sk2, relax, reuseport_ok)

    monkeypatch.setattr(ports, "bind_conflict", lenient)
    e = Explainer(load_text(RESTART, "restart.yaml")).explain(9)
    new_only = next(w for w in e.whatifs if w.label.startswith("with SO_REUSEADDR on the new socket srv"))
    assert new_only.changed and new_only.outcome == "ok"


def test_render_text_has_every_section(restart):
    text = render_text(restart.explain(9))
    for part in ("decided by  bind.explicit_port", "source", "what the rule looked at",
                 "the kernel's tables just before the step", "what would have changed the outcome",
                 "what would not have changed it"):
        assert part in text, part


def test_fork_close_and_the_other_reference():
    e = Explainer(load_file(ROOT / "scenarios" / "fd-fork-shares-socket.yaml"))
    ex = e.explain(7)  # the child's close of the shared socket
    assert any("2 references" in f for f in ex.state)
    assert ex.effect == "connection ESTABLISHED"
    w = next(w for w in ex.whatifs if "had been closed first" in w.label)
    assert w.changed and "FIN_WAIT2" in w.outcome


def test_every_step_of_every_lesson_has_a_citation():
    assert 8 <= len(LESSONS) <= 12
    for path in LESSONS:
        ex = Explainer(load_file(path), whatif=False)
        for i in range(len(ex.trace.steps)):
            e = ex.explain(i)
            assert e.cite, f"{path.name} step {i} has no source"
            assert e.rule or e.decided_by in ("observation", "time", "timer", "runner", "kernel", "load"), (path, i)


def test_socket_arguments_what_ifs():
    lesson = next(p for p in LESSONS if p.name.startswith("01-"))
    e = Explainer(load_file(lesson)).explain(0)
    out = {w.label: w.outcome for w in e.whatifs}
    assert out["socket(AF_INET, SOCK_STREAM, IPPROTO_UDP) instead"].startswith("-1 EPROTONOSUPPORT")
    assert out["socket(AF_INET, SOCK_DGRAM, 0) instead"] == "3 (an IPv4 UDP socket)"
    assert out["socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) instead"] == "3 (an IPv4 TCP socket)"


def test_an_fd_number_in_another_process():
    lesson = next(p for p in LESSONS if p.name.startswith("05-"))
    ex = Explainer(load_file(lesson))
    i = next(i for i, s in enumerate(ex.trace.steps) if s.err == "EBADF")
    e = ex.explain(i)
    assert any("is open in process alpha" in f for f in e.state)
    assert any(w.changed and "in process alpha" in w.label for w in e.whatifs)


def test_print_explanations_hook():
    out = StringIO()
    print_explanations(load_text(RESTART, "restart.yaml"), seed=0, steps=[9], out=out)
    assert "decided by  bind.explicit_port" in out.getvalue()


def test_command_line(tmp_path):
    lesson = ROOT / "scenarios" / "restart-time-wait-no-reuseaddr.yaml"
    js, svg, dot = tmp_path / "e.json", tmp_path / "g.svg", tmp_path / "s.dot"
    p = subprocess.run([sys.executable, "-m", "sim.cli", "explain", str(lesson), "--step", "14", "--json", str(js),
                        "--graph", str(svg), "--states", str(dot), "--conn", "server:conn"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "decided by  bind.explicit_port" in p.stdout
    data = json.loads(js.read_text())
    assert data[0]["index"] == 14 and data[0]["rule"] == "bind.explicit_port"
    assert "<svg" in svg.read_text() and "TIME_WAIT entry" in svg.read_text()
    assert 'color="#d62728"' in dot.read_text()  # the path of the accepted connection
    bad = subprocess.run([sys.executable, "-m", "sim.cli", "explain", str(lesson), "--step", "99"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "steps 0.." in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "sim.cli", "explain", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2



# A what-if that removes a step whose value is captured (and named by a later check) is not a
# scenario the loader would take: it is left out instead of crashing the explanation.
def test_explain_runs_on_peer_scenarios_with_captures():
    for name in ("selftest-ip-local-port-range-outside-ip4.yaml", "selftest-reuseport-dualstack-tcp-v6-first.yaml"):
        sc = load_file(ROOT / "scenarios" / "peers" / name)
        e = Explainer(sc)
        assert all(e.explain(i) is not None for i in range(len(e.trace.steps)))
