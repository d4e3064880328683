"""fs/select.c: poll(2) of one file descriptor."""

from __future__ import annotations

from . import buffers
from .handles import Process
from .rules import fact, rule
from .sockets import RCV_SHUTDOWN, Sock
from .tcp import POLL_BITS, POLLNVAL, POLLOUT, POLLWRNORM, poll_revents, tcp_poll
from .tcp_states import State


class Select:
    """Kernel functions of fs/select.c (a part of :class:`~.stack.Kernel`)."""

    @rule("sys.poll", "fd")
    def do_pollfd(self, p: Process, sock: int, events: list[str] | None = None) -> list[str]:
        """do_pollfd() in fs/select.c: POLLNVAL for a closed fd, else the file's poll mask filtered by the events asked."""
        want = 0
        for e in events or []:
            want |= POLL_BITS[e]
        f = p.files.fds.get(sock)
        if f is None or f.sock is None:
            fact(f"fd {sock} is not open in this process")
            mask = POLLNVAL
        else:
            mask = self.sock_poll(f.sock)
        rev = poll_revents(mask, want)
        return [n for n, b in POLL_BITS.items() if rev & b]

    def sock_poll(self, sk: Sock) -> int:
        """sock_poll() in net/socket.c: the protocol's poll (tcp_poll) with the socket's state read out."""
        if sk.kind != "tcp":
            return POLLOUT | POLLWRNORM  # datagram_poll(): nothing queued, room to send
        shutdown = sk.shutdown | (RCV_SHUTDOWN if sk.done else 0)
        readable = sk.rcv_q > 0 and sk.rcv_q >= sk.rcvlowat
        cap = buffers.send_capacity(sk.sndbuf)
        writeable = sk.snd_q * 3 <= cap * 2  # sk_stream_is_writeable(): free space >= half the queued
        return tcp_poll(State(sk.tcp_state), shutdown, readable, writeable, bool(sk.err),
                        bool(sk.accept_q))
