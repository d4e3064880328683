"""The wire: parsing captured frames, numbering segments relative to each side's ISN, the
comparison's readable diff, the ladder views, and a real capture on the namespace's loopback.

Frames for the parser are built here field by field with struct (RFC 791 / RFC 8200 / RFC 9293
layouts), so the expected values are those fields; the real capture's expected segments are the
TCP three-way handshake of RFC 9293 §3.5 and Linux's loopback MSS (ipv4_default_advmss()).
"""

from __future__ import annotations

import os
import socket
import struct

import pytest

from sim.real.capture import parse_frame, parse_options
from sim.scenario.loader import ScenarioError, load_text
from sim.trace import RawSegment, StepRecord, Trace, WireNumbering
from sim.wire import compare_wire, ladder


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, win: int, opts: bytes = b"") -> bytes:
    opts += b"\x00" * (-len(opts) % 4)
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (doff << 12) | flags, win, 0, 0) + opts


def _v4(tcp: bytes, payload: int) -> bytes:
    total = 20 + len(tcp) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0,
                     socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.2"))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def test_ipv4_syn_with_options() -> None:
    opts = (b"\x02\x04\xff\xd7" b"\x04\x02" b"\x08\x0a" + b"\x00" * 8 + b"\x01" b"\x03\x03\x07")
    seg = parse_frame(_v4(_tcp(40000, 9500, 1000, 0, 0x02, 65495, opts), 0), 0)
    assert seg is not None
    assert seg.src == ("127.0.0.1", 40000) and seg.dst == ("127.0.0.2", 9500)
    assert seg.flags == "SYN" and seg.seq == 1000 and seg.ack == 0 and seg.length == 0
    assert seg.win == 65495
    assert seg.opts == {"mss": 65495, "sack_ok": True, "ts": True, "wscale": 7}


def test_ipv4_payload_length_comes_from_the_ip_header() -> None:
    frame = _v4(_tcp(9500, 40000, 5, 7, 0x18, 64), 100)  # PSH|ACK with 100 bytes (not captured)
    seg = parse_frame(frame, len(frame) + 100)
    assert seg.flags == "PSH|ACK" and seg.length == 100 and seg.ack == 7


def test_ipv6_rst() -> None:
    tcp = _tcp(9500, 40000, 0, 1, 0x14, 0)
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                      socket.inet_pton(socket.AF_INET6, "::1"), socket.inet_pton(socket.AF_INET6, "::1"))
    seg = parse_frame(b"\x00" * 12 + b"\x86\xdd" + ip6 + tcp, 0)
    assert seg.src == ("::1", 9500) and seg.flags == "RST|ACK" and seg.ack == 1


def test_not_tcp_and_truncated_frames_are_skipped() -> None:
    udp = _v4(b"\x00" * 8, 0)
    udp = udp[:23] + b"\x11" + udp[24:]  # protocol 17
    assert parse_frame(udp, 0) is None
    assert parse_frame(b"\x00" * 10, 10) is None
    assert parse_options(b"\x02\x04\xff") == {}  # an option cut short ends the list


def _raw(src, dst, flags, seq, ack=0, length=0):
    return RawSegment(src=("127.0.0.1", src), dst=("127.0.0.1", dst), flags=flags, seq=seq, ack=ack,
                      length=length, win=64)


def test_numbers_are_relative_to_each_sides_isn_and_a_new_syn_is_a_new_connection() -> None:
    n = WireNumbering()
    segs = [n.add(0, _raw(40000, 80, "SYN", 1000)),
            n.add(0, _raw(80, 40000, "SYN|ACK", 7000, 1001)),
            n.add(0, _raw(40000, 80, "ACK", 1001, 7001)),
            n.add(1, _raw(40000, 80, "PSH|ACK", 1001, 7001, 10)),
            n.add(2, _raw(40000, 80, "SYN", 555))]  # the same 4-tuple again: TIME_WAIT recycled
    assert [(s.conn, s.dir, s.seq, s.ack) for s in segs] == [
        (1, ">", 0, 0), (1, "<", 0, 1), (1, ">", 1, 1), (1, ">", 1, 1), (2, ">", 0, 0)]
    # the closed port's RST answers a SYN: its own numbers stay as sent (seq 0)
    rst = n.add(3, _raw(80, 40000, "RST|ACK", 0, 556))
    assert (rst.conn, rst.dir, rst.seq, rst.ack) == (2, "<", 0, 1)


