"""Port-occupancy table: inet_csk_bind_conflict() and the measured table of linux.md §2-3."""

import pytest

from kharness import K


def bind(k, proc="a", addr="127.0.0.1", port=8080, reuse=False, reuseport=False, family="AF_INET", v6only=None):
    fd = k.ok(proc, "socket", family=family)
    if reuse:
        k.ok(proc, "setsockopt", sock=fd, opt="SO_REUSEADDR", value=1)
    if reuseport:
        k.ok(proc, "setsockopt", sock=fd, opt="SO_REUSEPORT", value=1)
    if v6only is not None:
        k.ok(proc, "setsockopt", sock=fd, opt="IPV6_V6ONLY", value=v6only)
    return fd, k.err(proc, "bind", sock=fd, addr=addr, port=port)


# (A, B) -> B.bind, from the measured table in linux.md §2
@pytest.mark.parametrize("a,b,want", [
    ({}, {}, "EADDRINUSE"),
    ({"reuse": True}, {}, "EADDRINUSE"),
    ({}, {"reuse": True}, "EADDRINUSE"),
    ({"reuse": True}, {"reuse": True}, None),
    ({"addr": "0.0.0.0"}, {}, "EADDRINUSE"),
    ({}, {"addr": "0.0.0.0"}, "EADDRINUSE"),
    ({"addr": "0.0.0.0", "reuse": True}, {"reuse": True}, None),
    ({"addr": "127.0.0.1"}, {"addr": "127.0.0.2"}, None),
    ({"reuseport": True}, {"reuseport": True}, None),
    ({"reuseport": True}, {}, "EADDRINUSE"),
    ({}, {"reuseport": True}, "EADDRINUSE"),
    ({"family": "AF_INET6", "addr": "::"}, {"addr": "0.0.0.0"}, "EADDRINUSE"),
    ({"addr": "0.0.0.0"}, {"family": "AF_INET6", "addr": "::"}, "EADDRINUSE"),
    ({"addr": "127.0.0.1"}, {"family": "AF_INET6", "addr": "::"}, "EADDRINUSE"),
    ({"family": "AF_INET6", "addr": "::", "v6only": 1}, {"addr": "0.0.0.0"}, None),
    ({"family": "AF_INET6", "addr": "::1"}, {"addr": "127.0.0.1"}, None),
])
def test_bind_conflict_matrix(a, b, want):
    k = K()
    _, e = bind(k, **a)
    assert e is None
    _, e = bind(k, **b)
    assert e == want


def test_reuseport_needs_same_uid():
    # inet_bind_conflict(): SO_REUSEPORT shares only with the same owner uid (measured §2: uid 0 vs 65534)
    k = K(procs=("root",))
    k.k.add_process("nobody", 1024, 65534)
    _, e = bind(k, "root", port=9000, reuseport=True)
    assert e is None
    _, e = bind(k, "nobody", port=9000, reuseport=True)
    assert e == "EADDRINUSE"


def test_listen_recheck():
    # inet_csk_listen_start() re-checks the port in LISTEN state (measured §2 table row 2)
    k = K()
    a, e1 = bind(k, reuse=True)
    b, e2 = bind(k, reuse=True)
    assert (e1, e2) == (None, None)
    assert k.err("a", "listen", sock=a) is None
    assert k.err("a", "listen", sock=b) == "EADDRINUSE"
    # the failed listen() left the socket bound and not listening: listen() on a closes a, b can listen
    k.ok("a", "close", sock=a)
    assert k.err("a", "listen", sock=b) is None


def test_reuseaddr_listener_blocks_second_bind():
    # measured §2: A REUSEADDR + listening, B REUSEADDR -> EADDRINUSE
    k = K()
    a, _ = bind(k, reuse=True)
    k.ok("a", "listen", sock=a)
    _, e = bind(k, reuse=True)
    assert e == "EADDRINUSE"


def test_bind_twice_and_nonlocal_and_privileged():
    # __inet_bind(): EINVAL when already bound; non-local -> EADDRNOTAVAIL; <1024 non-root -> EACCES
    k = K(procs=("root",))
    k.k.add_process("user", 1024, 65534)
    fd, e = bind(k, "root")
    assert e is None
    assert k.err("root", "bind", sock=fd, addr="127.0.0.1", port=8081) == "EINVAL"
    _, e = bind(k, "root", addr="10.1.2.3", port=8082)
    assert e == "EADDRNOTAVAIL"
    _, e = bind(k, "user", port=80)
    assert e == "EACCES"
    _, e = bind(k, "root", port=80)
    assert e is None


def test_bind0_takes_odd_offsets_and_never_shares():
    # inet_csk_find_open_port(): offset |= 1 -> odd ports for an even low (measured 40/40 odd)
    k = K(ip_local_port_range=(32768, 60999))
    ports = []
    for _ in range(20):
        fd, e = bind(k, port=0)
        assert e is None
        ports.append(k.ok("a", "getsockname", sock=fd))
    assert all(p % 2 == 1 for p in ports)
    assert all(32768 <= p <= 60999 for p in ports)


