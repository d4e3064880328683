"""TCP state machine, RST paths, accept queue: tcp_input.c / tcp.c rules and linux.md §4, §6."""

import pytest

from kharness import K
from sim.kernel.tcp_states import TRANSITIONS, State


def test_active_closer_gets_time_wait_server_side():
    # linux.md §4 "Who gets TIME_WAIT", measured: server active close -> TIME_WAIT on the listening port
    k = K()
    lst, s, c = k.pair()
    k.ok("a", "close", sock=s)
    assert k.states(8080) == {"local": ["FIN_WAIT2", "LISTEN"], "remote": ["CLOSE_WAIT"]}
    k.ok("b", "close", sock=c)
    assert k.states(8080) == {"local": ["LISTEN", "TIME_WAIT"], "remote": []}
    assert k.k.sockstat()["tw"] == 1


def test_client_closes_first_time_wait_on_ephemeral_port():
    k = K()
    lst, s, c = k.pair()
    k.ok("b", "close", sock=c)
    k.ok("a", "close", sock=s)
    assert k.states(8080) == {"local": ["LISTEN"], "remote": ["TIME_WAIT"]}


def test_last_ack_then_close():
    # passive side: CLOSE_WAIT -> (close) LAST_ACK -> (ACK) CLOSE
    k = K()
    lst, s, c = k.pair()
    k.ok("b", "shutdown", sock=c, how="SHUT_WR")
    assert k.states(8080)["local"] == ["CLOSE_WAIT", "LISTEN"]
    k.ok("a", "shutdown", sock=s, how="SHUT_WR")
    # both fds still open: client TIME_WAIT minisock, server's LAST_ACK got its ACK -> CLOSE
    assert k.states(8080) == {"local": ["LISTEN"], "remote": ["TIME_WAIT"]}


def test_connect_refused_without_listener():
    # tcp_v4_send_reset() answers the SYN; tcp_reset() in SYN_SENT -> ECONNREFUSED
    k = K()
    c = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=9) == "ECONNREFUSED"


def test_close_with_unread_data_resets():
    # __tcp_close(): unread data -> RST, no TIME_WAIT; peer recv ECONNRESET then 0, send EPIPE (measured §4)
    k = K()
    lst, s, c = k.pair()
    assert k.ok("b", "send", sock=c, bytes=100) == 100
    k.ok("a", "close", sock=s)
    assert k.k.mib.get("TCPAbortOnClose") == 1
    assert k.states(8080) == {"local": ["LISTEN"], "remote": []}
    assert k.err("b", "recv", sock=c, bytes=10) == "ECONNRESET"
    assert k.ok("b", "recv", sock=c, bytes=10) == 0
    assert k.err("b", "send", sock=c, bytes=10) == "EPIPE"


def test_linger_zero_resets():
    # SO_LINGER {1,0}: tcp_disconnect() RST; peer send -> ECONNRESET then EPIPE (measured §4)
    k = K()
    lst, s, c = k.pair()
    k.ok("a", "setsockopt", sock=s, opt="SO_LINGER", value=(1, 0))
    k.ok("a", "close", sock=s)
    assert k.k.sockstat()["tw"] == 0
    assert k.err("b", "send", sock=c, bytes=10) == "ECONNRESET"
    assert k.err("b", "send", sock=c, bytes=10) == "EPIPE"


def test_send_to_closed_peer_gets_rst_then_epipe():
    # measured §4: peer closed normally, we keep sending: first send ok, then EPIPE; recv -> 0
    k = K()
    lst, s, c = k.pair()
    k.ok("a", "close", sock=s)
    assert k.ok("b", "send", sock=c, bytes=10) == 10
    assert k.ok("b", "recv", sock=c, bytes=10) == 0
    assert k.err("b", "send", sock=c, bytes=10) == "EPIPE"


def test_backlog_holds_n_plus_one():
    # sk_acceptq_is_full(): sk_ack_backlog > sk_max_ack_backlog (measured backlog 0/1/3 -> 1/2/4)
    for backlog, fits in ((0, 1), (1, 2), (3, 4)):
        k = K()
        k.server("a", 8080, backlog=backlog)
        states = []
        for _ in range(fits + 1):
            c = k.ok("b", "socket", nonblock=True)
            assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) == "EINPROGRESS"
        st = k.states(8080)["remote"]
        assert st.count("ESTABLISHED") == fits and st.count("SYN_SENT") == 1, (backlog, st)


def test_somaxconn_caps_backlog_and_negative_means_somaxconn():
    # __sys_listen(): (unsigned)backlog > somaxconn -> somaxconn (measured §6)
    k = K(somaxconn=2)
    fd = k.server("a", 8080, backlog=100)
    assert k.k.procs["a"].files.fds[fd].sock.backlog == 2
    fd2 = k.ok("a", "socket")
    k.ok("a", "bind", sock=fd2, addr="127.0.0.1", port=8081)
    k.ok("a", "listen", sock=fd2, backlog=-1)
    assert k.k.procs["a"].files.fds[fd2].sock.backlog == 2


