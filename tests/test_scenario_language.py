"""The scenario language of the peer suites: captured values, set/range/any-error expectations,
checks, poll, addresses, option lengths, TCP_INFO, sysctl and credential steps -- their bad input,
their meaning on the simulator, and scenarios tested with pytest from outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sim.engine import SimBackend
from sim.real.backend import RealBackend
from sim.scenario.errors import ScenarioError
from sim.scenario.loader import load_text
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent

HEAD = """name: t
processes:
  server: {}
  client: {}
steps:
  - {call: socket, proc: server, as: l}
  - {call: bind, proc: server, sock: l, addr: 127.0.0.1, port: 0, capture: lname, expect: ok}
  - {call: listen, proc: server, sock: l, backlog: 5}
  - {call: socket, proc: client, as: c}
"""


def load(extra: str, head: str = HEAD):
    """Steps (and checks) written indented inside the test: back to the file's indentation."""
    text = textwrap.dedent(extra)
    if "checks:" not in text:
        text = textwrap.indent(text, "  ")
    return load_text(head + text, "t.yaml")


def bad(extra: str, head: str = HEAD) -> ScenarioError:
    with pytest.raises(ScenarioError) as ei:
        load_text(head + extra, "t.yaml")
    e = ei.value
    assert e.path == "t.yaml" and e.line > 0 and e.column > 0, str(e)
    assert "\n" not in str(e)
    return e


def sim(sc):
    return run(sc, SimBackend(seed=sc.seed), seed=sc.seed)


# ------------------------------------------------------------------ bad input: one line, file:line:col


def test_unknown_capture_is_located() -> None:
    e = bad("  - {call: connect, proc: client, sock: c, port: $lnam.port}\n")
    assert (e.line, e.column) == (10, 50)
    assert "captured by an earlier step" in e.message and "did you mean 'lname'" in e.message


def test_capture_used_before_it_is_made() -> None:
    e = bad("  - {call: connect, proc: client, sock: c, port: $later.port}\n"
            "  - {call: getsockname, proc: client, sock: c, capture: later}\n")
    assert e.line == 10 and "captured so far: lname" in e.message


def test_captured_address_in_a_port_slot() -> None:
    e = bad("  - {call: connect, proc: client, sock: c, port: $lname.addr}\n")
    assert e.line == 10 and "an address" in e.message


def test_capture_from_a_step_expected_to_fail() -> None:
    e = bad("  - {call: bind, proc: client, sock: c, port: 1, capture: nope, expect: EACCES}\n"
            "  - {call: connect, proc: client, sock: c, port: $nope.port}\n")
    assert e.line == 11 and "expected to fail" in e.message


def test_capture_from_a_step_that_failed_at_run_time(tmp_path: Path) -> None:
    """A step that was expected to work but failed: the use is bad input when the run reaches it."""
    text = HEAD + ("  - {call: socket, proc: client, as: d}\n"
                   "  - {call: bind, proc: client, sock: d, addr: 127.0.0.1, port: $lname.port, capture: d2}\n"
                   "  - {call: connect, proc: client, sock: c, port: $d2.port}\n")
    f = tmp_path / "fails.yaml"
    f.write_text(text)
    out = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(f)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{f}:12:50:" in lines[0] and "EADDRINUSE" in lines[0], out.stderr


def test_range_with_reversed_bounds() -> None:
    e = bad("  - {call: getsockname, proc: server, sock: l, expect: {range: [60999, 32768]}}\n")
    assert (e.line, e.column) == (10, 64) and "reversed" in e.message


def test_unknown_poll_event_and_wrong_type() -> None:
    e = bad("  - {call: poll, proc: client, sock: c, events: [POLLINN]}\n")
    assert e.line == 10 and "POLLIN" in e.message
    e = bad("  - {call: poll, proc: client, sock: c, events: [POLLIN], expect: POLLIN}\n")
    assert e.line == 10 and "found the text 'POLLIN'" in e.message
    e = bad("  - {call: poll, proc: client, sock: c, expect: [POLLIN, POLLOOT]}\n")
    assert (e.line, e.column) == (10, 58) and "did you mean 'POLLOUT'" in e.message


