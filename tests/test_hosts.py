"""Several hosts joined by links: the scenario format, the engine's delays, sweeps across hosts.

The two-host rules themselves (bind to the other host's address, ENETUNREACH, TIME_WAIT on the
closer's host, tcp_tw_reuse=2 on loopback only) are scenarios under scenarios/hosts/, each checked
against the real kernel in two network namespaces joined by a veth pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main

TWO = """
name: two
hosts:
  client: {addresses: [10.0.0.1], sysctls: {ip_local_port_range: [40000, 40099], tcp_tw_reuse: 2}}
  server: {addresses: [10.0.0.2]}
links:
  - {between: [client, server], delay: %(delay)s}
processes:
  web: {host: server}
  app: {host: client}
steps:
  - {proc: web, call: socket, as: srv}
  - {proc: web, call: bind, sock: srv, addr: 10.0.0.2, port: 8080}
  - {proc: web, call: listen, sock: srv, backlog: 128}
  - {proc: app, call: socket, as: c}
  - {proc: app, call: connect, sock: c, addr: 10.0.0.2, port: 8080}
  - observe: {what: sockstat}
"""

LOAD = """
  - load: {proc: app, addr: 10.0.0.2, port: 8080, rate: 50, duration: 4, accept_proc: web, listener: srv}
"""


def _trace(tmp_path: Path, text: str) -> dict:
    sc, out = tmp_path / "s.yaml", tmp_path / "t.json"
    sc.write_text(text)
    assert main(["run", str(sc), "-q", "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("delay", [0.01, 0.05])
def test_the_handshake_crosses_the_link_with_its_delay(tmp_path, delay):
    """connect() returns after SYN and SYN-ACK (one round trip); the runner then lets the final
    ACK land: the next step starts three one-way delays after the connect (RFC 793, 3.4)."""
    t = _trace(tmp_path, TWO % {"delay": delay})
    connect, after = t["steps"][4], t["steps"][5]
    assert connect["err"] is None and connect["time"] == 0
    assert after["time"] == pytest.approx(3 * delay, abs=1e-9)
    # one connection, on each host: the client's socket and the server's child
    assert after["obs"]["inuse"] == 3


def test_sweeps_reach_host_and_link_settings(tmp_path):
    from sim.scenario.loader import load_text
    from sim.sweep import validate_point

    sc = load_text(TWO % {"delay": 0.01} + LOAD, "two.yaml")
    base = sc.model_dump(by_alias=True, mode="json")
    p = validate_point(base, {"client.ip_local_port_range": (50000, 50009), "server.tcp_max_tw_buckets": 7,
                              "delay": 0.02, "rate": 40})
    assert p.hosts["client"].sysctls.ip_local_port_range == (50000, 50009)
    assert p.hosts["server"].sysctls.ip_local_port_range == (32768, 60999)  # the server's own
    assert p.hosts["server"].sysctls.tcp_max_tw_buckets == 7
    assert p.hosts["client"].sysctls.tcp_max_tw_buckets == 131072
    assert p.links[0].delay == 0.02
    both = validate_point(base, {"tcp_tw_reuse": 0})  # no host named: every host's
    assert {h.sysctls.tcp_tw_reuse for h in both.hosts.values()} == {0}


def test_sweep_bad_host_parameter_is_one_line(tmp_path, capsys):
    sc = tmp_path / "two.yaml"
    sc.write_text(TWO % {"delay": 0.01} + LOAD)
    rc = main(["sweep", str(sc), "--param", "clinet.tcp_tw_reuse=0,1", "--jobs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no host 'clinet'" in err


def test_closed_form_follows_tcp_twsk_unique_off_loopback():
    """tcp_twsk_unique() (net/ipv4/tcp_ipv4.c): at tcp_tw_reuse 2 only loopback entries are reused,
    at 1 every destination's: a client host 10 ms away holds each port 60 s at 2, 1 s at 1."""
    from sim.scenario.loader import load_text
    from sim.sweep import closed_form, validate_point

    base = load_text(TWO % {"delay": 0.01} + LOAD, "two.yaml").model_dump(by_alias=True, mode="json")
    at2 = closed_form(validate_point(base, {"client.tcp_tw_reuse": 2}))
    at1 = closed_form(validate_point(base, {"client.tcp_tw_reuse": 1}))
    assert at2["hold_seconds"] == 60 and at2["ports"] == 100 and at2["exhaustion_at"] == 2.0
    assert at1["hold_seconds"] == 1 and at1["exhaustion_at"] is None