def test_bind0_reuseaddr_prefers_lower_half():
    # attempt_half: SO_REUSEADDR sockets scan [low, low + (range/4)*2) first (measured: all 30 < 46884)
    k = K()
    for _ in range(30):
        fd, e = bind(k, port=0, reuse=True)
        assert e is None
        assert k.ok("a", "getsockname", sock=fd) < 46884


def test_bind0_exhaustion_is_eaddrinuse():
    # inet_csk_get_port(): nothing found -> EADDRINUSE
    k = K(ip_local_port_range=(40000, 40001))
    assert bind(k, port=0)[1] is None
    assert bind(k, port=0)[1] is None
    assert bind(k, port=0)[1] == "EADDRINUSE"


def test_four_tuple_reuse_and_exhaustion():
    # measured §3 with range 40000 40000
    k = K(ip_local_port_range=(40000, 40000))
    k.server("a", 7001)
    k.server("a", 7002)
    c1 = k.ok("b", "socket")
    k.ok("b", "connect", sock=c1, addr="127.0.0.1", port=7001)
    assert k.ok("b", "getsockname", sock=c1) == 40000
    c2 = k.ok("b", "socket")
    k.ok("b", "connect", sock=c2, addr="127.0.0.1", port=7002)
    assert k.ok("b", "getsockname", sock=c2) == 40000
    c3 = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c3, addr="127.0.0.1", port=7001) == "EADDRNOTAVAIL"
    _, e = bind(k, "b", port=0)
    assert e == "EADDRINUSE"
    fd = k.ok("b", "socket")
    assert k.err("b", "listen", sock=fd) == "EADDRINUSE"


def test_connect_even_ports_first():
    # __inet_hash_connect(): ports of low's parity first (measured 40/40 even)
    k = K()
    k.server("a", 7001, backlog=100)
    ports = []
    for _ in range(40):
        c = k.ok("b", "socket")
        k.ok("b", "connect", sock=c, addr="127.0.0.1", port=7001)
        ports.append(k.ok("b", "getsockname", sock=c))
    assert all(p % 2 == 0 for p in ports)


def test_reserved_ports_skipped():
    # inet_is_local_reserved_port(): both allocators skip reserved ports
    k2 = K(ip_local_port_range=(40000, 40003), ip_local_reserved_ports=[40001, 40003])
    got = set()
    for _ in range(2):
        fd, e = bind(k2, port=0)
        assert e is None
        got.add(k2.ok("a", "getsockname", sock=fd))
    assert got == {40000, 40002}
    assert bind(k2, port=0)[1] == "EADDRINUSE"
    # an explicit bind to a reserved port works
    assert bind(k2, port=40001)[1] is None


def test_bind_no_port_defers_to_connect():
    # IP_BIND_ADDRESS_NO_PORT: two such sockets share 40000 to two destinations (measured §3)
    k = K(ip_local_port_range=(40000, 40000))
    k.server("a", 7001)
    k.server("a", 7002)
    for dport in (7001, 7002):
        fd = k.ok("b", "socket")
        k.ok("b", "setsockopt", sock=fd, opt="IP_BIND_ADDRESS_NO_PORT", value=1)
        k.ok("b", "bind", sock=fd, addr="127.0.0.1", port=0)
        assert k.ok("b", "getsockname", sock=fd) == 0
        k.ok("b", "connect", sock=fd, addr="127.0.0.1", port=dport)
        assert k.ok("b", "getsockname", sock=fd) == 40000


def test_explicit_bind_blocks_connect_autobind_until_released():
    # 6.18 "tcp: Update bind bucket state on port release" (measured §3)
    k = K(ip_local_port_range=(40020, 40020))
    k.server("a", 7001)
    k.server("a", 7002)
    k.server("a", 7003)
    x = k.ok("b", "socket")
    k.ok("b", "setsockopt", sock=x, opt="SO_REUSEADDR", value=1)
    k.ok("b", "connect", sock=x, addr="127.0.0.1", port=7001)
    y, e = bind(k, "b", port=40020, reuse=True)
    assert e is None
    z = k.ok("b", "socket")
    assert k.err("b", "connect", sock=z, addr="127.0.0.1", port=7002) == "EADDRNOTAVAIL"
    k.ok("b", "close", sock=y)
    w = k.ok("b", "socket")
    assert k.err("b", "connect", sock=w, addr="127.0.0.1", port=7003) is None
    assert k.ok("b", "getsockname", sock=w) == 40020


def test_failed_connect_releases_autobound_port():
    # tcp_set_state(TCP_CLOSE) -> inet_put_port(); connect() may be retried (measured §3)
    k = K(ip_local_port_range=(40000, 40000))
    c = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=7009) == "ECONNREFUSED"
    assert k.k.bhash.buckets == {}
    k.server("a", 7009)
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=7009) is None
