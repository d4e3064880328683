"""The TCP state machine as one table: (state, event) -> (new state, actions).

States carry the numbers /proc/net/tcp prints (include/net/tcp_states.h). The table is the
single source of truth: the kernel model applies it (``transition``), the state diagram in the
docs and the networkx graph are drawn from it, and a test walks it (every state reachable from
CLOSE, every state can reach CLOSE).

Sources: RFC 9293 section 3.3.2; net/ipv4/tcp.c tcp_close_state() new_state[] (close side);
net/ipv4/tcp_input.c tcp_rcv_state_process(), tcp_rcv_synsent_state_process(), tcp_fin(),
tcp_reset() (receive side); net/ipv4/tcp_minisocks.c tcp_timewait_state_process().
"""

from __future__ import annotations

from enum import IntEnum

from .errors import SysError
from .rules import fact, rule
from .tracepoints import InetSockSetState


class State(IntEnum):
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11


S = State
STATES: dict[int, State] = {s.value: s for s in State}  # a stored state number -> its State (no enum call)

# Events: application calls, received segments, timers, and the kernel's own steps.
APP_EVENTS = ("connect", "listen", "close", "shutdown_wr", "abort", "disconnect", "listen_fail")
SEG_EVENTS = ("rcv_syn", "rcv_synack", "rcv_ack", "rcv_fin", "rcv_finack", "rcv_rst", "rcv_data_after_close")
TIMER_EVENTS = ("syn_timeout", "fin_wait2_timeout", "time_wait_timeout")
KERNEL_EVENTS = ("conn_request", "tw_hashdance", "tw_recycle")

# Rows no run of the model can take were removed (they are listed in docs/teaching.md with the
# reason); a test requires every row here to be taken by a bundled scenario.
# (state, event) -> (new_state, actions). Actions are interpreted by the kernel (tcp_apply() in tcp.py).
TRANSITIONS: dict[tuple[State, str], tuple[State, tuple[str, ...]]] = {
    # opening
    (S.CLOSE, "connect"): (S.SYN_SENT, ("send_syn", "arm_syn_timer")),
    (S.CLOSE, "listen"): (S.LISTEN, ()),
    (S.LISTEN, "rcv_syn"): (S.LISTEN, ("make_request", "send_synack")),
    (S.LISTEN, "close"): (S.CLOSE, ("listen_stop",)),
    (S.SYN_SENT, "rcv_synack"): (S.ESTABLISHED, ("send_ack", "wake")),
    (S.SYN_SENT, "rcv_syn"): (S.SYN_RECV, ("send_synack",)),  # simultaneous open
    (S.SYN_SENT, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),  # ECONNREFUSED
    (S.SYN_SENT, "syn_timeout"): (S.CLOSE, ("set_err", "wake")),  # ETIMEDOUT
    (S.SYN_SENT, "close"): (S.CLOSE, ()),
    (S.SYN_SENT, "abort"): (S.CLOSE, ()),
    (S.SYN_RECV, "rcv_ack"): (S.ESTABLISHED, ("wake",)),
    (S.SYN_RECV, "rcv_synack"): (S.ESTABLISHED, ("send_ack", "wake")),  # simultaneous open
    # established
    (S.ESTABLISHED, "close"): (S.FIN_WAIT1, ("send_fin",)),
    (S.ESTABLISHED, "shutdown_wr"): (S.FIN_WAIT1, ("send_fin",)),
    (S.ESTABLISHED, "rcv_fin"): (S.CLOSE_WAIT, ("send_ack", "wake")),
    (S.ESTABLISHED, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),  # ECONNRESET
    (S.ESTABLISHED, "abort"): (S.CLOSE, ("send_rst",)),
    # active close
    (S.FIN_WAIT1, "rcv_ack"): (S.FIN_WAIT2, ("fin_wait2",)),
    (S.FIN_WAIT1, "rcv_fin"): (S.CLOSING, ("send_ack",)),  # simultaneous close
    (S.FIN_WAIT1, "rcv_finack"): (S.TIME_WAIT, ("send_ack", "time_wait")),  # a FIN that acknowledges ours (delayed ACK piggybacked)
    (S.FIN_WAIT1, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),
    (S.FIN_WAIT1, "abort"): (S.CLOSE, ("send_rst",)),
    (S.FIN_WAIT1, "rcv_data_after_close"): (S.CLOSE, ("set_err", "send_rst")),  # tcp_reset() on itself
    (S.FIN_WAIT1, "close"): (S.FIN_WAIT1, ()),
    (S.FIN_WAIT2, "rcv_fin"): (S.TIME_WAIT, ("send_ack", "time_wait")),
    (S.FIN_WAIT2, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),
    (S.FIN_WAIT2, "fin_wait2_timeout"): (S.CLOSE, ()),
    (S.FIN_WAIT2, "abort"): (S.CLOSE, ("send_rst",)),
    (S.FIN_WAIT2, "rcv_data_after_close"): (S.CLOSE, ("set_err", "send_rst")),  # tcp_reset() on itself
    (S.FIN_WAIT2, "close"): (S.FIN_WAIT2, ("fin_wait2",)),
    (S.CLOSING, "rcv_ack"): (S.TIME_WAIT, ("time_wait",)),
    (S.CLOSING, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),  # tcp_reset(): ECONNRESET
    (S.CLOSING, "abort"): (S.CLOSE, ("send_rst",)),
    (S.CLOSING, "close"): (S.CLOSING, ()),
    (S.TIME_WAIT, "time_wait_timeout"): (S.CLOSE, ()),
    (S.TIME_WAIT, "rcv_syn"): (S.CLOSE, ("to_listener",)),  # TCP_TW_SYN: a newer SYN takes over
    # passive close
    (S.CLOSE_WAIT, "close"): (S.LAST_ACK, ("send_fin",)),
    (S.CLOSE_WAIT, "shutdown_wr"): (S.LAST_ACK, ("send_fin",)),
    (S.CLOSE_WAIT, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),  # EPIPE
    (S.CLOSE_WAIT, "abort"): (S.CLOSE, ("send_rst",)),
    (S.LAST_ACK, "rcv_ack"): (S.CLOSE, ("wake",)),
    (S.LAST_ACK, "rcv_rst"): (S.CLOSE, ("set_err", "wake")),  # tcp_reset(): ECONNRESET
    (S.LAST_ACK, "abort"): (S.CLOSE, ("send_rst",)),
    (S.LAST_ACK, "close"): (S.LAST_ACK, ()),
    # writes outside the segment/close paths (each names the kernel function that makes it)
    (S.CLOSE, "conn_request"): (S.SYN_RECV, ()),  # tcp_conn_request(): a request sock for a SYN
    (S.LISTEN, "listen_fail"): (S.CLOSE, ()),  # inet_csk_listen_start(): the port re-check failed
    (S.CLOSE, "disconnect"): (S.CLOSE, ()),  # tcp_disconnect() after a failed connect()
    (S.LISTEN, "disconnect"): (S.CLOSE, ("listen_stop",)),  # shutdown(SHUT_RD) on a listener
    (S.SYN_SENT, "disconnect"): (S.CLOSE, ()),  # shutdown() during a connect()
    (S.TIME_WAIT, "tw_hashdance"): (S.CLOSE, ()),  # tcp_time_wait(): a minisock takes over, tcp_done()
    (S.FIN_WAIT2, "tw_hashdance"): (S.CLOSE, ()),  # tcp_time_wait() for an orphaned FIN_WAIT2
    (S.TIME_WAIT, "tw_recycle"): (S.CLOSE, ()),  # __inet_check_established(): connect() reuses the 4-tuple
}