def test_a_syn_retransmission_stays_in_its_connection() -> None:
    n = WireNumbering()
    a, b = n.add(0, _raw(40000, 80, "SYN", 9)), n.add(1, _raw(40000, 80, "SYN", 9))
    assert a.conn == b.conn == 1


def _trace(backend: str, segs: list[tuple], steps: int = 3) -> Trace:
    n = WireNumbering()
    t = Trace(scenario="x", backend=backend, summary={"wire": "captured on lo"} if backend == "real" else {})
    t.steps = [StepRecord(index=i, line=10 + i, kind="call", proc="client", call="send", step=i)
               for i in range(steps)]
    t.wire = [n.add(rec, _raw(*s)) for rec, s in segs]
    return t


HANDSHAKE = [(0, (40000, 80, "SYN", 0)), (0, (80, 40000, "SYN|ACK", 0, 1)), (0, (40000, 80, "ACK", 1, 1))]


def test_the_wire_diff_names_step_connection_and_segments() -> None:
    real = _trace("real", HANDSHAKE + [(1, (40000, 80, "PSH|ACK", 1, 1, 5)), (1, (80, 40000, "ACK", 1, 6))])
    sim = _trace("sim", HANDSHAKE + [(1, (40000, 80, "PSH|ACK", 1, 1, 5)), (2, (80, 40000, "ACK", 1, 6))])
    sc = load_text("name: x\nprocesses: {client: {}}\nsteps:\n  - {proc: client, call: socket}\n")
    res = compare_wire(sc, sim, real)
    assert not res.agree
    text = "\n".join(res.disagree)
    assert "connection 1 (127.0.0.1:40000 > 127.0.0.1:80)" in text
    assert "expected (real kernel): step 1 (line 11, client send): 127.0.0.1:80 > 127.0.0.1:40000 ACK seq=1 ack=6" in text
    assert "found (simulator):      step 2 (line 12, client send)" in text
    # the same difference, tolerated by the step: a delayed ACK may fire after the next step
    for t in (sim, real):  # both traces carry the scenario's tolerances
        t.steps[1].tolerate = [{"field": "wire.step", "reason": "delayed ACK timing"}]
    assert compare_wire(sc, sim, real).agree


def test_windows_differ_unless_tolerated_scenario_wide() -> None:
    real = _trace("real", HANDSHAKE)
    sim = _trace("sim", HANDSHAKE)
    sim.wire[2].win = 512
    strict = load_text("name: x\nprocesses: {client: {}}\nsteps:\n  - {proc: client, call: socket}\n")
    assert not compare_wire(strict, sim, real).agree
    loose = load_text("name: x\nprocesses: {client: {}}\ntolerate: [{field: wire.win, reason: truesize}]\n"
                      "steps:\n  - {proc: client, call: socket}\n")
    res = compare_wire(loose, sim, real)
    assert res.agree and any("truesize" in t for t in res.tolerated)


def test_wire_not_compared_without_a_capture() -> None:
    real = _trace("real", HANDSHAKE)
    real.summary = {"wire": "not captured: setns(...): Operation not permitted"}
    res = compare_wire(None, _trace("sim", []), real)
    assert res.agree and not res.checked and "Operation not permitted" in res.why


def test_scenario_wire_tolerance_is_checked_with_file_position() -> None:
    with pytest.raises(ScenarioError) as e:
        load_text("name: x\nprocesses: {a: {}}\ntolerate: [{field: wire.step, reason: abc}]\n"
                  "steps:\n  - {proc: a, call: socket}\n", "x.yaml")
    assert str(e.value).startswith("x.yaml:3:")


def test_terminal_ladder_draws_direction_and_states() -> None:
    t = _trace("sim", HANDSHAKE)
    t.wire[0].states = ["SYN_SENT", "LISTEN"]
    t.wire[1].states = ["SYN_RECV", "ESTABLISHED"]
    lines = ladder(t)
    assert lines[0].startswith("step 0 (line 10")
    assert "SYN_SENT" in lines[1] and "-->|" in lines[1] and "SYN 0:0" in lines[1]
    assert "|<-" in lines[2] and "SYN|ACK 0:0 ack 1" in lines[2]


