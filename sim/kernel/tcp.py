"""net/ipv4/tcp.c: the state writer, close/disconnect, send/recv, ioctl."""

from __future__ import annotations

from typing import Any

from . import buffers, tcp_states
from .errors import Block, SysError
from .handles import Process
from .ports import bind2_key
from .rules import fact, rule
from .skbuff import ACK, RST, SYN
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, Sock
from .tcp_states import STATES, State
from .timewait import TimeWaitSock
from .tracepoints import BufferCharged, BufferUncharged, InetSockSetState


class Tcp:
    """Kernel functions of net/ipv4/tcp.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_set_state(self, sk: Any, new: State, event: str, unhash: bool = True) -> None:
        """tcp_set_state() in net/ipv4/tcp.c: the only writer of a TCP state; CLOSE unhashes and drops an autobound port (kept if SOCK_BINDPORT_LOCK).

        Every write is the row ``(old state, event)`` of the transition table
        (sim/kernel/tcp_states.py) and is announced as :class:`~.tracepoints.InetSockSetState`.
        ``sk`` may be a TIME_WAIT minisock: its substate is written (CLOSE: it is being killed).
        ``unhash=False`` is a bare state store (inet_sk_set_state()), for the callers that
        handle the hashes themselves: tcp_time_wait() and a failed inet_csk_listen_start().
        """
        if sk.__class__ is TimeWaitSock:
            old = sk.substate
            if new != State.CLOSE:
                sk.substate = int(new)
            if self.probes:
                self.emit(InetSockSetState(sk, old, int(new), event))
            return
        old = sk.tcp_state
        sk.tcp_state = int(new)
        if new == State.SYN_SENT:
            sk.sent_syn = True
        if self.probes:
            self.emit(InetSockSetState(sk, old, int(new), event))
        self.woken.add(sk)
        if new == State.ESTABLISHED and old != State.ESTABLISHED:
            self.tcp_init_buffer_space(sk)
        if new == State.CLOSE and unhash:
            self.inet_unhash(sk)
            if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
                self.listeners[sk.lport].remove(sk)
                if not self.listeners[sk.lport]:
                    del self.listeners[sk.lport]
            if sk.in_bhash and not sk.bindport_lock and not sk.dead:
                # inet_put_port(): inet_num = 0; getsockname() still shows inet_sport
                self.inet_put_port(sk.lport, sk)
                sk.in_bhash = False
                sk.lport = 0
                sk.connect_bind = False  # __inet_put_port() clears SOCK_CONNECT_BIND
        if new == State.ESTABLISHED and sk.established_at is None:
            sk.established_at = self.now

    def tcp_transition(self, sk: Sock, event: str) -> None:
        """Apply the transition-table row for ``sk``'s state and ``event``: new state, then actions."""
        new, actions = tcp_states.transition(STATES[sk.tcp_state], event)
        self.tcp_apply(sk, new, actions, event)

    def tcp_apply(self, sk: Sock, new: State, actions: tuple[str, ...], event: str) -> None:
        old = STATES[sk.tcp_state]
        if "set_err" in actions:
            sk.err = ("ETIMEDOUT" if event == "syn_timeout" else tcp_states.reset_errno(old))
        if "send_rst" in actions:
            # the RST answers with the connection's addresses, before CLOSE releases the port
            self.tcp_transmit_skb(sk, RST)
        if new != old:
            self.tcp_set_state(sk, new, event)
        elif self.probes:  # a row that keeps the state: no write, but observers see the row
            self.emit(InetSockSetState(sk, int(old), int(new), event))
        for a in actions:
            if a == "send_syn":
                sk.syn_unacked = True
                self.tcp_connect_init(sk)
                sk.isn = self.secure_tcp_seq()
                self.tcp_transmit_skb(sk, SYN)
            elif a == "arm_syn_timer":
                sk.syn_gen += 1
                sk.syn_tries = 0
                sk.syn_start = self.now
                self.inet_csk_reset_xmit_timer("syn", 1.0, sk, sk.syn_gen)
            elif a == "send_synack":
                self.tcp_transmit_skb(sk, SYN | ACK)
            elif a == "send_ack":
                if event == "rcv_fin" and old in (State.ESTABLISHED, State.SYN_RECV):
                    self.tcp_send_delayed_ack(sk)
                elif event == "rcv_synack" and old == State.SYN_RECV:
                    # simultaneous open: the SYN-ACK repeats the SYN already taken, so the ACK
                    # reports it as a duplicate (tcp_send_dupack() -> D-SACK); a FIN going out
                    # at once carries the acknowledgement instead
                    sk.dsack = True
                    self.tcp_send_delayed_ack(sk)
                else:
                    self.tcp_transmit_skb(sk, ACK)
            elif a == "send_fin":
                sk.fin_pending = True
                self.tcp_push(sk)
            elif a == "send_rst":
                sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
                self.tcp_write_queue_purge(sk)
            elif a == "listen_stop":
                self.inet_csk_listen_stop(sk)
            elif a == "time_wait":
                self.tcp_time_wait(sk, State.TIME_WAIT, self.TIME_WAIT_LEN)
            elif a == "fin_wait2":
                sk.shutdown |= SEND_SHUTDOWN
                if sk.dead:
                    self.tcp_close_orphan(sk)
        if new == State.CLOSE and sk.dead:
            self.inet_csk_destroy_sock(sk)

    def sk_mem_charge(self, nbytes: int) -> None:
        """sk_mem_charge() (include/net/sock.h): buffer bytes are charged to the TCP memory pool."""
        self.pool.charge(nbytes)
        if self.probes:
            self.emit(BufferCharged(nbytes))

    def sk_mem_uncharge(self, nbytes: int) -> None:
        """sk_mem_uncharge() (include/net/sock.h): buffer bytes go back to the TCP memory pool."""
        self.pool.uncharge(nbytes)
        if self.probes:
            self.emit(BufferUncharged(nbytes))

    def tcp_write_queue_purge(self, sk: Sock) -> None:
        """tcp_write_queue_purge() in net/ipv4/tcp.c: the unsent and unacknowledged data is freed
        (its memory uncharged, packets_out 0), but write_seq, snd_nxt and snd_una stay, so SIOCOUTQ
        (write_seq - snd_una) still counts it (measured: Linux 6.18,
        scenarios/regressions/send-queue-after-reset.yaml)."""
        if sk.snd_q:
            self.sk_mem_uncharge(sk.snd_q)
            sk.purged += sk.snd_q

    def tcp_connect_init(self, sk: Sock) -> None:
        """tcp_connect_init() in net/ipv4/tcp_output.c: a new attempt starts its sequence space
        afresh (snd_una = snd_nxt = write_seq, the ISN; rcv_nxt from the peer's SYN), so nothing of
        an earlier connection on the same socket (its data, its FIN) shifts the new numbers."""
        sk.write_seq = sk.snd_nxt = sk.snd_una = sk.snd_edge = sk.purged = sk.seq_gap = 0
        sk.rcv_nxt = sk.pushed_seq = 0
        sk.fin_pending = sk.fin_sent = sk.fin_acked = False
        sk.psh_marks.clear()

    @rule("tcp.close", "tcp")
    def tcp_close(self, sk: Sock, exiting: bool) -> None:
        """__tcp_close() in net/ipv4/tcp.c: unread data -> RST; SO_LINGER {1,0} -> RST; else FIN."""
        sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
        if sk.kind != "tcp":
            (self.udp_ports if sk.kind == "udp" else self.bhash).remove(sk.lport, sk)
            return
        st = sk.tcp_state
        sk.dead = True
        if st == State.LISTEN:
            self.tcp_transition(sk, "close")
            self.inet_csk_destroy_sock(sk)
            return
        unread = self.tcp_rcv_queue_purge(sk)
        if st == State.CLOSE:
            self.inet_csk_destroy_sock(sk)
            return
        if unread:
            fact(f"{unread} unread byte(s) in the receive queue: the connection is reset (RFC 2525 2.17)")
            self._mib("TCPAbortOnClose")
            self.tcp_transition(sk, "abort")
        elif sk.linger[0] and sk.linger[1] == 0:
            fact("SO_LINGER {1, 0}: abortive close, RST instead of FIN")
            self._mib("TCPAbortOnData")
            self.tcp_transition(sk, "abort")
        else:
            self.tcp_transition(sk, "close")
        st = sk.tcp_state
        if st == State.FIN_WAIT2:
            self.tcp_close_orphan(sk)
            return
        if st == State.CLOSE:
            self.inet_csk_destroy_sock(sk)

    def tcp_close_orphan(self, sk: Sock) -> None:
        if sk.linger2 < 0:
            self.tcp_transition(sk, "abort")  # TCP_LINGER2 < 0: RST at once (tcp_close())
            self.inet_csk_destroy_sock(sk)
            return
        tmo = max(float(self.sysctls["tcp_fin_timeout"]), 0.7)
        self.tcp_time_wait(sk, State.FIN_WAIT2, tmo)

    def tcp_disconnect(self, sk: Sock) -> None:
        """tcp_disconnect(): back to CLOSE; a listener drops its queue, a connection is reset."""
        st = sk.tcp_state
        if st == State.LISTEN:
            self.inet_csk_listen_stop(sk)
            if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
                self.listeners[sk.lport].remove(sk)
                if not self.listeners[sk.lport]:
                    del self.listeners[sk.lport]
        elif st in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.FIN_WAIT2,
                    State.SYN_RECV, State.LAST_ACK, State.CLOSING):
            self.tcp_transmit_skb(sk, RST)
            sk.err = "ECONNRESET"  # tcp_need_reset(): RST sent, sk_err = ECONNRESET
        elif st == State.SYN_SENT:
            sk.err = "ECONNRESET"  # an aborted connection attempt reports ECONNRESET
        self.tcp_set_state(sk, State.CLOSE, "disconnect")
        self.inet_unhash(sk)
        self.tcp_rcv_queue_purge(sk)
        self.tcp_write_queue_purge(sk)
        sk.seq_gap += sk.max_window + 2  # tcp_disconnect(): write_seq += max_window + 2 (listeners too)
        if sk.in_bhash and not sk.bindport_lock:
            self.inet_put_port(sk.lport, sk)
            sk.in_bhash = False
            sk.lport = 0
            sk.connect_bind = False
        sk.raddr, sk.rport = None, 0
        sk.done = False
        sk.shutdown = 0
        if not sk.bindaddr_lock:
            # inet_reset_saddr(): an address that bind() did not choose is forgotten
            old_key = bind2_key(sk)
            sk.set_local("::" if sk.family == 6 else "0.0.0.0", sk.lport)
            if sk.in_bhash and sk.kind == "tcp":
                self.bhash.move(sk.lport, sk, old_key)  # inet_bhash2_reset_saddr()

    @rule("sys.send", "buffers")
    def tcp_sendmsg(self, p: Process, sock: int, bytes: int, flags: list[str] | None = None) -> int:
        """tcp_sendmsg_locked() in net/ipv4/tcp.c: queue into the send buffer; wait or EAGAIN when full (sk_stream_wait_memory)."""
        f, sk = self.sockfd_lookup(p, sock)
        nonblock = f.nonblock or "MSG_DONTWAIT" in (flags or [])
        if sk.kind != "tcp":
            raise SysError("EDESTADDRREQ", "sys.send")
        return self.tcp_sendmsg_locked(sk, bytes, nonblock, 0)

    def tcp_sendmsg_locked(self, sk: Sock, total: int, nonblock: bool, copied: int) -> int:
        self.lock_sock(sk)
        st = sk.tcp_state
        if st not in (State.ESTABLISHED, State.CLOSE_WAIT):
            if sk.err:
                err, sk.err = sk.err, None
                raise SysError(err, "sys.send")
            if st not in (State.SYN_SENT, State.SYN_RECV):
                fact(f"the socket is {State(st).name}: not connected (sk_stream_wait_connect)")
                raise SysError("EPIPE", "sys.send")
            if nonblock:
                raise SysError("EAGAIN", "sys.send")
            raise Block(lambda now: self.tcp_sendmsg_locked(sk, total, nonblock, copied), "send: connecting", sk)
        if sk.err or sk.shutdown & SEND_SHUTDOWN:
            if copied:
                return copied
            err = sk.err or "EPIPE"
            sk.err = None
            fact("the connection was reset" if err != "EPIPE" else "sending is shut down on this socket")
            raise SysError(err, "sys.send")
        cap = buffers.send_capacity(sk.sndbuf)
        while copied < total:
            room = cap - sk.snd_q
            if room <= 0 or not self.pool.can_charge(min(room, total - copied)):
                break
            n = min(room, total - copied)
            sk.write_seq += n
            self.sk_mem_charge(n)
            copied += n
        # ACKs for what is pushed now are processed when the call releases the socket lock
        # (release_sock() runs the backlog), so they free room only for a later call.
        if copied:
            sk.psh_marks.add(sk.write_seq)  # tcp_push(): the tail skb of a write is marked PSH
        self.tcp_push(sk, sendmsg=True)
        if copied >= total or total == 0:
            return copied
        sk.nospace = True  # SOCK_NOSPACE: the writer ran out of send buffer
        if nonblock:
            if copied:
                fact(f"send buffer full after {copied} of {total} bytes")
                return copied
            fact(f"send buffer full: {sk.snd_q} bytes queued, SO_SNDBUF {sk.sndbuf}")
            raise SysError("EAGAIN", "sys.send")
        return_val = copied
        raise Block(lambda now: self.tcp_sendmsg_locked(sk, total, nonblock, return_val), "send: the send buffer is full",
                     sk)

    @rule("sys.recv", "buffers")
    def tcp_recvmsg(self, p: Process, sock: int, bytes: int = 65536, flags: list[str] | None = None) -> int:
        """tcp_recvmsg_locked() in net/ipv4/tcp.c: data first; then EOF (SOCK_DONE), sk_err, shutdown, ENOTCONN."""
        f, sk = self.sockfd_lookup(p, sock)
        flags = flags or []
        nonblock = f.nonblock or "MSG_DONTWAIT" in flags
        if sk.kind != "tcp":
            raise SysError("EAGAIN" if nonblock else "EOPNOTSUPP", "sys.recv")
        if "MSG_OOB" in flags:
            raise SysError("EINVAL", "sys.recv")
        if "MSG_WAITALL" in flags and not nonblock:
            return self.tcp_recvmsg_waitall(sk, bytes, 0)
        return self.tcp_recvmsg_locked(sk, bytes, nonblock, "MSG_PEEK" in flags)

    def tcp_recvmsg_waitall(self, sk: Sock, want: int, got: int) -> int:
        """MSG_WAITALL (recv(2)): block until the full amount, EOF, an error, or a signal."""
        while got < want:
            if sk.rcv_q:
                got += self.tcp_recvmsg_locked(sk, want - got, True, False)
                continue
            if sk.done or sk.err or sk.shutdown & RCV_SHUTDOWN or sk.tcp_state == State.CLOSE:
                if got:
                    return got
                return self.tcp_recvmsg_locked(sk, want, True, False)
            total = got
            raise Block(lambda now: self.tcp_recvmsg_waitall(sk, want, total), "recv: MSG_WAITALL", sk)
        return got

    def tcp_recvmsg_locked(self, sk: Sock, want: int, nonblock: bool, peek: bool) -> int:
        self.lock_sock(sk)
        if sk.tcp_state == State.LISTEN:
            raise SysError("ENOTCONN", "sys.recv")
        if sk.rcv_q and want:
            n = min(want, sk.rcv_q)
            if not peek:
                sk.rcv_q -= n
                self.tcp_eat_recv_skb(sk, n)
                if n < want:
                    self.tcp_eat_fin_skb(sk)  # room left in the buffer: the read goes on to the FIN
                self.sk_mem_uncharge(n)
                self.tcp_cleanup_rbuf(sk)
            return n
        if want == 0 and sk.rcv_q:
            return 0  # an empty read of a queued skb copies nothing (tcp_recvmsg_locked)
        if sk.done:
            fact("the peer's FIN was received: end of stream")
            if not peek:
                self.tcp_eat_fin_skb(sk)
            return 0
        if sk.err:
            err, sk.err = sk.err, None
            raise SysError(err, "sys.recv")
        if sk.shutdown & RCV_SHUTDOWN:
            return 0
        if sk.tcp_state == State.CLOSE:
            fact("the socket is not connected")
            raise SysError("ENOTCONN", "sys.recv")
        if nonblock:
            fact("the receive queue is empty")
            raise SysError("EAGAIN", "sys.recv")
        raise Block(lambda now: self.tcp_recvmsg_locked(sk, want, nonblock, peek), "recv: the receive queue is empty", sk)

    def tcp_cleanup_rbuf(self, sk: Sock) -> None:
        """tcp_cleanup_rbuf() in net/ipv4/tcp.c: after a read, a window update goes out only if
        the window offered had shrunk to half the clamp or less and the read at least doubles it
        ("lots of space freed")."""
        if sk.raddr is None or sk.shutdown & RCV_SHUTDOWN or sk.tcp_state not in (
                State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2):
            return
        now = self.tcp_receive_window(sk)
        if 2 * now <= sk.window_clamp:
            new = self._tcp_select_window(sk)
            if new and new >= 2 * now:
                self.tcp_transmit_skb(sk, ACK)

    @rule("ioctl.siocq", "buffers", "minor")
    def tcp_ioctl(self, sk: Sock) -> Any:
        """tcp_ioctl() in net/ipv4/tcp.c: SIOCINQ/SIOCOUTQ; EINVAL on a listener, 0 while connecting, write_seq - snd_una."""
        if sk.tcp_state == State.LISTEN:
            return "EINVAL"
        if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
            return {"recv_q": 0, "send_q": 0}
        return {"recv_q": sk.rcv_q, "send_q": sk.snd_q + sk.purged + sk.syn_unacked + sk.seq_gap}