def test_syn_retries_time_out():
    # tcp_syn_retries with exponential backoff from 1 s: TCP_SYNCNT=1 -> ETIMEDOUT at ~3 s (measured §6)
    k = K()
    k.server("a", 8080, backlog=0)
    c0 = k.ok("b", "socket")
    k.ok("b", "connect", sock=c0, addr="127.0.0.1", port=8080)  # fills the queue
    c = k.ok("b", "socket")
    k.ok("b", "setsockopt", sock=c, opt="TCP_SYNCNT", value=1)
    out = k("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    assert out.blocked is not None
    k.advance(2.9)
    assert k.resume("b").blocked is not None
    k.advance(0.2)
    assert k.resume("b").err == "ETIMEDOUT"


def test_accept_after_queue_drains_lets_retransmitted_syn_in():
    k = K()
    lst = k.server("a", 8080, backlog=0)
    c0 = k.ok("b", "socket")
    k.ok("b", "connect", sock=c0, addr="127.0.0.1", port=8080)
    c = k.ok("b", "socket")
    assert k("b", "connect", sock=c, addr="127.0.0.1", port=8080).blocked is not None
    k.ok("a", "accept", sock=lst)
    k.advance(1.0)  # SYN retransmission
    assert k.resume("b").err is None


def test_wrong_state_errors():
    # inet_listen(), inet_csk_accept(), __inet_stream_connect(), tcp_sendmsg/recvmsg, inet_shutdown()
    k = K()
    fd = k.ok("a", "socket")
    assert k.err("a", "accept", sock=fd) == "EINVAL"
    assert k.err("a", "send", sock=fd, bytes=1) == "EPIPE"
    assert k.err("a", "recv", sock=fd, bytes=1) == "ENOTCONN"
    assert k.err("a", "shutdown", sock=fd, how="SHUT_RDWR") == "ENOTCONN"
    lst, s, c = k.pair()
    assert k.err("b", "listen", sock=c) == "EINVAL"
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) == "EISCONN"
    assert k.err("a", "connect", sock=lst, addr="127.0.0.1", port=8080) == "EISCONN"
    assert k.err("a", "recv", sock=lst, bytes=1) == "ENOTCONN"


@pytest.mark.parametrize("family,type_,proto,want", [
    ("AF_INET", "SOCK_STREAM", 0, None),
    ("AF_INET", "SOCK_STREAM", "IPPROTO_TCP", None),
    ("AF_INET", "SOCK_STREAM", "IPPROTO_UDP", "EPROTONOSUPPORT"),
    ("AF_INET", "SOCK_DGRAM", "IPPROTO_TCP", "EPROTONOSUPPORT"),
    ("AF_INET6", "SOCK_DGRAM", 0, None),
    ("AF_INET", "SOCK_SEQPACKET", 0, "ESOCKTNOSUPPORT"),
    ("AF_INET", "SOCK_RAW", 0, "EPROTONOSUPPORT"),
])
def test_socket_validation(family, type_, proto, want):
    # inet_create(): (type, protocol) must match an inetsw entry; no entry for the type -> ESOCKTNOSUPPORT
    k = K()
    assert k.err("a", "socket", family=family, type=type_, protocol=proto) == want


def test_listen_on_udp_is_eopnotsupp():
    # sock_no_listen(): EOPNOTSUPP
    k = K()
    fd = k.ok("a", "socket", type="SOCK_DGRAM")
    assert k.err("a", "listen", sock=fd) == "EOPNOTSUPP"


def test_nonblocking_connect_then_second_connect():
    # __inet_stream_connect(): EINPROGRESS; once established a second connect returns 0, a third EISCONN
    k = K()
    k.server("a", 8080)
    c = k.ok("b", "socket", nonblock=True)
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) == "EINPROGRESS"
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) is None
    assert k.err("b", "connect", sock=c, addr="127.0.0.1", port=8080) == "EISCONN"


def test_shutdown_rd_on_listener_stops_it():
    # inet_shutdown() on LISTEN with RCV_SHUTDOWN -> tcp_disconnect(); queued children reset (measured §6)
    k = K()
    lst = k.server("a", 8080)
    c = k.ok("b", "socket")
    k.ok("b", "connect", sock=c, addr="127.0.0.1", port=8080)
    k.ok("a", "shutdown", sock=lst, how="SHUT_RD")
    assert k.err("a", "accept", sock=lst) == "EINVAL"
    assert k.err("b", "recv", sock=c, bytes=1) == "ECONNRESET"
    c2 = k.ok("b", "socket")
    assert k.err("b", "connect", sock=c2, addr="127.0.0.1", port=8080) == "ECONNREFUSED"
    assert k.err("a", "listen", sock=lst) is None


def test_fin_wait2_orphan_times_out():
    # tcp_fin_time(): an orphaned FIN_WAIT2 becomes a minisock for tcp_fin_timeout (measured §4, fin_timeout=2)
    k = K(tcp_fin_timeout=2)
    lst, s, c = k.pair()
    k.ok("a", "close", sock=s)
    assert "FIN_WAIT2" in k.states(8080)["local"]
    assert k.k.sockstat()["tw"] == 1
    k.advance(2.1)
    assert k.states(8080)["local"] == ["LISTEN"]
    # the peer's later send gets RST -> EPIPE (CLOSE_WAIT)
    assert k.ok("b", "send", sock=c, bytes=5) == 5
    assert k.err("b", "send", sock=c, bytes=5) == "EPIPE"


def test_open_fin_wait2_never_times_out():
    # measured §4: a FIN_WAIT2 whose fd is still open (shutdown(SHUT_WR)) never times out
    k = K(tcp_fin_timeout=2)
    lst, s, c = k.pair()
    k.ok("a", "shutdown", sock=s, how="SHUT_WR")
    k.advance(10)
    assert "FIN_WAIT2" in k.states(8080)["local"]


def test_simultaneous_open_self_connect():
    # RFC 9293 simultaneous open: a socket connecting to its own address and port gets ESTABLISHED
    k = K()
    fd = k.ok("a", "socket")
    k.ok("a", "bind", sock=fd, addr="127.0.0.1", port=45000)
    assert k.err("a", "connect", sock=fd, addr="127.0.0.1", port=45000) is None
    assert k.states(45000)["local"] == ["ESTABLISHED"]


def test_every_state_has_a_transition():
    states = {s for s, _ in TRANSITIONS} | {t for t, _ in TRANSITIONS.values()}
    assert states == set(State)
