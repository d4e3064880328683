"""The Windows personality against Wine's Winsock conformance assertions, and the lessons under both
personalities.

Wine's ``dlls/ws2_32/tests/sock.c`` runs on real Windows machines: each ``ok()`` there states what
Windows does. The ``win-wine-*`` scenarios restate those assertions; these tests hold the model to
them, whatever seed draws the model's free choices (ports, hash secrets).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.engine import SimBackend
from sim.scenario.loader import load_file
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = sorted((ROOT / "scenarios" / "windows").glob("*.yaml"))
WINE = [p for p in WINDOWS if p.stem.startswith("win-wine-")]
LESSONS = sorted((ROOT / "scenarios" / "lessons").glob("*.yaml"))


def test_at_least_sixty_windows_scenarios():
    assert len(WINDOWS) >= 60, len(WINDOWS)


def _failed(path: Path, seed: int, personality: str | None = None) -> list:
    sc = load_file(path)
    tr = run(sc, SimBackend(seed=seed), seed=seed, personality=personality)
    return [(r.index, r.call or r.kind, r.expect, r.err, r.ret, r.obs) for r in tr.failed_expectations]


@pytest.mark.parametrize("path", WINE, ids=[p.stem for p in WINE])
def test_wine_scenario_cites_its_test_function(path):
    """Every win-wine-* scenario names the sock.c test function (and a Microsoft page) it encodes."""
    sc = load_file(path)
    assert "dlls/ws2_32/tests/sock.c" in sc.description, path
    assert "test_" in sc.description.split("dlls/ws2_32/tests/sock.c", 1)[1], path
    assert "learn.microsoft.com" in sc.description, path
    assert "wine" in sc.tags and sc.host.personality == "windows", path


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_wine_scenarios_hold_for_every_seed(seed):
    """What the assertions measured on Windows must not depend on the model's seeded choices."""
    bad = {p.stem: f for p in WINE if (f := _failed(p, seed))}
    assert not bad, bad


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_runs_under_windows_or_says_why_not(path):
    """A lesson meets its expectations under --personality windows, or declares itself Linux-only
    with its reason in the description."""
    sc = load_file(path)
    if "linux-only" in sc.tags:
        assert "Linux-only: " in sc.description, path
        return
    assert not _failed(path, sc.seed, "windows"), path
    assert not _failed(path, sc.seed, "linux"), path


def test_compare_personalities_shows_conventions_timing_and_run_step_numbers():
    """--compare-personalities lists the INVALID_SOCKET/SOCKET_ERROR against -1/errno rows, WSAE
    numbers, the ~2 s refused connect as a timing row, numbered as `socksim run` numbers them."""
    from sim.report.personalities import differences

    sc = load_file(ROOT / "scenarios" / "lessons" / "10-invalid-socket-socket-error.yaml")
    traces = {n: run(sc, SimBackend(seed=0), seed=0, personality=n) for n in ("linux", "windows")}
    diffs = differences(traces, sc.host.personality)
    home = traces[sc.host.personality]
    by_number = {num: (how, row) for num, how, row in diffs}
    failed_socket = next(r for r in home.steps if r.call == "socket" and r.err)
    how, row = by_number[str(failed_socket.index)]
    assert how == "convention"
    assert row["windows"].ret == "INVALID_SOCKET" and row["windows"].errno == 10043
    assert row["linux"].ret == -1 and row["linux"].errno == 93
    failed_bind = next(r for r in home.steps if r.call == "bind" and r.err)
    assert by_number[str(failed_bind.index)][1]["windows"].ret == "SOCKET_ERROR"
    refused = next(r for r in traces["windows"].steps if r.call == "connect" and r.blocked)
    how, row = next((h, w) for _, h, w in diffs if w.get("windows") is refused)
    assert "timing" in how
    assert row["windows"].completed_time - row["linux"].time >= 1.5
    for num, _, row in diffs:  # numbers are the home run's record indices
        if sc.host.personality in row:
            assert home.steps[int(num)] is row[sc.host.personality]


LINUX_ONLY = re.compile(r"/proc|\bfds?\b|RLIMIT_NOFILE|sockstat|inetsw|\b_*[a-z0-9]+_[a-z0-9_]+\(\)")


