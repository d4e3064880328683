"""Winsock data calls and the host as Windows shows it (a part of :class:`~.winsock.WinsockKernel`):
send/recv/shutdown with their WSA errors, the whole-or-nothing non-blocking send, and the
netstat -ano / handles / settings / nonpaged-pool view of a Windows run.

The bracketed tags ([W5] ...) are the references of sim/kernel/winsock.py.
"""

from __future__ import annotations

from typing import Any

from . import buffers
from .errors import Block, SysError
from .handles import Process
from .rules import fact, rule
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, Sock
from .tcp_states import State
from .winsock_tables import DOCUMENTED, TCB_BYTES

CONNECTED = (State.ESTABLISHED, State.CLOSE_WAIT)
SHUTDOWN_HOW = {"SD_RECEIVE": "SHUT_RD", "SD_SEND": "SHUT_WR", "SD_BOTH": "SHUT_RDWR",
                "SHUT_RD": "SHUT_RD", "SHUT_WR": "SHUT_WR", "SHUT_RDWR": "SHUT_RDWR"}


class WinsockIO:
    """send(), recv(), shutdown() and the Windows view of the host."""

    # ------------------------------------------------------------------ data
    @rule("win.send", "windows", "buffers")
    def tcp_sendmsg(self, p: Process, sock: int, bytes: int, flags: list[str] | None = None) -> int:
        """send function (Learn/api/winsock2/nf-winsock2-send): WSAENOTCONN if not connected, WSAESHUTDOWN after SD_SEND, WSAECONNRESET after a hard close by the peer, WSAENOBUFS without buffer space, WSAETIMEDOUT when SO_SNDTIMEO runs out."""
        return self._timed("send", "win_sndtimeo", "no room in the send buffer: send waits up to SO_SNDTIMEO",
                           self._send_timed_out, super().tcp_sendmsg, p, sock, bytes, flags)

    def _timed(self, doc: str, timer: str, why: str, timed_out: Any, call: Any, p: Process, sock: int,
               *args: Any) -> int:
        """A blocking send or recv bounded by SO_SNDTIMEO / SO_RCVTIMEO (the socket's ``timer``
        attribute, in ms): the wait goes on as the call's own until the time has passed, then
        ``timed_out`` answers."""
        tag = f"win.{doc}"
        try:
            return self._retag(tag, DOCUMENTED[doc], call, p, sock, *args)
        except Block as b:
            _, sk = self.sockfd_lookup(p, sock)
            ms = getattr(sk, timer, 0)
            if not ms:
                raise
            fact(f"{why} = {ms} ms")
            deadline, resume = self.now + ms / 1000, b.resume
            self.inet_csk_reset_xmit_timer(timer, ms / 1000, sk, 0)
            raise Block(lambda now: self._timed_wait(tag, doc, resume, deadline, timed_out, now), b.reason) from None

    def _timed_wait(self, tag: str, doc: str, resume: Any, deadline: float, timed_out: Any, now: float) -> int:
        try:
            return self._retag(tag, DOCUMENTED[doc], resume, now)
        except Block as b:
            if self.now >= deadline - 1e-9:
                return timed_out(deadline)
            again = b.resume
            raise Block(lambda n: self._timed_wait(tag, doc, again, deadline, timed_out, n), b.reason) from None

    @rule("win.send_timeout", "windows", "buffers")
    def _send_timed_out(self, deadline: float) -> int:
        """SOL_SOCKET Socket Options (Learn/winsock/sol-socket-socket-options): SO_SNDTIMEO is the timeout, in milliseconds, of a blocking send; after it the socket's state is indeterminate. The error, WSAETIMEDOUT (send function, Learn/api/winsock2/nf-winsock2-send), is inferred from the receive side measured by Wine test_timeout."""
        fact("SO_SNDTIMEO ran out with the send buffer still full")
        raise SysError("ETIMEDOUT", "win.send_timeout")

    def tcp_sendmsg_locked(self, sk: Sock, total: int, nonblock: bool, copied: int) -> int:
        if copied == 0:
            if getattr(sk, "win_reset", False) or sk.err in ("ECONNRESET", "EPIPE"):
                sk.err = None
                sk.win_reset = True
                fact("the connection was reset by the peer (hard close)")
                raise self._reset_error(sk, "win.send")
            if sk.err is None and getattr(sk, "win_wr_shut", False):
                fact("shutdown(SD_SEND) was called on this socket")
                raise SysError("ESHUTDOWN", "win.send")
            if sk.err is None and sk.tcp_state not in CONNECTED:
                fact(f"the socket is {State(sk.tcp_state).name}: not connected")
                raise SysError("ENOTCONN", "win.send")
            if sk.tcp_state in CONNECTED:
                n = min(max(0, buffers.payload_capacity(sk.sndbuf) - sk.snd_q), total)
                if n > 0:
                    self.pool.reserve(n)
                if nonblock and not sk.err and not sk.shutdown & SEND_SHUTDOWN:
                    return self._send_whole(sk, total)
        return super().tcp_sendmsg_locked(sk, total, nonblock, copied)

    @rule("win.send_whole", "windows", "buffers")
    def _send_whole(self, sk: Sock, total: int) -> int:
        """Wine dlls/ws2_32/tests/sock.c, test_write_events and test_send_buffering (asserted on Windows): a non-blocking send is taken whole or fails with WSAEWOULDBLOCK, never cut short (send function, Learn/api/winsock2/nf-winsock2-send, allows a partial count -- the assertions win); taking it while less than SO_SNDBUF is buffered is inferred."""
        cap = buffers.send_capacity(sk.sndbuf)
        if sk.snd_q >= cap:
            fact(f"{sk.snd_q} byte(s) already buffered, SO_SNDBUF {sk.sndbuf}: nothing is taken")
            raise SysError("EAGAIN", "win.send_whole")
        self.pool.reserve(total)
        room = buffers.payload_capacity(sk.sndbuf) - sk.snd_q
        if total > room:  # where a partial count would have been returned
            self.decided("win.send_whole", f"{sk.snd_q} byte(s) buffered, under SO_SNDBUF {sk.sndbuf}: "
                         f"all {total} bytes are taken, not only the {max(room, 0)} that fit")
        sk.write_seq += total
        self.sk_mem_charge(total)
        self.tcp_push(sk)
        return total

    @rule("win.recv", "windows", "buffers")
    def tcp_recvmsg(self, p: Process, sock: int, bytes: int = 65536, flags: list[str] | None = None) -> int:
        """recv function (Learn/api/winsock/nf-winsock-recv): 0 after the peer's graceful close, WSAECONNRESET after a hard one, WSAESHUTDOWN after SD_RECEIVE, WSAENOTCONN if not connected, WSAETIMEDOUT when SO_RCVTIMEO runs out."""
        return self._timed("recv", "win_rcvtimeo", "nothing to read: recv waits up to SO_RCVTIMEO",
                           self._recv_timed_out, super().tcp_recvmsg, p, sock, bytes, flags)

    @rule("win.recv_timeout", "windows", "buffers")
    def _recv_timed_out(self, deadline: float) -> int:
        """Wine dlls/ws2_32/tests/sock.c, test_timeout (asserted on Windows): a blocking recv with nothing to read fails with WSAETIMEDOUT once SO_RCVTIMEO has passed; SOL_SOCKET Socket Options (Learn/winsock/sol-socket-socket-options): the socket's state is then indeterminate."""
        fact("SO_RCVTIMEO ran out with nothing received")
        raise SysError("ETIMEDOUT", "win.recv_timeout")

    @rule("win.getpeername", "windows", "sockets")
    def inet_getpeername(self, p: Process, sock: int) -> int:
        """getpeername function (Learn/api/winsock/nf-winsock-getpeername): the peer's address, WSAENOTCONN if the socket is not connected; Wine dlls/ws2_32/tests/sock.c (asserted on Windows): test_connecting_socket -- it already answers while a non-blocking connect is pending; test_shutdown, test_DisconnectEx -- still after a shutdown."""
        _, sk = self.sockfd_lookup(p, sock)
        if not sk.rport or sk.raddr is None or sk.tcp_state in (State.CLOSE, State.LISTEN):
            fact(f"the socket is {State(sk.tcp_state).name}: not connected")
            raise SysError("ENOTCONN", "win.getpeername")
        if sk.tcp_state == State.SYN_SENT:
            fact("the connection attempt is still pending: the address it goes to")
        self.ret_name = self.sock_name(sk, sk.raddr, sk.rport)
        return sk.rport

    def tcp_recvmsg_locked(self, sk: Sock, want: int, nonblock: bool, peek: bool) -> int:
        if getattr(sk, "win_rd_shut", False):
            fact("shutdown(SD_RECEIVE) was called on this socket")
            raise SysError("ESHUTDOWN", "win.recv")
        if not sk.rcv_q and (getattr(sk, "win_reset", False) or sk.err in ("ECONNRESET", "EPIPE")):
            sk.err = None
            sk.win_reset = True
            fact("the connection was reset by the peer (hard close)")
            raise self._reset_error(sk, "win.recv")
        if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
            fact(f"the socket is {State(sk.tcp_state).name}: not connected yet")
            raise SysError("ENOTCONN", "win.recv")
        return super().tcp_recvmsg_locked(sk, want, nonblock, peek)

    @staticmethod
    def _reset_error(sk: Sock, call_rule: str) -> SysError:
        """The error of a reset connection, credited to the rule that chose it: an abort after the
        peer's close (win.abort_after_peer_close), else the call's own rule."""
        err = getattr(sk, "win_reset_err", None)
        return SysError(err, "win.abort_after_peer_close") if err else SysError("ECONNRESET", call_rule)

    @rule("win.shutdown", "windows", "tcp")
    def inet_shutdown(self, p: Process, sock: int, how: str = "SD_SEND") -> int:
        """shutdown function (Learn/api/winsock/nf-winsock-shutdown): SD_SEND -> later sends fail with WSAESHUTDOWN; SD_RECEIVE on TCP resets the connection if data is queued or arrives; WSAENOTCONN if not connected."""
        linux_how = SHUTDOWN_HOW.get(how)
        if linux_how is None:
            fact(f"how = {how!r} is not SD_RECEIVE, SD_SEND or SD_BOTH")
            raise SysError("EINVAL", "win.shutdown")
        _, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp":
            return super().inet_shutdown(p, sock, how=linux_how)
        if sk.tcp_state in (State.CLOSE, State.LISTEN, State.SYN_SENT):
            fact(f"the socket is {State(sk.tcp_state).name}: not connected")
            raise SysError("ENOTCONN", "win.shutdown")
        if linux_how in ("SHUT_WR", "SHUT_RDWR"):
            sk.win_wr_shut = True
        if linux_how in ("SHUT_RD", "SHUT_RDWR"):
            sk.win_rd_shut = True
            if sk.rcv_q and sk.tcp_state in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2, State.CLOSE_WAIT):
                self._reset_on_receive(sk, f"{sk.rcv_q} byte(s) were queued")
                return 0
        return super().inet_shutdown(p, sock, how=linux_how)

    @rule("win.shutdown_receive_reset", "windows", "tcp")
    def _reset_on_receive(self, sk: Sock, why: str) -> None:
        """shutdown function (Learn/api/winsock/nf-winsock-shutdown): after SD_RECEIVE, TCP resets the connection if data is already queued for receive or arrives later."""
        self.decided("win.shutdown_receive_reset", f"SD_RECEIVE and {why}: the connection is reset")
        self.tcp_rcv_queue_purge(sk)
        self.tcp_transition(sk, "abort")
        sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN

    # ------------------------------------------------------------------ the host as Windows shows it
    def windows_view(self) -> dict[str, Any]:
        """What a Windows administrator reads off the host: netstat -ano, the SOCKET handles per
        PID, the dynamic port range (netsh int ipv4 show dynamicport tcp), the Tcpip\\Parameters
        values in effect and the nonpaged pool that sockets charge."""
        return {
            "netstat": self.netstat_ano(),
            "processes": {n: {"pid": p.pid, "handles": p.files.sockets(), "alive": p.alive}
                          for n, p in self.procs.items()},
            "dynamic_ports": list(self.sysctls["ip_local_port_range"]),
            "settings": {
                "TcpTimedWaitDelay": f"{self.TIME_WAIT_LEN:g} s",
                "TcpMaxConnectRetransmissions": int(self.sysctls["tcp_syn_retries"]),
                "SOMAXCONN stands for": f"a backlog of {self.sysctls['somaxconn']} (inferred)",
                "default SO_SNDBUF / SO_RCVBUF": f"{self.sysctls['tcp_wmem'][1]} / {self.sysctls['tcp_rmem'][1]}",
                "IPV6_V6ONLY default": int(self.sysctls["bindv6only"]),
            },
            "nonpaged_pool": {"bytes": self.pool.bytes, "tcbs": self.pool.tcbs, "tcb_bytes": TCB_BYTES,
                              "tcb_source": "third-party measurement [W48], inferred",
                              "buffered": self.pool.data, "peak": self.pool.peak,
                              "limit": self.pool.limit},
        }

    def netstat_ano(self) -> list[tuple[str, str, str, str, int]]:
        """netstat -ano: Proto, Local Address, Foreign Address, State, PID (0 for connections no
        process holds any more: TIME_WAIT, closed sockets still finishing)."""
        owner = {}
        for p in self.procs.values():
            if not p.alive:
                continue
            for fd in p.files.sockets():
                f = p.files.fds.get(fd)
                if f is not None and f.sock is not None:
                    owner[id(f.sock)] = p.pid
        rows = []
        for port, lst in sorted(self.listeners.items()):
            for sk in lst:
                rows.append(("TCP", _endpoint(sk.laddr, port), _endpoint(sk.laddr, 0, any_addr=True),
                             "LISTENING", owner.get(id(sk), 0)))
        for key, o in self.ehash.items():
            st = getattr(o, "shown_state", None) or State(o.tcp_state).name
            pid = owner.get(id(o), 0)
            parent = getattr(o, "parent", None)
            if not pid and parent is not None and not getattr(o, "dead", False):
                pid = owner.get(id(parent), 0)  # queued for accept(): shown under the listener's PID
            rows.append(("TCP", _endpoint(key[0], key[1]), _endpoint(key[2], key[3]),
                         NETSTAT_STATES.get(st, st), pid))
        return rows


NETSTAT_STATES = {"LISTEN": "LISTENING", "SYN_RECV": "SYN_RECEIVED", "FIN_WAIT1": "FIN_WAIT_1",
                  "FIN_WAIT2": "FIN_WAIT_2", "CLOSE": "CLOSED", "NEW_SYN_RECV": "SYN_RECEIVED"}


def _endpoint(addr: str, port: int, any_addr: bool = False) -> str:
    """An address as netstat prints it: a.b.c.d:port, [v6]:port; the foreign side of a listener
    is 0.0.0.0:0 or [::]:0."""
    v6 = ":" in (addr or "")
    if any_addr:
        return "[::]:0" if v6 else "0.0.0.0:0"
    return f"[{addr}]:{port}" if v6 else f"{addr}:{port}"
