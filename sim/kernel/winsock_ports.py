"""The Windows port rules (a part of :class:`~.winsock.WinsockKernel`): bind() with Microsoft's
SO_REUSEADDR x SO_EXCLUSIVEADDRUSE outcome tables, and the dynamic port range that bind(0) and an
implicit bind in connect() draw from.

The bracketed tags ([W20] ...) are the references of sim/kernel/winsock.py.
"""

from __future__ import annotations

import itertools
from typing import Any

from .errors import SysError
from .handles import Process
from .ports import BindTable
from .rules import fact, rule
from .sockets import Sock
from .tcp_states import State

BIND_ORDER = itertools.count(1)  # binds in the order they were made, host-wide
from .winsock_tables import DOCUMENTED, dual_stack_wildcard, is_wildcard, option_letter, overlap, share_outcome, stack_views


class WinsockPorts:
    """bind(), SO_EXCLUSIVEADDRUSE and the dynamic port range on a Windows host."""

    @rule("win.bind", "windows", "ports")
    def inet_bind(self, p: Process, sock: int, addr: str = "0.0.0.0", port: int = 0, null: Any = (),
                  addrlen: int | None = None) -> int:
        """bind function (Learn/api/winsock/nf-winsock-bind): WSAEINVAL if already bound, WSAEADDRNOTAVAIL for a non-local address, WSAEFAULT for a bad name or namelen, port 0 takes a port from the dynamic range."""
        if null or addrlen is not None:
            _, sk = self.sockfd_lookup(p, sock)
            self.check_name_in(sk, "bind", null, addrlen)
        return self._retag("win.bind", DOCUMENTED["bind"], super().inet_bind, p, sock, addr, port)

    def inet_csk_get_port(self, table: BindTable, sk: Sock, port: int) -> int:
        if port == 0:
            port = self._dynamic_port(table, sk, "bind")
        else:
            self._bind_share_check(table, sk, port)
        self._mark_bound(sk)
        return port

    @staticmethod
    def _mark_bound(sk: Sock) -> None:
        """A socket that got its port from bind() or an implicit bind: it takes part in the tables."""
        sk.bindport_lock = True  # the port stays with the socket until closesocket
        sk.win_binder = True
        sk.win_bind_opts = (bool(sk.reuse), bool(getattr(sk, "exclusive", False)))
        sk.win_bind_seq = next(BIND_ORDER)  # which of several sharing listeners was bound first

    @staticmethod
    def _is_binder(o: Any) -> bool:
        return bool(getattr(o, "win_binder", False)) and not getattr(o, "dead", False)

    @rule("win.bind_share", "windows", "ports")
    def _bind_share_check(self, table: BindTable, sk: Sock, port: int) -> None:
        """Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE (Learn/winsock/using-so-reuseaddr-and-so-exclusiveaddruse): the outcome tables for a second bind to a port in use."""
        new = option_letter(bool(sk.reuse), bool(getattr(sk, "exclusive", False))) + ("W" if is_wildcard(sk) else "S")
        lingering = []
        shared = False
        for o in table.owners(port):
            if not overlap(sk, o):
                continue
            if not self._is_binder(o):
                lingering.append(o)
                continue
            reuse, excl = getattr(o, "win_bind_opts", (bool(o.reuse), False))
            if dual_stack_wildcard(o) and stack_views(sk)[1] is None:
                self._dual_stack_owner(o, excl, port)
                continue
            first = option_letter(reuse, excl) + ("W" if is_wildcard(o) else "S")
            same = o.uid == sk.uid
            err = share_outcome(first, new, same, self.ENHANCED_SOCKET_SECURITY)
            fact(f"port {port}: first bind {first} ({o.laddr}, uid {o.uid}), second bind {new} "
                 f"(uid {sk.uid}), {'same user' if same else 'different users'}: "
                 f"{'success' if err is None else 'WSA' + err}")
            if err is not None:
                raise SysError(err, "win.bind_share")
            # the table decides where SO_REUSEADDR on both sockets alone would not let them share
            shared = shared or not (sk.reuse and o.reuse and o.tcp_state != State.LISTEN)
        if shared:
            self.decided("win.bind_share", f"the table lets this bind share port {port}")
        if lingering:
            self._exclusive_linger_check(sk, port, lingering)
        if not table.owners(port):
            fact(f"port {port} has no owner")

    @rule("win.bind_dual_stack", "windows", "ports")
    def _dual_stack_owner(self, o: Any, exclusive: bool, port: int) -> None:
        """Wine dlls/ws2_32/tests/sock.c, test_reuseaddr (tests_exclusive) and test_ipv6only (asserted on Windows): a dual-stack wildcard bind holds its IPv4 side against a later IPv4 bind only with SO_EXCLUSIVEADDRUSE (then WSAEACCES); without it the IPv4 bind succeeds. Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE (Learn/winsock) has no dual-stack row for this -- the assertions decide."""
        if exclusive:
            fact(f"[::]:{port} is bound dual-stack with SO_EXCLUSIVEADDRUSE: its IPv4 side is "
                 "taken, exclusively")
            raise SysError("EACCES", "win.bind_dual_stack")
        self.decided("win.bind_dual_stack", f"[::]:{port} is bound dual-stack without "
                     "SO_EXCLUSIVEADDRUSE: it does not hold the IPv4 side against this bind")

    @rule("win.bind_exclusive_linger", "windows", "ports")
    def _exclusive_linger_check(self, sk: Sock, port: int, lingering: list[Any]) -> None:
        """Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE (Learn/winsock/using-so-reuseaddr-and-so-exclusiveaddruse): an exclusive socket cannot bind a port until the old connections on it become inactive."""
        if not getattr(sk, "exclusive", False):
            if sk.reuse:  # SO_REUSEADDR binds past them anyway
                fact(f"{len(lingering)} connection(s) still on port {port}: SO_REUSEADDR binds past them")
                return
            self.decided("win.bind_exclusive_linger", f"{len(lingering)} connection(s) still on port "
                         f"{port} (e.g. TIME_WAIT): they do not hold the port against a bind without "
                         "SO_EXCLUSIVEADDRUSE")
            return
        o = lingering[0]
        kind = "TIME_WAIT" if getattr(o, "is_tw", False) else State(o.tcp_state).name
        fact(f"SO_EXCLUSIVEADDRUSE: a connection on port {port} is still active ({kind} "
             f"{o.laddr}:{o.lport} -> {o.raddr}:{o.rport}); the port is not free yet")
        raise SysError("EADDRINUSE", "win.bind_exclusive_linger")

    @rule("win.dynamic_port", "windows", "ports", "ephemeral")
    def _dynamic_port(self, table: BindTable, sk: Sock, why: str) -> int:
        """KB 929851 and Troubleshoot port exhaustion (learn.microsoft.com/troubleshoot): ports come from the dynamic range (49152-65535); when none is free the call fails with WSAENOBUFS (KB 196271)."""
        lo, hi = self.sysctls["ip_local_port_range"]
        excluded = set(self.sysctls["ip_local_reserved_ports"])
        n = hi - lo + 1
        key = id(table)
        cur = self._port_cursor.get(key)
        if cur is None:
            cur = lo + self.rng.randrange(n)  # where the search starts is undocumented (inferred)
        for i in range(n):
            port = lo + (cur - lo + i) % n
            if port in excluded or table.owners(port):
                continue
            self._port_cursor[key] = lo + (port - lo + 1) % n
            self.decided("win.dynamic_port", f"{why}: port {port} is the next free port of the dynamic "
                         f"range {lo}-{hi}")
            return port
        fact(f"{why}: every port of the dynamic range {lo}-{hi} is in use (bound, connected or in "
             "TIME_WAIT): port exhaustion")
        raise SysError("ENOBUFS", "win.dynamic_port")

    @rule("win.connect_implicit_bind", "windows", "ports", "ephemeral")
    def _implicit_bind(self, sk: Sock, saddr: str, daddr: str, dport: int) -> None:
        """connect function (Learn/api/winsock2/nf-winsock2-connect): an unbound socket is bound by the system (wildcard address, a port of its own), and marked as bound."""
        port = self._dynamic_port(self.bhash, sk, "connect")
        sk.set_local("::" if sk.family == 6 else "0.0.0.0", port)
        sk.laddr = saddr  # the 4-tuple uses the route's source; the bind stays a wildcard bind
        sk.connect_bind = True
        self._mark_bound(sk)
        sk.raddr, sk.rport = daddr, dport
        self.inet_bind_hash(port, sk)
        sk.in_bhash = True
        self.inet_ehash_insert(sk)

