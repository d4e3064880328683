"""TIME_WAIT (tcp_time_wait, tcp_twsk_unique) and buffers (sk_setsockopt): linux.md §5, §7."""

import networkx as nx
import pytest

from kharness import K
from sim.kernel.tcp_states import TRANSITIONS, State


def _restart(old_reuse: bool, new_reuse: bool) -> str | None:
    k = K()
    lst = k.server("a", 8080, reuse=old_reuse)
    c = k.ok("b", "socket")
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    s = k.ok("a", "accept", sock=lst)
    k.ok("a", "close", sock=s)
    k.ok("b", "close", sock=c)
    k.ok("a", "close", sock=lst)
    fd = k.ok("a", "socket")
    if new_reuse:
        k.ok("a", "setsockopt", sock=fd, opt="SO_REUSEADDR", value=1)
    return k.err("a", "bind", sock=fd, addr="127.0.0.1", port=8080)


@pytest.mark.parametrize("old,new,want", [
    (False, False, "EADDRINUSE"), (False, True, "EADDRINUSE"), (True, False, "EADDRINUSE"), (True, True, None)])
def test_restart_over_time_wait_needs_reuseaddr_on_both(old, new, want):
    # inet_twsk_alloc() copies tw_reuse = sk->sk_reuse (measured §2: only both-with -> OK)
    assert _restart(old, new) == want


def test_time_wait_expires_after_60s():
    # TCP_TIMEWAIT_LEN = 60*HZ (include/net/tcp.h)
    k = K()
    lst, s, c = k.pair()
    k.ok("b", "close", sock=c)
    k.ok("a", "close", sock=s)
    k.advance(59.9)
    assert k.states(8080)["remote"] == ["TIME_WAIT"]
    k.advance(0.2)
    assert k.states(8080)["remote"] == []
    assert k.k.bhash.buckets.keys() == {8080}


def test_max_tw_buckets_overflow():
    # inet_twsk_alloc() returns NULL at tcp_max_tw_buckets (measured: max=2, 5 closes -> tw 2, overflow 3)
    k = K(tcp_max_tw_buckets=2)
    lst = k.server("a", 8080)
    for _ in range(5):
        c = k.ok("b", "socket")
        k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
        s = k.ok("a", "accept", sock=lst)
        k.ok("b", "close", sock=c)
        k.ok("a", "close", sock=s)
    assert k.k.sockstat()["tw"] == 2
    assert k.k.mib["TCPTimeWaitOverflow"] == 3


@pytest.mark.parametrize("reuse,immediate,after_1_1s", [(2, "EADDRNOTAVAIL", None), (1, "EADDRNOTAVAIL", None),
                                                         (0, "EADDRNOTAVAIL", "EADDRNOTAVAIL")])
def test_tw_reuse_for_connect(reuse, immediate, after_1_1s):
    # tcp_twsk_unique(): measured §5 with the range pinned to one port, loopback
    k = K(ip_local_port_range=(40000, 40000), tcp_tw_reuse=reuse)
    lst = k.server("a", 8080)
    c = k.ok("b", "socket")
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    s = k.ok("a", "accept", sock=lst)
    k.ok("b", "close", sock=c)
    k.ok("a", "close", sock=s)
    c2 = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c2, addr="127.0.0.1", port=8080) == immediate
    k.ok("b", "close", sock=c2)
    k.advance(1.1)
    c3 = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c3, addr="127.0.0.1", port=8080) == after_1_1s