# ----------------------------------------------------------------------------- poll, TCP_INFO, options
# (net/ipv4/tcp.c: tcp_poll(), tcp_get_info(), tcp_set_window_clamp(), tcp_set_rcvlowat())

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND, POLLRDHUP = 0x40, 0x80, 0x100, 0x200, 0x2000
POLL_BITS = {"POLLIN": POLLIN, "POLLPRI": POLLPRI, "POLLOUT": POLLOUT, "POLLERR": POLLERR,
             "POLLHUP": POLLHUP, "POLLNVAL": POLLNVAL, "POLLRDNORM": POLLRDNORM,
             "POLLRDBAND": POLLRDBAND, "POLLWRNORM": POLLWRNORM, "POLLWRBAND": POLLWRBAND,
             "POLLRDHUP": POLLRDHUP}
SOCK_MIN_RCVBUF = 2304  # include/net/sock.h: 2048 + the truesize of an empty skb (x86_64)
TCP_FIN_TIMEOUT_MAX = 120  # include/net/tcp.h, seconds: TCP_LINGER2 is capped at this
TCP_TIMEOUT_INIT_US = 1_000_000  # include/net/tcp.h: the RTO before any RTT sample (1 s)
TCP_RTO_MIN_US = 200_000  # include/net/tcp.h: the floor of the RTO (200 ms)
TCP_INIT_CWND = 10  # include/net/tcp.h