@pytest.mark.real
def test_real_capture_sees_the_handshake_once_per_segment() -> None:
    from sim.real import RealBackend
    from sim.scenario.runner import run

    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    sc = load_text("""
name: capture
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9700}
  - {proc: server, call: listen, sock: srv, backlog: 5}
  - {proc: client, call: socket, as: c}
  - {proc: client, call: connect, sock: c, addr: 127.0.0.1, port: 9700}
  - {proc: client, call: send, sock: c, bytes: 100}
""")
    t = run(sc, RealBackend())
    assert t.summary["wire"].startswith("captured"), t.summary["wire"]
    got = [(w.rec, w.dir, w.flags, w.seq, w.ack, w.len) for w in t.wire]
    assert got[:3] == [(4, ">", "SYN", 0, 0, 0), (4, "<", "SYN|ACK", 0, 1, 0), (4, ">", "ACK", 1, 1, 0)]
    assert got[3][:6] == (5, ">", "PSH|ACK", 1, 1, 100)
    # ipv4_default_advmss() (net/ipv4/route.c): min(MTU - 40, IPV4_MAX_PMTU 65535 - 40)
    assert t.wire[0].opts["mss"] == 65535 - 40 and t.wire[0].opts["sack_ok"]
    assert t.wire[0].dst == "127.0.0.1:9700"


def test_a_wire_difference_is_a_fuzz_divergence_with_a_readable_diff() -> None:
    """``socksim fuzz`` counts a difference on the wire alone (every call result equal) as a
    divergence, signed by the first segment that differs, with the per-connection diff."""
    from sim import fuzz
    from sim.compare import compare_traces

    real = _trace("real", HANDSHAKE + [(1, (40000, 80, "PSH|ACK", 1, 1, 5)), (1, (80, 40000, "ACK", 1, 6))])
    sim = _trace("sim", HANDSHAKE + [(1, (40000, 80, "PSH|ACK", 1, 1, 5)), (1, (80, 40000, "ACK", 1, 6))])
    sc = load_text("name: x\nprocesses: {client: {}}\nsteps:\n  - {proc: client, call: socket}\n")
    assert fuzz.verdict_of(compare_traces(sc, sim, real), sim, real).agree
    sim.wire[4].win = 80  # the receiver's window after the data
    v = fuzz.verdict_of(compare_traces(sc, sim, real), sim, real)
    assert not v.agree
    assert v.primary == "wire: <ACK differs in win"
    text = "\n".join(v.details[1])
    assert "expected (real kernel): step 1 (line 11, client send): 127.0.0.1:80 > 127.0.0.1:40000 ACK seq=1 ack=6 len=0 win=64" in text
    assert "found (simulator):      step 1 (line 11, client send): 127.0.0.1:80 > 127.0.0.1:40000 ACK seq=1 ack=6 len=0 win=80" in text
    sim.wire[4].flags = "RST|ACK"
    assert fuzz.verdict_of(compare_traces(sc, sim, real), sim, real).primary == "wire: expected <ACK, found <RST|ACK"


def test_segments_are_placed_by_their_own_traces_step() -> None:
    """A timer's slot makes one record per call: when one backend made a record more (a call
    that did not put anything on the wire), the segments of later steps still line up."""
    real = _trace("real", HANDSHAKE + [(2, (40000, 80, "PSH|ACK", 1, 1, 5))], steps=3)
    sim = _trace("sim", HANDSHAKE + [(3, (40000, 80, "PSH|ACK", 1, 1, 5))], steps=4)
    for t in (real, sim):
        t.steps[0].step = 0
    real.steps[1].step, real.steps[2].step = 1, 2
    sim.steps[1].step, sim.steps[2].step, sim.steps[3].step = 1, 1, 2  # the slot ran twice
    sc = load_text("name: x\nprocesses: {client: {}}\nsteps:\n  - {proc: client, call: socket}\n")
    assert compare_wire(sc, sim, real).agree
    sim.steps[3].step = 1  # the data now comes from another step than on the real kernel
    res = compare_wire(sc, sim, real)
    assert not res.agree and res.first == (2, "wire: >PSH|ACK differs in step")