def _windows_text(tr) -> list[str]:
    """Everything a Windows run shows: each step's rule, source and facts, and the end tables."""
    from sim.report.terminal import console, print_windows_summary

    texts = []
    for r in tr.steps:
        texts += [r.rule or "", r.cite or ""] + list(r.facts)
    with console.capture() as cap:
        print_windows_summary(tr)
    return texts + [cap.get()]


@pytest.mark.parametrize("path", WINDOWS, ids=[p.stem for p in WINDOWS])
def test_windows_runs_speak_windows_only(path):
    """No Windows explanation or table names a Linux-only thing (/proc, fd, RLIMIT_NOFILE, sockstat,
    kernel function names); every credited rule is a Winsock rule (or the API convention)."""
    sc = load_file(path)
    tr = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    bad = [t for t in _windows_text(tr) if LINUX_ONLY.search(t)]
    assert not bad, bad
    for r in tr.steps:
        if r.kind != "call" or r.err in ("PROCESS_BUSY", "PROCESS_GONE") or (r.blocked and r.completed_after is None):
            continue
        assert (r.rule or "").startswith(("win.", "api.")), (r.index, r.call, r.rule)
    # that the credited rule is the one that decided: tests/test_windows_credit.py


def _bind_rule(setup: list[dict], bind: dict) -> str:
    from sim.scenario.model import Scenario

    steps = [{"proc": "app", "call": "WSAStartup"}] + setup + [bind]
    sc = Scenario.model_validate({"name": "credit", "host": {"personality": "windows"},
                                  "processes": {"app": {}}, "steps": steps})
    tr = run(sc, SimBackend(seed=0), seed=0)
    rec = tr.steps[-1]
    assert rec.err is None, rec
    return rec.rule


def test_a_bind_is_credited_to_the_rule_that_decided_it():
    """A plain SO_REUSEADDR bind to a free port is decided by bind itself, not by an
    exclusive-address rule; a bind the sharing table allows is decided by the table; a bind past
    TIME_WAIT entries by the rule that lets them not hold the port; bind(0) by the dynamic range."""
    s = [{"proc": "app", "call": "socket", "as": "s"},
         {"proc": "app", "call": "setsockopt", "sock": "s", "opt": "SO_REUSEADDR", "value": 1}]
    assert _bind_rule(s, {"proc": "app", "call": "bind", "sock": "s", "addr": "127.0.0.1", "port": 7000}) == "win.bind"
    shared = [{"proc": "app", "call": "socket", "as": "w"},
              {"proc": "app", "call": "bind", "sock": "w", "addr": "0.0.0.0", "port": 7000}] + s
    assert _bind_rule(shared, {"proc": "app", "call": "bind", "sock": "s", "addr": "127.0.0.1",
                               "port": 7000}) == "win.bind_share"
    assert _bind_rule(s, {"proc": "app", "call": "bind", "sock": "s", "port": 0}) == "win.dynamic_port"


@pytest.mark.parametrize("name", ["win-restart-time-wait-rebind", "win-wine-two-wildcard-binds"])
def test_windows_explanations_speak_windows_and_offer_what_ifs(name):
    """`socksim explain` on a Windows run: Windows names only, and every bind that met another
    owner of its port has what-if lines computed by re-running the Windows model (e.g. with
    SO_EXCLUSIVEADDRUSE)."""
    from sim.explain import Explainer, render_text

    sc = load_file(ROOT / "scenarios" / "windows" / f"{name}.yaml")
    ex = Explainer(sc, seed=sc.seed)
    for e in ex.explain_all():
        text = render_text(e)
        assert not LINUX_ONLY.search(text), text
        assert not re.search(r"\bsys\.|SO_REUSEPORT", text), text
        if e.kind == "call" and not e.what.startswith(("WSAStartup", "WSACleanup")):
            assert any("WSAStartup" in w.label for w in e.whatifs), text  # every Winsock call has one
        contested = "WSAE" in e.outcome or any("first bind" in f or "still on port" in f for f in e.facts)
        if e.kind == "call" and e.what.startswith("bind(") and contested:
            assert e.whatifs, text
            assert any("SO_EXCLUSIVEADDRUSE" in w.label for w in e.whatifs), text