BAD = [
    ("links:\n  - {between: [client, servr], delay: 0.01}\n", "processes: {a: {host: client}}\n",
     "6:15: links[0].between: no host 'servr'"),
    ("", "processes: {a: {host: clent}}\n", "processes.a.host: no host 'clent'"),
    ("links:\n  - {between: [client, server], loss: 0.01}\n", "processes: {a: {host: client}}\n",
     "links[0].loss: expected 0"),
    ("", "processes: {a: {}}\n", "processes.a: say which host it runs on"),
    ("host: {latency: 0.1}\n", "processes: {a: {host: client}}\n", "hosts: give either host:"),
]


@pytest.mark.parametrize("links,procs,words", BAD)
def test_bad_topology_is_one_line_with_its_place(tmp_path, capsys, links, procs, words):
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nhosts:\n  client: {addresses: [10.0.0.1]}\n  server: {addresses: [10.0.0.2]}\n"
                 + links + procs + "steps:\n  - {proc: a, call: socket}\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}:") and err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err


def test_two_host_report_states_the_answer(tmp_path):
    """The report of a two-host sweep says which rules hold off loopback."""
    sc = tmp_path / "two.yaml"
    sc.write_text(TWO % {"delay": 0.01} + LOAD)
    run, rep = tmp_path / "runs" / "two.json", tmp_path / "reports" / "two"
    assert main(["sweep", str(sc), "--param", "client.tcp_tw_reuse=0,1,2", "--jobs", "1", "--no-progress",
                 "-q", "-o", str(run)]) == 0
    data = json.loads(run.read_text())
    by = {p["params"]["client.tcp_tw_reuse"]: p for p in data["points"]}
    # 100 ports at 50/s: they run out after 2 s unless TIME_WAIT entries are reused (at 1)
    assert by[0]["metrics"]["first_error"] == by[2]["metrics"]["first_error"] == "EADDRNOTAVAIL"
    assert by[1]["metrics"]["first_error"] is None
    assert main(["report", str(run), "-o", str(rep), "-q"]) == 0
    md = (rep / "report.md").read_text()
    head = md.split("## The question")[0]
    assert "towards 10.0.0.2:8080: 100 free ports / 60 s (TIME\\_WAIT)" in head
    assert "`tcp_tw_reuse=2` gives nothing here: the destination is not loopback" in head
    _two_host_page_in_chromium(data, rep / "index.html")


def _two_host_page_in_chromium(data: dict, page: Path) -> None:
    """The HTML page of the two-host sweep, in headless Chromium: the headline answer comes
    first and states each point's outcome from the run file, and every curve a figure promises
    is seen in its image."""
    from tests.test_report_answer import assert_curves_seen, assert_first_failures_stated, probe_page

    answer, figures = probe_page(page)
    assert_first_failures_stated(answer, data)
    assert "towards 10.0.0.2:8080" in answer and "Limits: " in answer
    assert figures
    assert_curves_seen(figures)


def _root_links() -> set[str]:
    import subprocess

    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _real_or_skip() -> None:
    import os

    from sim.real.topology import TopologyBackend

    ok, why = TopologyBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but two namespaces cannot be made: {why}")
        pytest.skip(why)