@pytest.mark.parametrize("timestamps,want,recycled", [(1, None, 1), (0, "EADDRNOTAVAIL", 0)])
def test_explicit_bind_recycles_time_wait_only_with_timestamps(timestamps, want, recycled):
    # tcp_twsk_unique() with twp == NULL: bind(SO_REUSEADDR)+connect recycles even with
    # tcp_tw_reuse=0, but only a TIME_WAIT that saw timestamps (measured §5, both cases)
    k = K(tcp_timestamps=timestamps, tcp_tw_reuse=0)
    lst = k.server("a", 8080)
    c = k.ok("b", "socket")
    k.ok("b", "setsockopt", sock=c, opt="SO_REUSEADDR", value=1)
    k.ok("b", "bind", sock=c, addr="127.0.0.1", port=40000)
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    s = k.ok("a", "accept", sock=lst)
    k.ok("b", "close", sock=c)
    k.ok("a", "close", sock=s)
    c2 = k.ok("b", "socket")
    k.ok("b", "setsockopt", sock=c2, opt="SO_REUSEADDR", value=1)
    k.ok("b", "bind", sock=c2, addr="127.0.0.1", port=40000)
    assert k.err("b", "connect", sock=c2, addr="127.0.0.1", port=8080) == want
    assert k.k.mib.get("TWRecycled", 0) == recycled


@pytest.mark.parametrize("val,snd,rcv", [(1, 4608, 2304), (1000, 4608, 2304), (2304, 4608, 4608),
                                         (4608, 9216, 9216), (10000, 20000, 20000), (100000, 200000, 200000),
                                         (10000000, 8388608, 8388608)])
def test_buffer_sizes_as_reported(val, snd, rcv):
    # sk_setsockopt(): min(val, {w,r}mem_max) * 2, floored at SOCK_MIN_{SND,RCV}BUF (measured table §7)
    k = K()
    fd = k.ok("a", "socket")
    k.ok("a", "setsockopt", sock=fd, opt="SO_SNDBUF", value=val)
    k.ok("a", "setsockopt", sock=fd, opt="SO_RCVBUF", value=val)
    assert k.ok("a", "getsockopt", sock=fd, opt="SO_SNDBUF") == snd
    assert k.ok("a", "getsockopt", sock=fd, opt="SO_RCVBUF") == rcv


def test_default_buffers_and_autotuning():
    # tcp_init_sock(): tcp_wmem[1]/tcp_rmem[1]; measured 16384/131072 fresh, 3939840 after connect
    k = K()
    fd = k.ok("a", "socket")
    assert k.ok("a", "getsockopt", sock=fd, opt="SO_SNDBUF") == 16384
    assert k.ok("a", "getsockopt", sock=fd, opt="SO_RCVBUF") == 131072
    lst, s, c = k.pair()
    assert k.ok("b", "getsockopt", sock=c, opt="SO_SNDBUF") == 3939840
    assert k.ok("a", "getsockopt", sock=s, opt="SO_SNDBUF") == 3939840


def test_nonblocking_send_until_eagain_and_queues():
    # tcp_sendmsg_locked(): EAGAIN when sk_stream_memory_free() is false (measured §7: 9000 then EAGAIN
    # with SO_SNDBUF=4096 and the peer's SO_RCVBUF=4096, 1000-byte sends); byte counts approximate
    k = K()
    lst = k.ok("a", "socket")
    k.ok("a", "setsockopt", sock=lst, opt="SO_RCVBUF", value=4096)
    k.ok("a", "bind", sock=lst, addr="127.0.0.1", port=8080)
    k.ok("a", "listen", sock=lst)
    c = k.ok("b", "socket")
    k.ok("b", "setsockopt", sock=c, opt="SO_SNDBUF", value=4096)
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    s = k.ok("a", "accept", sock=lst)
    total = 0
    for _ in range(100):
        out = k("b", "send", sock=c, bytes=1000, flags=["MSG_DONTWAIT"])
        if out.err:
            assert out.err == "EAGAIN"
            break
        total += out.ret
    else:
        pytest.fail("send never returned EAGAIN")
    assert 9000 * 0.5 <= total <= 9000 * 1.5
    q = k.k.queues("a", s)
    assert q["recv_q"] > 0 and k.k.queues("b", c)["send_q"] > 0
    assert k.err("a", "recv", sock=s, bytes=0) is None