def test_observation_expectations_checked_at_load() -> None:
    e = bad("  - observe: {what: tcp_info, proc: client, sock: c}\n    expect: {state: ESTABLISHD}\n")
    assert (e.line, e.column) == (11, 21) and "TCP state name" in e.message
    e = bad("  - observe: {what: tcp_states, port: 80}\n    expect: {local: TIME_WAIT}\n")
    assert e.line == 11 and "a list of TCP state names" in e.message
    e = bad("  - observe: {what: sockstat}\n    expect: {tww: 1}\n")
    assert e.line == 11 and "did you mean 'tw'" in e.message
    e = bad("  - observe: {what: tcp_info, proc: client, sock: c}\n    expect: {rto: 5}\n")
    assert "add it to fields" in e.message


def test_bad_new_forms_are_one_line() -> None:
    cases = [
        "  - {call: shutdown, proc: client, sock: c, how: SHUT_BOTH}\n",
        "  - {call: setsockopt, proc: client, sock: c, opt: TCP_USER_TIMEOUT, value: [1, 2]}\n",
        "  - {call: setsockopt, proc: client, sock: c, opt: IP_LOCAL_PORT_RANGEE}\n",
        "  - {call: capset, proc: client, drop: [CAP_NET_ADMINN]}\n",
        "  - {call: seteuid, proc: client, uid: -1}\n",
        "  - sysctl: {tcp_fin_timeout: 0}\n",
        "  - sysctl: {rmem_max: 100}\n",
        "  - {call: connect, proc: client, sock: c, port: 80, expect: {one_of: []}}\n",
        "  - {call: connect, proc: client, sock: c, port: 80, expect: {range: [1]}}\n",
        "  - {call: connect, proc: client, sock: c, port: 80, expect: {addr: 127.0.0.1}}\n",
        "  - {call: connect, proc: client, sock: c, port: 80, capture: lname}\n",
    ]
    for extra in cases:
        bad(extra)
    e = bad("checks:\n  - {distinct: [lname, nope]}\n", HEAD + "  - {call: getsockname, proc: client, sock: c}\n")
    assert e.line == 12 and "captured step" in e.message
    e = bad("checks:\n  - {count: [lname], expect: {range: [3, 1]}}\n", HEAD + "  - sleep: 0\n")
    assert "reversed" in e.message


