"""net/ipv4/af_inet.c (and inet6_bind() in net/ipv6/af_inet6.c): bind, listen, connect, shutdown, getname."""

from __future__ import annotations

import ipaddress

from .addr import ip_addr
from .errors import Block, SysError
from .handles import Process
from .rules import fact, rule
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, SS_CONNECTED, SS_CONNECTING, SS_DISCONNECTING, SS_UNCONNECTED, Sock, norm_addr
from .tcp_states import State

LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")


class AfInet:
    """Kernel functions of net/ipv4/af_inet.c (and inet6_bind() in net/ipv6/af_inet6.c) (a part of :class:`~.stack.Kernel`)."""

    @rule("sys.getsockname", "sockets")
    def inet_getname(self, p: Process, sock: int) -> int:
        """getsockname(2), inet_getname() in net/ipv4/af_inet.c: the local address (the bound one, else the source chosen by connect) and port."""
        _, sk = self.sockfd_lookup(p, sock)
        self.ret_name = self.sock_name(sk, sk.laddr, sk.sport)
        return sk.sport

    @rule("sys.getpeername", "sockets")
    def inet_getpeername(self, p: Process, sock: int) -> int:
        """getpeername(2), inet_getname(peer=1) in net/ipv4/af_inet.c (inet6_getname()): ENOTCONN without a peer port, or in CLOSE or SYN_SENT."""
        _, sk = self.sockfd_lookup(p, sock)
        if not sk.rport or sk.raddr is None or sk.tcp_state in (State.CLOSE, State.SYN_SENT):
            fact(f"the socket is {State(sk.tcp_state).name}" + ("" if sk.rport else " and has no peer"))
            raise SysError("ENOTCONN", "sys.getpeername")
        self.ret_name = self.sock_name(sk, sk.raddr, sk.rport)
        return sk.rport

    @staticmethod
    def sock_name(sk: Sock, addr: str | None, port: int) -> dict:
        """An address as the socket's family shows it (an AF_INET6 socket shows IPv4 as v4-mapped)."""
        a = addr or ("::" if sk.family == 6 else "0.0.0.0")
        if sk.family == 6 and ":" not in a:
            a = "::" if a == "0.0.0.0" else f"::ffff:{a}"
        return {"addr": a, "port": port}

    def _is_local(self, fam: int, addr: str) -> bool:
        ip = ip_addr(addr)
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            else:
                return ip in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")) or ip in self.fib.local
        return ip == ipaddress.IPv4Address("0.0.0.0") or ip in LOOPBACK4 or ip in self.fib.local

    @staticmethod
    def _v6_form(sk: Sock, addr: str) -> str:
        """The scenario convention: an IPv4 address given to an AF_INET6 socket means its v4-mapped
        form (0.0.0.0 means ::), as a program using getaddrinfo with AI_V4MAPPED would pass it."""
        ip = ip_addr(addr)
        if sk.family == 6 and ip.version == 4:
            return "::" if ip == ipaddress.IPv4Address("0.0.0.0") else f"::ffff:{ip}"
        return addr

    @rule("sys.bind", "ports")
    def inet_bind(self, p: Process, sock: int, addr: str = "0.0.0.0", port: int = 0) -> int:
        """__inet_bind() in net/ipv4/af_inet.c (inet6_bind() for IPv6); bind(2)."""
        _, sk = self.sockfd_lookup(p, sock)
        addr = self._v6_form(sk, addr)
        ip = ip_addr(addr)
        if (ip.version == 6) != (sk.family == 6):
            fact(f"an {('AF_INET6' if ip.version == 6 else 'AF_INET')} address given to an "
                 f"{('AF_INET6' if sk.family == 6 else 'AF_INET')} socket")
            raise SysError("EAFNOSUPPORT" if sk.family == 4 else "EINVAL", "sys.bind")
        privileged = (port and port < self.sysctls["ip_unprivileged_port_start"]
                      and not p.capable("CAP_NET_BIND_SERVICE"))
        bound = sk.tcp_state != State.CLOSE or sk.in_bhash  # inet_num, not what getsockname() shows

        def check_address() -> None:
            if sk.family == 6 and sk.v6only_opt and ip.ipv4_mapped is not None:
                fact("an IPV6_V6ONLY socket cannot bind a v4-mapped address (__inet6_bind)")
                raise SysError("EINVAL", "sys.bind")
            if not self._is_local(sk.family, addr):
                fact(f"{addr} is not an address of this host ({self.fib.describe()})")
                raise SysError("EADDRNOTAVAIL", "sys.bind")

        def check_port() -> None:
            if privileged:
                fact(f"port {port} < ip_unprivileged_port_start {self.sysctls['ip_unprivileged_port_start']} "
                     "needs CAP_NET_BIND_SERVICE")
                raise SysError("EACCES", "sys.bind")

        def check_unbound() -> None:
            if bound:
                fact("the socket is already bound (or connected/listening)")
                raise SysError("EINVAL", "sys.bind")

        # the order of the checks differs: __inet_bind() tests the address, then the privilege,
        # then (under the socket lock) double binds; __inet6_bind() tests the privilege, then
        # double binds, then the address
        order = (check_port, check_unbound, check_address) if sk.family == 6 else (
            check_address, check_port, check_unbound)
        for check in order:
            check()
        table = self.bhash if sk.kind == "tcp" else self.udp_ports
        v6only = sk.v6only_opt
        sk.set_local(addr, 0, bind=True)
        try:
            if port == 0 and sk.bind_no_port and sk.kind == "tcp":
                fact("IP_BIND_ADDRESS_NO_PORT: only the address is recorded; connect() picks the port")
                return 0
            port = self.inet_csk_get_port(table, sk, port)
        except SysError:
            # __inet_bind(): inet_saddr = inet_rcv_saddr = 0; __inet6_bind(): inet_reset_saddr()
            # and sk_ipv6only restored. The address a failed bind() leaves is "any", not the one
            # the socket had before (measured: Linux 6.18, regressions/failed-bind-resets-address)
            sk.v6only_opt = v6only
            sk.set_local("::" if sk.family == 6 else "0.0.0.0", 0)
            raise
        sk.lport = sk.sport = port
        sk.connect_bind = False  # the port comes from bind() now
        table.add(port, sk)
        sk.in_bhash = True
        sk.bindaddr_lock = sk.laddr not in ("0.0.0.0", "::")
        return 0

    @rule("sys.listen", "tcp")
    def inet_listen(self, p: Process, sock: int, backlog: int = 128) -> int:
        """inet_listen() in net/ipv4/af_inet.c; __sys_listen() caps the backlog at somaxconn."""
        _, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp":
            fact("listen() is only for stream sockets (sock_no_listen)")
            raise SysError("EOPNOTSUPP", "sys.listen")
        somax = self.sysctls["somaxconn"]
        eff = backlog if 0 <= backlog <= somax else somax  # (unsigned)backlog > somaxconn
        if sk.sock_state != SS_UNCONNECTED or sk.tcp_state not in (State.CLOSE, State.LISTEN):
            fact(f"the socket is {State(sk.tcp_state).name} (not CLOSE or LISTEN)")
            raise SysError("EINVAL", "sys.listen")
        sk.backlog = eff
        fact(f"backlog {backlog} -> sk_max_ack_backlog {eff} (somaxconn {somax})")
        if sk.tcp_state == State.LISTEN:
            return 0
        self.inet_csk_listen_start(sk)
        return 0

    @rule("listen.after_connect", "tcp")
    def listen_after_connect(self, sk: Sock) -> None:
        """inet_csk_listen_start(): on a socket whose connect() sent a SYN, listening fails with EINVAL once the port is checked (measured: Linux 6.18, scenarios/regressions/listen-after-refused-connect.yaml).

        The socket is back in CLOSE and SS_UNCONNECTED (a second connect() is accepted, bind()
        too) and the port check of inet_csk_listen_start() runs first (a full range still
        answers EADDRINUSE: scenarios/regressions/failed-connect-port-taken-by-other.yaml), but
        then listening is refused; a connect() that failed before sending its SYN (ENETUNREACH)
        leaves listen() possible. Cross-checked on the real kernel by those scenarios; the step
        after get_port() that refuses it is not identified here.
        """
        fact("this socket's connect() sent a SYN before: the kernel refuses listen() on it (EINVAL)")
        raise SysError("EINVAL", "listen.after_connect")

    @rule("connect.after_listen_stopped", "tcp")
    def connect_after_listen_stopped(self, sk: Sock) -> None:
        """inet_shutdown() in net/ipv4/af_inet.c stops a listener on SHUT_RD (tcp_disconnect()); connect() on that socket then fails with EINVAL (measured: Linux 6.18, scenarios/regressions/connect-after-listener-shut-down.yaml).

        The socket is CLOSE and SS_UNCONNECTED: listen() works on it again and bind() too, but
        connect() is refused before any SYN is sent, whatever the destination. Cross-checked on
        the real kernel by that scenario; the check in the connect path that refuses it is not
        identified here.
        """
        fact("shutdown(SHUT_RD) stopped this socket's listening: the kernel refuses connect() on it (EINVAL)")
        raise SysError("EINVAL", "connect.after_listen_stopped")

    def ip_route_connect(self, sk: Sock, daddr: str) -> str:
        if sk.laddr not in ("0.0.0.0", "::"):
            return sk.laddr
        src = self.fib.source(daddr)  # the destination itself when local, else the device's address
        if src is not None:
            return f"::ffff:{src}" if sk.family == 6 and ip_addr(src).version == 4 else src
        ip = ip_addr(daddr)
        return "::1" if isinstance(ip, ipaddress.IPv6Address) else "127.0.0.1"

    def connect_known_to_fail(self, proc: str, addr: str, port: int, now: float) -> bool:
        """Whether socket(AF_INET, SOCK_STREAM), connect(``addr``, ``port``) and close() by ``proc``
        would now take the path of a connect() refused from a remembered fruitless port search
        (EADDRNOTAVAIL in __inet_hash_connect(), net/ipv4/inet_hashtables.c); if so, the attempt's
        one lasting effect, a socket number used, is applied and True is returned.

        That path changes nothing else: the fd and the open file are taken and given back, the
        socket is created unconnected and destroyed in CLOSE, no segment, timer or random draw is
        made. Every condition the path depends on is checked here from the current state, in the
        order the calls check them; any other case answers False (the caller makes the calls).
        """
        p = self.procs.get(proc)
        if p is None or not p.alive:
            return False
        fds = p.files.fds
        fd = 0
        while fd in fds:
            fd += 1
        if fd >= p.files.nofile or (self.files.nr_files >= self.files.file_max and p.uid != 0):
            return False  # alloc_fd() or alloc_empty_file() would fail first
        dip = ip_addr(addr)
        daddr = norm_addr(addr)
        if dip.version != 4 or (dip not in LOOPBACK4 and (str(dip) == "0.0.0.0" or self.fib.output(daddr) is None)):
            return False  # not the route every such attempt takes
        saddr = self.fib.source(daddr) or "127.0.0.1"  # ip_route_connect() for an unbound socket
        if not self.port_search_fruitless((saddr, daddr, port), now * 1000.0):
            return False
        self.now = now
        Sock._ids += 1  # the socket the attempt would have made
        return True

    @rule("sys.connect", "tcp")
    def inet_stream_connect(self, p: Process, sock: int, addr: str = "127.0.0.1", port: int = 0) -> int:
        """__inet_stream_connect() in net/ipv4/af_inet.c; tcp_v4_connect() in net/ipv4/tcp_ipv4.c."""
        f, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp":
            raise SysError("EOPNOTSUPP", "sys.connect")
        if sk.sock_state == SS_CONNECTED:
            fact("the socket is already connected")
            raise SysError("EISCONN", "sys.connect")
        if sk.sock_state == SS_CONNECTING:
            if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
                fact("a non-blocking connect() is still in progress")
                raise SysError("EALREADY", "sys.connect")
            return self.inet_connect_result(sk)
        if sk.sock_state != SS_UNCONNECTED:
            raise SysError("EINVAL", "sys.connect")
        addr = self._v6_form(sk, addr)
        if sk.tcp_state != State.CLOSE:
            fact(f"the socket is {State(sk.tcp_state).name}")
            raise SysError("EISCONN", "sys.connect")
        if sk.listen_stopped:
            self.connect_after_listen_stopped(sk)
        daddr = norm_addr(addr)
        dip = ip_addr(daddr)
        if sk.family == 4 and dip.version == 6:
            raise SysError("EAFNOSUPPORT", "sys.connect")
        if not (dip in LOOPBACK4 if dip.version == 4 else dip == ipaddress.IPv6Address("::1")):
            if str(dip) == "::":
                # tcp_v6_connect() in net/ipv6/tcp_ipv6.c: "any" means loopback, ::ffff:127.0.0.1
                # when the socket is bound to a v4-mapped address (then it connects over IPv4)
                if sk.addr6 is not None and sk.addr6.ipv4_mapped is not None:
                    daddr, dip = "127.0.0.1", ip_addr("127.0.0.1")
                else:
                    daddr = "::1"
                fact(f"connect() to {addr} goes to {daddr} (loopback)")
            elif str(dip) == "0.0.0.0":
                # ip_route_output_key_hash_rcu(): "any" means this host: the socket's own source
                # address when it has one, else loopback
                own = sk.laddr if sk.laddr not in ("0.0.0.0", "::") else None
                daddr = own or "127.0.0.1"
                fact(f"connect() to {addr} goes to {daddr}")
            elif self.fib.output(daddr) is not None:
                fact(f"{addr} is reached by {self.fib.output(daddr)}")
            else:
                fact(f"no route to {addr}: {self.fib.describe()}")
                raise SysError("ENETUNREACH", "sys.connect")
        if dip.version == 4 and sk.family == 6 and sk.ipv6only:
            fact("an IPv6-only socket cannot reach an IPv4 (v4-mapped) destination")
            raise SysError("ENETUNREACH", "sys.connect")
        if dip.version == 6 and sk.addr6 is not None and sk.addr6.ipv4_mapped is not None:
            fact(f"bound to the v4-mapped {sk.addr6}: a native IPv6 destination has no route "
                 "(ip6_dst_lookup_tail)")
            raise SysError("EAFNOSUPPORT", "sys.connect")
        if sk.family == 6:
            if dip.version == 4:
                sk.mapped_ops = True  # tcp_v6_connect(): icsk_af_ops = &ipv6_mapped
            elif sk.mapped_ops:
                # tcp_v6_connect() restores ipv6_specific only when the v4-mapped connect fails
                # synchronously; after an RST the socket still transmits through the IPv4 ops,
                # so SYNs to a native IPv6 peer are lost (measured: connect blocks)
                fact("this socket connected over IPv4 (v4-mapped) before: it still sends with the "
                     "IPv4 ops, and its SYNs to an IPv6 address go nowhere")
                sk.blackhole = True
        saddr = self.ip_route_connect(sk, daddr)
        if sk.family == 6 and dip.version == 4:
            sk.v4_addrs = (norm_addr(saddr), norm_addr(daddr))  # inet_saddr, inet_daddr
        try:
            self.inet_hash_connect(sk, saddr, daddr, port)
        except SysError:
            if sk.family == 6 and dip.version == 4:
                # tcp_v6_connect(): tcp_v4_connect() failed at once, so icsk_af_ops goes back to
                # ipv6_specific (measured: Linux 6.18, regressions/v6-ops-restored-after-failed-mapped-connect)
                sk.mapped_ops = False
            raise
        sk.sock_state = SS_CONNECTING
        self.tcp_transition(sk, "connect")
        if f.nonblock:
            fact("non-blocking socket: the handshake goes on after connect() returns")
            raise SysError(self.NONBLOCK_CONNECT_ERR, "sys.connect")
        return self.inet_wait_for_connect(sk)

    def inet_wait_for_connect(self, sk: Sock) -> int:
        if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
            raise Block(lambda now: self.inet_wait_for_connect(sk), "connect: waiting for the handshake", sk)
        return self.inet_connect_result(sk)

    @rule("connect.result", "tcp")
    def inet_connect_result(self, sk: Sock) -> int:
        """inet_wait_for_connect()/__inet_stream_connect(): CLOSE after SYN_SENT reports sk_err."""
        if sk.tcp_state == State.CLOSE:
            err = sk.err or "ECONNABORTED"
            sk.err = None
            sk.sock_state = SS_UNCONNECTED
            self.tcp_disconnect(sk)
            fact(f"the connection attempt ended with {err}")
            raise SysError(err, "connect.result")
        sk.sock_state = SS_CONNECTED
        return 0

    @rule("sys.shutdown", "tcp")
    def inet_shutdown(self, p: Process, sock: int, how: str = "SHUT_WR") -> int:
        """inet_shutdown() in net/ipv4/af_inet.c; tcp_shutdown() in net/ipv4/tcp.c: acts on the socket, so on every fd copy."""
        _, sk = self.sockfd_lookup(p, sock)
        if isinstance(how, int):
            if how not in (0, 1, 2):
                fact(f"how {how} is none of SHUT_RD (0), SHUT_WR (1), SHUT_RDWR (2)")
                raise SysError("EINVAL", "sys.shutdown")
            how = ("SHUT_RD", "SHUT_WR", "SHUT_RDWR")[how]
        mask = {"SHUT_RD": RCV_SHUTDOWN, "SHUT_WR": SEND_SHUTDOWN, "SHUT_RDWR": 3, "SD_RECEIVE": RCV_SHUTDOWN,
                "SD_SEND": SEND_SHUTDOWN, "SD_BOTH": 3}[how]
        if sk.sock_state == SS_CONNECTING:
            sk.sock_state = SS_DISCONNECTING if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV, State.CLOSE) else SS_CONNECTED
        st = sk.tcp_state
        err = None
        if st == State.CLOSE:
            fact("shutdown() on a socket that is not connected")
            err = "ENOTCONN"
            sk.shutdown |= mask
        elif st == State.LISTEN:
            if mask & RCV_SHUTDOWN:
                fact("shutdown(SHUT_RD) on a listener stops it (tcp_disconnect -> inet_csk_listen_stop)")
                self.tcp_disconnect(sk)
                sk.sock_state = SS_UNCONNECTED
                sk.listen_stopped = True
        elif st == State.SYN_SENT:
            self.tcp_disconnect(sk)
            sk.sock_state = SS_UNCONNECTED
        else:
            sk.shutdown |= mask
            if mask & SEND_SHUTDOWN and st in (State.ESTABLISHED, State.SYN_RECV, State.CLOSE_WAIT):
                self.tcp_transition(sk, "shutdown_wr")
        if err:
            raise SysError(err, "sys.shutdown")
        return 0
