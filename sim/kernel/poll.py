"""Readiness of a socket as poll() reports it: what an event loop (Qt's socket notifiers) waits for.

Pure rule over the socket object; the Qt layer asks it which notifier would fire.
"""

from __future__ import annotations

from .rules import rule
from .sockets import Sock
from .tcp import State

POLLIN, POLLOUT, POLLERR, POLLHUP = 0x1, 0x4, 0x8, 0x10
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2


@rule("poll.tcp_poll", "sockets", "qt", "minor")  # consulted by the Qt layer's event loops
def tcp_poll(sk: Sock) -> int:
    """tcp_poll() in net/ipv4/tcp.c: listener readable when its accept queue is not empty; POLLERR for a pending error; POLLOUT once connected."""
    if sk.tcp_state == State.LISTEN:
        return POLLIN if sk.accept_q else 0  # inet_csk_listen_poll()
    mask = POLLERR if sk.err else 0
    st = State(sk.tcp_state)
    if sk.shutdown == (RCV_SHUTDOWN | SEND_SHUTDOWN) or st == State.CLOSE:
        mask |= POLLHUP
    if sk.shutdown & RCV_SHUTDOWN or sk.done:
        mask |= POLLIN  # end of file is readable
    if st in (State.SYN_SENT, State.SYN_RECV):
        return mask  # a connect in progress is not writable yet
    if sk.rcv_q > 0:
        mask |= POLLIN
    if not sk.shutdown & SEND_SHUTDOWN and st != State.CLOSE and sk.sndbuf - sk.snd_q > 0:
        mask |= POLLOUT
    elif st == State.CLOSE:
        mask |= POLLOUT  # tcp_poll(): a closed socket is writable (the error is in SO_ERROR)
    return mask
