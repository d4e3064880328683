"""net/ipv4/inet_connection_sock.c: port choice, listen start/stop, socket destruction."""

from __future__ import annotations

from .errors import SysError
from .ports import BindTable, describe_owner
from .rules import fact, rule
from .sockets import Sock
from .tcp_states import State


class InetConnectionSock:
    """Kernel functions of net/ipv4/inet_connection_sock.c (a part of :class:`~.stack.Kernel`)."""

    def inet_csk_get_port(self, table: BindTable, sk: Sock, port: int) -> int:
        """The get_port step of bind(): an explicit port is checked, port 0 is chosen."""
        if port == 0:
            lo, hi, _ = self.inet_sk_get_local_port_range(sk)
            return table.find_open_port(sk, lo, hi, self.sysctls["ip_local_reserved_ports"],
                                        self.rng.randrange, bool(self.sysctls["ip_autobind_reuse"]))
        table.check_explicit(sk, port)
        sk.bindport_lock = True
        return port

    @rule("listen.recheck", "ports")
    def inet_csk_listen_start(self, sk: Sock) -> None:
        """inet_csk_listen_start() in net/ipv4/inet_connection_sock.c: set LISTEN, then re-check the port (get_port)."""
        self.tcp_set_state(sk, State.LISTEN, "listen")
        try:
            if not sk.in_bhash:  # inet_num == 0: never bound, or its port was released
                port = self.listen_autobind(sk)
                sk.lport = sk.sport = port
                self.inet_bind_hash(port, sk)
                sk.in_bhash = True
            else:
                bad = self.bhash.conflicts(sk, sk.lport, relax=True, reuseport_ok=True)
                if bad:
                    for o in bad[:3]:
                        fact(f"now LISTEN, port {sk.lport} conflicts with {describe_owner(o)}")
                    raise SysError("EADDRINUSE", "listen.recheck")
            if sk.sent_syn:
                self.listen_after_connect(sk)
        except SysError:
            # the failure path stores TCP_CLOSE again without unhashing (inet_sk_set_state())
            self.tcp_set_state(sk, State.CLOSE, "listen_fail", unhash=False)
            raise
        self.listeners.setdefault(sk.lport, []).append(sk)
        self.woken.add(sk)

    @rule("ports.local_range", "ports", "minor")
    def inet_sk_get_local_port_range(self, sk: Sock) -> tuple[int, int, bool]:
        """inet_sk_get_local_port_range() in net/ipv4/inet_connection_sock.c: IP_LOCAL_PORT_RANGE narrows the namespace's range where its bounds fall inside it."""
        lo, hi = self.sysctls["ip_local_port_range"]
        if not sk.port_range:
            return lo, hi, False
        sk_lo, sk_hi = sk.port_range & 0xFFFF, sk.port_range >> 16
        new_lo = sk_lo if lo <= sk_lo <= hi else lo
        new_hi = sk_hi if lo <= sk_hi <= hi else hi
        fact(f"IP_LOCAL_PORT_RANGE {sk_lo}-{sk_hi} within {lo}-{hi}: searching {new_lo}-{new_hi}")
        return new_lo, new_hi, True

    @rule("listen.autobind", "ports", "ephemeral")
    def listen_autobind(self, sk: Sock) -> int:
        """inet_csk_listen_start() -> inet_csk_get_port(sk, 0): listen() on an unbound socket picks a port like bind(0)."""
        lo, hi, _ = self.inet_sk_get_local_port_range(sk)
        port = self.bhash.find_open_port(sk, lo, hi, self.sysctls["ip_local_reserved_ports"],
                                         self.rng.randrange, bool(self.sysctls["ip_autobind_reuse"]))
        fact(f"listen() on an unbound socket autobinds port {port}")
        return port

    def inet_csk_listen_stop(self, sk: Sock) -> None:
        """inet_csk_listen_stop(): queued children and pending requests are reset."""
        while sk.accept_q:
            child = sk.accept_q.popleft()
            child.dead = True
            if child.tcp_state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1,
                                   State.FIN_WAIT2, State.SYN_RECV):
                self.tcp_transition(child, "abort")  # inet_child_forget() -> tcp_disconnect(): RST
            self.inet_csk_destroy_sock(child)
        for key, other in list(self.ehash.items()):
            if isinstance(other, Sock) and other.is_request and other.parent is sk:
                self.inet_csk_destroy_sock(other)

    def inet_csk_destroy_sock(self, sk: Sock) -> None:
        """inet_csk_destroy_sock(): unhash, leave the bind bucket, free buffers."""
        self.inet_unhash(sk)
        if sk.in_bhash:
            self.inet_put_port(sk.lport, sk)
            sk.in_bhash = False
        if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
            self.listeners[sk.lport].remove(sk)
            if not self.listeners[sk.lport]:
                del self.listeners[sk.lport]
        self.tcp_write_queue_purge(sk)
        self.tcp_rcv_queue_purge(sk)
        self.socks.discard(sk)

    @rule("listen.accept_queue_full", "tcp", "minor")
    def sk_acceptq_is_full(self, lsk: Sock) -> bool:
        """sk_acceptq_is_full() in include/net/sock.h: sk_ack_backlog > sk_max_ack_backlog (backlog N holds N+1)."""
        full = len(lsk.accept_q) > lsk.backlog
        if full:
            fact(f"accept queue holds {len(lsk.accept_q)} > backlog {lsk.backlog}: the SYN is dropped")
        return full