def test_cli_exit_2_for_a_new_form(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(HEAD + "  - {call: getsockname, proc: server, sock: l, expect: {range: [9, 1]}}\n")
    out = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(f)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and f"{f}:10:" in out.stderr


# ------------------------------------------------------------------ meaning on the simulator


def test_captured_port_reaches_later_steps_and_checks() -> None:
    sc = load("""\
      - {call: connect, proc: client, sock: c, port: $lname.port, capture: cname, expect: ok}
      - {call: accept, proc: server, sock: l, as: a, capture: peer, expect: {addr: 127.0.0.1}}
      - {call: getpeername, proc: client, sock: c, capture: cpeer, expect: {addr: 127.0.0.1}}
      - {call: poll, proc: server, sock: l, events: [POLLIN], expect: []}
      - {call: shutdown, proc: client, sock: c, how: 5, expect: EINVAL}
      - {call: connect, proc: client, sock: c, port: 1, expect: error}
    checks:
      - {same: [cpeer, lname]}
      - {same: [peer, cname]}
      - {distinct: [cname, lname]}
      - {count: [cname, cpeer], where: ok, expect: {range: [2, 2]}}
    """)
    t = sim(sc)
    assert not t.failed_expectations, [(r.index, r.expect, r.outcome(), r.obs) for r in t.failed_expectations]
    connect = t.steps[4]
    assert connect.args["port_from"] == "$lname.port" and connect.args["port"] == t.steps[1].name["port"] \
        if t.steps[1].name else True
    assert [r.kind for r in t.steps[-4:]] == ["check"] * 4


def test_a_wrong_set_or_check_fails() -> None:
    sc = load("""\
      - {call: connect, proc: client, sock: c, port: $lname.port, capture: a, expect: {one_of: [EINPROGRESS, ECONNREFUSED]}}
      - {call: getsockname, proc: client, sock: c, capture: b, expect: {range: [1, 1023]}}
    checks:
      - {distinct: [a, b], note: "one socket: one port"}
    """)
    t = sim(sc)
    assert [r.index for r in t.failed_expectations] == [4, 5, 6]


def test_tolerance_applies_to_the_expectation() -> None:
    sc = load("""\
      - {call: getsockopt, proc: client, sock: c, opt: SO_RCVBUF, expect: 100000,
         tolerate: [{field: ret, rel: 0.5, reason: "autotuning"}]}
      - {call: getsockopt, proc: client, sock: c, opt: SO_RCVBUF, expect: 10,
         tolerate: [{field: ret, rel: 0.5, reason: "autotuning"}]}
      - {call: getsockopt, proc: client, sock: c, opt: SO_RCVBUF, expect: 10,
         tolerate: [{field: ret, reason: "the kernel picks it"}]}
    """)
    t = sim(sc)
    assert [r.expect_ok for r in t.steps[4:7]] == [True, False, True]


def test_sysctl_and_credential_steps_on_the_simulator() -> None:
    sc = load_text("""\
name: creds
host:
  sysctls: {ip_unprivileged_port_start: 1024}
processes:
  root: {}
  nobind: {drop_caps: [CAP_NET_BIND_SERVICE]}
steps:
  - {call: socket, proc: nobind, as: s}
  - {call: bind, proc: nobind, sock: s, port: 80, expect: EACCES}
  - sysctl: {ip_unprivileged_port_start: 80}
  - {call: bind, proc: nobind, sock: s, port: 80, expect: ok}
  - {call: seteuid, proc: root, uid: 10}
  - {call: socket, proc: root, as: r}
  - {call: bind, proc: root, sock: r, port: 79, expect: EACCES}
  - {call: seteuid, proc: root, uid: 0}
  - {call: bind, proc: root, sock: r, port: 79, expect: ok}
  - {call: capset, proc: root, drop: [CAP_NET_ADMIN]}
  - {call: setsockopt, proc: root, sock: r, opt: SO_RCVBUFFORCE, value: 1000, expect: EPERM}
""", "creds.yaml")
    t = sim(sc)
    assert not t.failed_expectations, [(r.index, r.expect, r.outcome()) for r in t.failed_expectations]


# ------------------------------------------------------------------ pytest, anywhere


SCRATCH = """\
name: scratch
processes:
  p: {}
steps:
  - {call: socket, proc: p, as: s}
  - {call: getpeername, proc: p, sock: s, expect: ENOTCONN}
  - {call: poll, proc: p, sock: s, events: [POLLOUT], expect: [POLLOUT, POLLHUP]}
"""


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_a_scenario_in_a_scratch_directory_runs_under_pytest(tmp_path: Path) -> None:
    assert ROOT not in tmp_path.parents
    (tmp_path / "mine.yaml").write_text(SCRATCH)
    out = _pytest(tmp_path, "mine.yaml")
    ok, _ = RealBackend.available()
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("2 passed" if ok else "1 passed, 1 skipped") in out.stdout, out.stdout


def test_an_ini_glob_collects_a_project_s_scenarios(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "a.yaml").write_text(SCRATCH)
    (tmp_path / "other.yaml").write_text("not: a scenario\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nsocksim_scenarios =\n    net/*.yaml\n")
    out = _pytest(tmp_path, "--socksim-no-real")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 skipped" in out.stdout, out.stdout


def test_a_wrong_expectation_fails_both_items_in_scenario_terms(tmp_path: Path) -> None:
    ok, why = RealBackend.available()
    if not ok:
        pytest.skip(f"no private network namespace here: {why}")
    (tmp_path / "wrong.yaml").write_text(SCRATCH.replace("expect: ENOTCONN", "expect: EBADF"))
    out = _pytest(tmp_path, "wrong.yaml")
    assert "2 failed" in out.stdout, out.stdout
    text = out.stdout
    assert "on the simulator:" in text and "on the real kernel:" in text
    assert "| " in text and "getpeername, proc: p, sock: s, expect: EBADF" in text
    assert "expected: 'EBADF'" in text and "found:    ENOTCONN" in text


def test_a_varying_kernel_choice_prints_the_tolerance_block(tmp_path: Path) -> None:
    ok, why = RealBackend.available()
    if not ok:
        pytest.skip(f"no private network namespace here: {why}")
    text = SCRATCH + "  - {call: bind, proc: p, sock: s, port: 0}\n  - {call: getsockname, proc: p, sock: s}\n"
    (tmp_path / "varies.yaml").write_text(text)
    out = _pytest(tmp_path, "varies.yaml", "-k", "real")
    assert "1 failed" in out.stdout, out.stdout
    assert "different results on two runs" in out.stdout
    assert 'tolerate:' in out.stdout and 'reason: "FILL IN' in out.stdout