def test_state_graph_reachability():
    # every state reachable from CLOSE, and CLOSE reachable from every state (the table is whole)
    g = nx.DiGraph()
    for (s, _e), (t, _a) in TRANSITIONS.items():
        g.add_edge(s, t)
    assert nx.descendants(g, State.CLOSE) | {State.CLOSE} == set(State)
    for s in State:
        assert s == State.CLOSE or nx.has_path(g, s, State.CLOSE), s


@pytest.mark.parametrize("port_range", [(40000, 40000), (40000, 40001), (40000, 40002), (40001, 40004)])
def test_exhausted_range_recovers_when_time_wait_expires(port_range):
    # __inet_hash_connect(): EADDRNOTAVAIL while every scanned port's 4-tuple is in TIME_WAIT
    # (tcp_tw_reuse=0), a port again once an entry expires (TCP_TIMEWAIT_LEN, timer-wheel rounded)
    k = K(ip_local_port_range=port_range, tcp_tw_reuse=0)
    lst = k.server("a", 8080, backlog=16)
    lo, hi = port_range
    scanned = (hi - lo + 1) & ~1 if hi > lo else 1
    for _ in range(scanned):
        c = k.ok("b", "socket")
        k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
        s = k.ok("a", "accept", sock=lst)
        k.ok("b", "close", sock=c)
        k.ok("a", "close", sock=s)
    for _ in range(2):  # the second failure comes from the remembered search
        c = k.ok("b", "socket")
        assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) == "EADDRNOTAVAIL"
        k.ok("b", "close", sock=c)
    k.advance(62.1)
    c = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) is None


def _entry_stamped_in_a_real_window(found):
    """A client's TIME_WAIT entry stamped by the server's close() (a real call that ran from
    0.5 ms to 0.9 ms: tcp_clock_ms() read 0 either way), one port, tcp_tw_reuse=2."""
    k = K(ip_local_port_range=(40000, 40000), tcp_tw_reuse=2)
    lst = k.server("a", 8080)
    c = k.ok("b", "socket")
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    s = k.ok("a", "accept", sock=lst)
    k.ok("b", "close", sock=c)
    k.now = 0.0005
    k.k.followed = (0.0009, True)
    k.ok("a", "close", sock=s)
    k.k.followed = None
    return k, k.ok("b", "socket")


@pytest.mark.parametrize("found", [True, False])
def test_followed_window_straddling_the_reuse_millisecond_takes_the_real_outcome(found):
    # tcp_twsk_unique() recycles once tcp_clock_ms() > stamp + 1000 (whole ms, include/net/tcp.h).
    # A real connect() that entered at 1000.9 ms (reads 1000: too young) and returned at 1001.2 ms
    # (reads 1001: old enough): the windows cannot tell which the kernel read; its outcome can.
    k, c = _entry_stamped_in_a_real_window(found)
    k.now = 1.0009
    k.k.followed = (1.0012, found)
    out = k.k.syscall("b", "connect", {"sock": c, "addr": "127.0.0.1", "port": 8080}, k.now)
    assert out.err == (None if found else "EADDRNOTAVAIL")
    assert any("the real kernel's clock decided" in f for f in out.facts)


@pytest.mark.parametrize("now,late,want", [(1.0002, 1.0008, "EADDRNOTAVAIL"), (1.0011, 1.0019, None)])
def test_followed_window_inside_one_millisecond_decides_alone(now, late, want):
    # the whole window reads one millisecond (1000: too young; 1001: old enough): the model's
    # verdict stands whatever the real call did (a different real outcome is a disagreement)
    k, c = _entry_stamped_in_a_real_window(True)
    k.now = now
    k.k.followed = (late, want is not None)  # the opposite of the model's verdict
    out = k.k.syscall("b", "connect", {"sock": c, "addr": "127.0.0.1", "port": 8080}, k.now)
    assert out.err == want  # None: the handshake under way
    assert not any("the real kernel's clock decided" in f for f in out.facts)