def test_real_topology_leaves_nothing_behind_even_on_failure(tmp_path, monkeypatch):
    """Two namespaces joined by a veth pair; after close, and after a set-up that fails half way
    (the route of the second end is refused), no veth end is left in this namespace and every
    zygote (each namespace's holder) is gone."""
    import os

    from sim.real import topology
    from sim.scenario.loader import load_text

    _real_or_skip()
    sc = load_text(TWO % {"delay": 0.01}, "two.yaml")
    data = sc.model_dump(by_alias=True)
    before = _root_links()
    b = topology.TopologyBackend()
    b.start(data)
    pids = [h.zygote_pid for h in b.hosts.values()]
    assert len(pids) == 2 and all(os.path.exists(f"/proc/{p}") for p in pids)
    b.close()
    assert _root_links() <= before
    assert not any(os.path.exists(f"/proc/{p}/ns/net") for p in pids)

    real_ip = topology._ip
    calls = []

    def failing(*args, netns_pid=None):
        calls.append(args)
        if args[:2] == ("route", "add") and len([c for c in calls if c[:2] == ("route", "add")]) == 2:
            raise topology.RealBackendError("refused on purpose")
        return real_ip(*args, netns_pid=netns_pid)

    monkeypatch.setattr(topology, "_ip", failing)
    b = topology.TopologyBackend()
    with pytest.raises(topology.RealBackendError, match="on purpose"):
        b.start(data)
    pids = [h.zygote_pid for h in b.hosts.values()]
    assert _root_links() <= before
    assert pids and not any(os.path.exists(f"/proc/{p}/ns/net") for p in pids if p)


def test_real_topology_deletes_a_veth_end_left_in_this_namespace(monkeypatch):
    """The set-up fails after creating the pair and before moving its second end: the end still
    in this namespace is deleted (and with it its peer)."""
    from sim.real import topology
    from sim.scenario.loader import load_text

    _real_or_skip()
    data = load_text(TWO % {"delay": 0.01}, "two.yaml").model_dump(by_alias=True)
    before = _root_links()
    real_ip = topology._ip
    moved = []

    def failing(*args, netns_pid=None):
        if "netns" in args:
            moved.append(args)
            if len(moved) == 2:
                assert args[3] in _root_links()  # the second end is still here
                raise topology.RealBackendError("refused on purpose")
        return real_ip(*args, netns_pid=netns_pid)

    monkeypatch.setattr(topology, "_ip", failing)
    b = topology.TopologyBackend()
    with pytest.raises(topology.RealBackendError, match="on purpose"):
        b.start(data)
    assert _root_links() <= before


def test_real_topology_captures_the_link_both_ways(tmp_path):
    """The wire between two namespaces is captured on the client's veth end: the handshake shows
    SYN out, SYN-ACK back and the final ACK out, with the veth MTU's MSS (1460) on both SYNs --
    the real kernel's own segments, which the model's (MSS from the route's device) must match."""
    _real_or_skip()
    sc, out = tmp_path / "s.yaml", tmp_path / "v.json"
    sc.write_text(TWO % {"delay": 0.01})
    assert main(["crosscheck", str(sc), "-q", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["real"]["summary"]["wire"].startswith("captured")
    for side in ("real", "sim"):
        hs = [(w["dir"], w["flags"], w["opts"].get("mss")) for w in data[side]["wire"]
              if w["src"].startswith("10.0.0.")][:3]
        assert hs == [(">", "SYN", 1460), ("<", "SYN|ACK", 1460), (">", "ACK", None)], (side, hs)
    assert data["verdict"]["wire_agree"] is True


def test_the_link_bandwidth_decides_the_outcome_on_both_sides(tmp_path):
    """scenarios/hosts/hosts-bandwidth-time-wait-age.yaml at 64 kbit/s lets 1.3 s pass during a
    transfer, so a loopback TIME_WAIT entry becomes old enough for tcp_tw_reuse=2; the same steps
    at 10 Mbit/s leave it too young -- on the model and on the real kernels (tbf on the veth pair,
    its rate read back into the trace)."""
    _real_or_skip()
    src = Path(__file__).parent.parent / "scenarios" / "hosts" / "hosts-bandwidth-time-wait-age.yaml"
    text = src.read_text()
    assert "bandwidth: 64000" in text
    sc, out = tmp_path / "fast.yaml", tmp_path / "fast.json"
    sc.write_text(text.replace("bandwidth: 64000", "bandwidth: 10000000"))
    main(["crosscheck", str(sc), "-q", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["real"]["summary"]["links"][0]["bandwidth_applied"] == 10_000_000
    for side in ("sim", "real"):
        connects = [s["err"] for s in data[side]["steps"] if s.get("call") == "connect"
                    and (s.get("args") or {}).get("addr") == "127.0.0.1"]
        assert connects == [None, "EADDRNOTAVAIL", "EADDRNOTAVAIL"], (side, connects)