@rule("tcp.poll", "tcp")
def tcp_poll(state: State, shutdown: int, readable: bool, writeable: bool, err: bool,
             accept_ready: bool) -> int:
    """tcp_poll() in net/ipv4/tcp.c: the ready events of a TCP socket (no wait, no urgent data)."""
    if state == State.LISTEN:
        fact("a listener is readable when its accept queue holds a connection (inet_csk_listen_poll)")
        return (POLLIN | POLLRDNORM) if accept_ready else 0
    mask = 0
    if shutdown == 3 or state == State.CLOSE:
        mask |= POLLHUP
    if shutdown & 1:
        mask |= POLLIN | POLLRDNORM | POLLRDHUP
    if state not in (State.SYN_SENT, State.SYN_RECV):
        if readable:
            mask |= POLLIN | POLLRDNORM
        if not shutdown & 2:
            if writeable:
                mask |= POLLOUT | POLLWRNORM
        else:
            mask |= POLLOUT | POLLWRNORM
    if err:
        mask |= POLLERR
    return mask


@rule("poll.revents", "fd", "minor")
def poll_revents(mask: int, events: int) -> int:
    """do_pollfd() in fs/select.c: revents are the ready events asked for, plus POLLERR and POLLHUP always."""
    return mask & (events | POLLERR | POLLHUP | POLLNVAL)