@rule("tcp.transition", "tcp", "minor")
def transition(state: State, event: str) -> tuple[State, tuple[str, ...]]:
    """RFC 9293 3.3.2; tcp_close_state() net/ipv4/tcp.c; tcp_rcv_state_process() net/ipv4/tcp_input.c."""
    try:
        new, actions = TRANSITIONS[(state, event)]
    except KeyError:
        raise KeyError(f"no transition for {state.name} on {event}") from None
    if new != state:
        fact(f"{state.name} --{event}--> {new.name}")
    return new, actions


@rule("tcp.reset_errno", "tcp", "minor")
def reset_errno(state: State) -> str:
    """tcp_reset() in net/ipv4/tcp_input.c: SYN_SENT->ECONNREFUSED, CLOSE_WAIT->EPIPE, else ECONNRESET."""
    if state == S.SYN_SENT:
        return "ECONNREFUSED"
    if state == S.CLOSE_WAIT:
        return "EPIPE"
    return "ECONNRESET"


def check_state_write(event: object) -> None:
    """A subscriber (``Kernel.subscribe``) that fails on a TCP state write that is no row of the table.

    The suite installs it on every kernel it makes: each ``inet_sock_set_state`` event must be the
    row ``(old, event)`` of :data:`TRANSITIONS` leading to ``new``.
    """
    if event.__class__ is InetSockSetState:
        row = TRANSITIONS.get((State(event.old), event.event))
        if row is None or row[0] != event.new:
            raise AssertionError(f"TCP state write {State(event.old).name} --{event.event}--> "
                                 f"{State(event.new).name} is not a row of the transition table")


def has_transition(state: State, event: str) -> bool:
    return (state, event) in TRANSITIONS


def check(cond: bool, err: str, rule_id: str) -> None:
    if not cond:
        raise SysError(err, rule_id)