@pytest.mark.parametrize("host, where, says", [
    ("  personality: windows\n  sysctls: {ip_local_port_range: [50000, 50001]}\n  dynamicport: {start: 50000, num: 10}\n",
     (4, 34), "one dynamic port range"),
    ("  personality: windows\n  dynamicport: {start: 65000, num: 1000}\n", (4, 36), "at most 536 ports"),
    ("  personality: windows\n  dynamicport: {start: 80, num: 10}\n", (4, 24), "1025"),
    ("  dynamicport: {start: 50000, num: 10}\n", (3, 16), "ip_local_port_range on a Linux host"),
])
def test_the_dynamic_port_range_is_set_the_netsh_way(tmp_path, host, where, says):
    """A Windows host sets its dynamic range as netsh does (dynamicport: {start, num}); the Linux
    sysctl besides it, a range past 65535, a start below 1025 and dynamicport on a Linux host are
    refused at load with the line and column."""
    from sim.scenario.loader import ScenarioError

    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nhost:\n{host}processes: {{a: {{}}}}\nsteps:\n  - {{proc: a, call: socket}}\n")
    with pytest.raises(ScenarioError) as info:
        load_file(p)
    msg = str(info.value)
    assert f"s.yaml:{where[0]}:{where[1]}:" in msg and says in msg, msg


def test_dynamicport_is_the_windows_range_and_shows_in_netsh_terms():
    from sim.report.terminal import console, print_windows_summary

    sc = load_file(ROOT / "scenarios" / "windows" / "win-wine-bind-states.yaml")
    tr = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    with console.capture() as cap:
        print_windows_summary(tr)
    assert "netsh int ipv4 set dynamicport tcp start=50000 num=1" in cap.get()


# ----------------------------------------------------------------------------- pointers and lengths
LINUX_POINTER_STEPS = {
    "null": "- {proc: a, call: bind, sock: s, addr: 127.0.0.1, port: 0, null: [addr]}",
    "addrlen": "- {proc: a, call: getsockname, sock: s, addrlen: 15}",
    "opt": "- {proc: a, call: setsockopt, sock: s, opt: TCP_KEEPCNT, value: 5}",
}


@pytest.mark.parametrize("key", sorted(LINUX_POINTER_STEPS))
def test_windows_only_arguments_are_refused_on_a_linux_host(tmp_path, key):
    """NULL pointers, address lengths and the options only the Windows model has: one line with the
    file, line and column of the key on a Linux host, never a made-up Linux answer."""
    from sim.scenario.errors import ScenarioError

    f = tmp_path / "lin.yaml"
    f.write_text("name: lin\ndescription: x\nprocesses:\n  a: {}\nsteps:\n"
                 "  - {proc: a, call: socket, as: s}\n  " + LINUX_POINTER_STEPS[key] + "\n")
    with pytest.raises(ScenarioError) as e:
        load_file(f)
    line = f.read_text().splitlines()[e.value.line - 1]
    assert e.value.line == 7 and line[:e.value.column - 1].endswith(f"{key}: "), (str(e.value), line)
    assert "Windows personality only" in e.value.message


def test_a_pointer_argument_under_the_linux_personality_is_not_modelled():
    """A Windows scenario run as Linux does not hand a Linux kernel arguments it does not take: the
    step is reported NOT_MODELLED (a --compare-personalities row), the rest of the run goes on."""
    sc = load_file(ROOT / "scenarios" / "windows" / "win-wine-efault-names.yaml")
    tr = run(sc, SimBackend(seed=1), seed=1, personality="linux")
    marked = [r for r in tr.steps if r.kind == "call" and ("null" in r.args or "addrlen" in r.args)]
    assert marked and all(r.err == "NOT_MODELLED" for r in marked)
    plain = [r for r in tr.steps if r.kind == "call" and r.call in ("listen", "socket")]
    assert plain and all(r.err is None for r in plain)


def test_threads_share_the_wsastartup_count():
    """WSACleanup page: in a multithreaded process the last WSACleanup ends Winsock for every
    thread. The thread's WSACleanup leaves the main thread without Winsock (a copied count would
    have left it one)."""
    assert not _failed(ROOT / "scenarios" / "windows" / "win-wsastartup-shared-by-threads.yaml", 1)