@rule("tcp.window_clamp", "sockets")
def tcp_set_window_clamp(current: int, val: int, closed: bool) -> int:
    """tcp_set_window_clamp() in net/ipv4/tcp.c: 0 only on a closed socket, else at least SOCK_MIN_RCVBUF / 2."""
    if val == 0:
        if not closed:
            fact("TCP_WINDOW_CLAMP 0 is refused once the socket has left CLOSE")
            raise SysError("EINVAL", "tcp.window_clamp")
        return 0
    new = max(val, SOCK_MIN_RCVBUF // 2)
    if new != val:
        fact(f"TCP_WINDOW_CLAMP {val} is raised to SOCK_MIN_RCVBUF/2 = {new}")
    return new


@rule("tcp.rcvlowat", "sockets")
def tcp_set_rcvlowat(val: int, rcvbuf: int, rcvbuf_locked: bool, tcp_rmem_max: int) -> int:
    """tcp_set_rcvlowat() in net/ipv4/tcp.c (via sk_setsockopt): capped at half the receive buffer (or tcp_rmem[2] / 2), 0 means 1."""
    cap = (rcvbuf if rcvbuf_locked else tcp_rmem_max) >> 1
    new = min(val, cap) or 1
    if new != val:
        fact(f"SO_RCVLOWAT {val} -> {new} (cap {cap})")
    return new


@rule("tcp.linger2", "sockets")
def tcp_set_linger2(val: int) -> int:
    """do_tcp_setsockopt() TCP_LINGER2 in net/ipv4/tcp.c: negative means -1 (no FIN_WAIT2 timer), capped at TCP_FIN_TIMEOUT_MAX (120 s)."""
    if val < 0:
        return -1
    if val > TCP_FIN_TIMEOUT_MAX:
        fact(f"TCP_LINGER2 {val} is capped at {TCP_FIN_TIMEOUT_MAX} s")
        return TCP_FIN_TIMEOUT_MAX
    return val


@rule("tcp.get_info", "tcp")
def tcp_get_info(sk: Any, fields: list[str]) -> dict[str, Any]:
    """tcp_get_info() in net/ipv4/tcp.c: state, congestion state and counters of one socket."""
    st = State(sk.tcp_state)
    synced = st not in (State.CLOSE, State.LISTEN, State.SYN_SENT) or sk.established_at is not None
    in_flight = (1 if st == State.SYN_SENT else 0) + (1 if sk.snd_nxt > sk.snd_una + sk.purged else 0) + (
        1 if sk.fin_sent and not sk.fin_acked else 0)
    info = {
        "state": st.name, "ca_state": "OPEN", "retransmits": 0, "probes": 0, "backoff": 0,
        "unacked": in_flight if st != State.LISTEN else 0, "lost": 0, "retrans": 0, "total_retrans": 0,
        "bytes_acked": sk.snd_una + (1 if synced else 0) + (1 if sk.fin_acked else 0),
        "bytes_received": sk.rcv_nxt + (1 if sk.done else 0),
        "notsent_bytes": max(0, sk.write_seq - sk.snd_nxt),
        "snd_cwnd": TCP_INIT_CWND,
        "rto": TCP_RTO_MIN_US if synced else TCP_TIMEOUT_INIT_US,
    }
    return {f: info[f] for f in fields}
