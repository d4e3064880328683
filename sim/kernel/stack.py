"""The kernel: processes, syscalls, segment input, timers -- sans I/O and sans clock.

The engine (sim/engine) drives this object: it calls :meth:`Kernel.syscall` for each call, drains
:attr:`Kernel.outbox` (segments to put on the loopback wire) and :attr:`Kernel.timer_requests`
(timers to arm), calls :meth:`Kernel.deliver` when a segment arrives and :meth:`Kernel.timer`
when a timer fires. Every method takes ``now`` (seconds); none reads a clock or sleeps.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from .addr import ip_addr
from . import buffers, tcp
from .errors import SysError
from .handles import FileCount, FileTable, OpenFile
from .ports import BindTable
from .rules import TRAIL, decisive, fact, rule
from .sockets import (
    RCV_SHUTDOWN, SEND_SHUTDOWN, SS_CONNECTED, SS_CONNECTING, SS_DISCONNECTING, SS_UNCONNECTED,
    Sock, getsockopt, norm_addr, setsockopt, socket_kind,
)
from .tcp import State
from .timers import wheel_expiry
from .timewait import TCP_TIMEWAIT_LEN, TimeWaitSock, TimeWaitTable, twsk_unique

SYN, ACK, FIN, RST, DATA = 1, 2, 4, 8, 16

LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")


@dataclass(slots=True)
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: int
    length: int = 0
    ack: int = 0  # cumulative bytes acknowledged
    wnd: int = 0  # receive window (payload bytes) advertised
    acks_fin: bool = False
    ts: bool = True

    def describe(self) -> str:
        names = [n for b, n in ((SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST")) if self.flags & b]
        d = f" {self.length}B" if self.length else ""
        return f"{self.src[0]}:{self.src[1]} > {self.dst[0]}:{self.dst[1]} {'|'.join(names) or 'DATA'}{d}"


@dataclass
class Outcome:
    ret: Any = None
    err: str | None = None
    blocked: Blocked | None = None
    rule: str | None = None
    trail: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


@dataclass
class Blocked:
    """A call waiting inside the kernel; ``resume(now)`` retries it and returns an Outcome."""

    proc: str
    call: str
    resume: Callable[[float], Outcome]
    reason: str = ""
    key: Any = None  # the socket whose wait queue the call sleeps on (None: retry on any wakeup)


class Process:
    __slots__ = ("name", "files", "uid", "alive", "pid")

    def __init__(self, name: str, files: FileTable, uid: int, pid: int):
        self.name, self.files, self.uid, self.alive, self.pid = name, files, uid, True, pid


class _Block(Exception):
    def __init__(self, resume: Callable[[float], Any], reason: str, key: Any = None):
        self.resume, self.reason, self.key = resume, reason, key


DEFAULT_SYSCTLS: dict[str, Any] = {
    "ip_local_port_range": (32768, 60999), "ip_local_reserved_ports": [],
    "ip_unprivileged_port_start": 1024, "ip_autobind_reuse": 0, "tcp_max_tw_buckets": 131072,
    "tcp_tw_reuse": 2, "tcp_tw_reuse_delay": 1000, "tcp_timestamps": 1, "tcp_fin_timeout": 60,
    "somaxconn": 4096, "tcp_max_syn_backlog": 2048, "tcp_syncookies": 1,
    "tcp_abort_on_overflow": 0, "tcp_syn_retries": 6, "tcp_wmem": (4096, 16384, 4194304),
    "tcp_rmem": (4096, 131072, 33554432), "wmem_max": 4194304, "rmem_max": 4194304,
    "tcp_mem": (287898, 383867, 575796), "bindv6only": 0,
}


class Kernel:
    """One host kernel (one network namespace) with its processes: the Linux rules.

    Another personality subclasses this class and overrides the rule methods where its kernel
    differs (see sim/kernel/winsock.py); the subclass is chosen once per host.
    """

    personality = "linux"
    TIME_WAIT_LEN = TCP_TIMEWAIT_LEN
    NONBLOCK_CONNECT_ERR = "EINPROGRESS"  # __inet_stream_connect(): -EINPROGRESS
    DEFAULTS: dict[str, Any] = {}  # personality defaults applied under the scenario's sysctls

    def __init__(self, sysctls: dict[str, Any] | None = None, file_max: int = 2466170, seed: int = 0):
        self.sysctls = dict(DEFAULT_SYSCTLS)
        self.sysctls.update(self.DEFAULTS)
        self.sysctls.update(sysctls or {})
        self.rng = random.Random(seed)
        self.procs: dict[str, Process] = {}
        self.files = FileCount(file_max)
        self.bhash = BindTable()  # TCP
        self.udp_ports = BindTable()
        self.ehash: dict[tuple, Any] = {}  # (laddr, lport, raddr, rport) -> Sock | TimeWaitSock
        self.listeners: dict[int, list[Sock]] = {}
        self.tw = TimeWaitTable(self.sysctls["tcp_max_tw_buckets"])
        self.pool = buffers.TcpMemPool(tuple(self.sysctls["tcp_mem"]))
        self.socks: set[Sock] = set()  # every TCP sock alive (hashed or owned by a file)
        self.ehash_frees = 0  # removals from ehash (a 4-tuple became free)
        lo, hi = self.sysctls["ip_local_port_range"]
        span = hi + 1 - lo
        self._eph = (lo, lo + (span & ~1 if span > 1 else span))  # the ports connect() scans
        self.dest_ports: dict[tuple, list[int]] = {}  # (laddr, raddr, rport) -> ehash entries per parity
        self.exhausted: dict[tuple, tuple[int, int]] = {}  # destination -> generations of a failed search
        self.woken: set[Any] = set()  # sockets whose wait queue was woken (sk_state_change, sk_data_ready)
        self.outbox: list[Segment] = []
        self.timer_requests: list[tuple[str, float, Any, int]] = []
        self.events: list[tuple[float, str]] = []  # notable kernel events (for the timeline)
        self.perturb = [0] * 256  # table_perturb[] of __inet_hash_connect
        self.secret = self.rng.getrandbits(64)
        self.mib: dict[str, int] = {}
        self._pid = 100
        self.now = 0.0

    # ------------------------------------------------------------------ processes
    def add_process(self, name: str, nofile: int = 1024, uid: int = 0) -> Process:
        self._pid += 1
        p = Process(name, self.new_file_table(nofile), uid, self._pid)
        self.procs[name] = p
        return p

    def timer_expiry(self, now: float, delay: float) -> float:
        """When a kernel timer armed now for ``delay`` fires: on the timer wheel's bucket boundary."""
        return wheel_expiry(now, delay)

    def new_file_table(self, nofile: int) -> FileTable:
        return FileTable(nofile)

    def _mib(self, name: str, n: int = 1) -> None:
        self.mib[name] = self.mib.get(name, 0) + n

    # ------------------------------------------------------------------ syscall entry
    def syscall(self, proc: str, call: str, args: dict[str, Any], now: float) -> Outcome:
        self.now = now
        TRAIL.clear()
        p = self.procs[proc]
        try:
            ret = getattr(self, "sys_" + call)(p, **args)
            out = Outcome(ret=ret)
        except SysError as e:
            out = Outcome(ret=-1, err=e.name, rule=e.rule)
        except _Block as b:
            origin = TRAIL.rules[0] if TRAIL.rules else None
            out = Outcome(blocked=Blocked(proc, call, self._wrap_resume(b.resume, origin), b.reason, b.key))
        out.trail = list(TRAIL.rules)
        out.facts = list(TRAIL.facts)
        if out.rule is None:
            out.rule = decisive(out.trail)
        return out

    def _wrap_resume(self, fn: Callable[[float], Any], origin: str | None = None) -> Callable[[float], Outcome]:
        def resume(now: float) -> Outcome:
            self.now = now
            TRAIL.clear()
            try:
                out = Outcome(ret=fn(now))
            except SysError as e:
                out = Outcome(ret=-1, err=e.name, rule=e.rule)
            except _Block as b:
                return Outcome(blocked=Blocked("", "", self._wrap_resume(b.resume, origin), b.reason, b.key))
            out.trail, out.facts = list(TRAIL.rules), list(TRAIL.facts)
            if out.rule is None:
                out.rule = decisive(out.trail) or origin
            return out

        return resume

    def _sock(self, p: Process, fd: int) -> tuple[OpenFile, Sock]:
        f = p.files.get(fd)
        return f, f.sock

    # ------------------------------------------------------------------ fd calls
    @rule("sys.socket", "sockets")
    def sys_socket(self, p: Process, family: str = "AF_INET", type: str = "SOCK_STREAM",
                   protocol: Any = 0, nonblock: bool = False, **_: Any) -> int:
        """__sys_socket() in net/socket.c: validate, reserve the lowest fd, then create the socket."""
        kind = socket_kind(family, type, protocol, p.uid == 0)
        fd = p.files.alloc_fd()
        self.files.charge(p.uid == 0)
        fam = 4 if family == "AF_INET" else 6
        sk = Sock(fam, kind, p.uid, self.sysctls["tcp_wmem"][1], self.sysctls["tcp_rmem"][1],
                  bool(self.sysctls["bindv6only"]))
        f = OpenFile(sk)
        f.nonblock = nonblock
        p.files.install(fd, f)
        if kind == "tcp":
            self.socks.add(sk)
        return fd

    @rule("sys.close", "fd")
    def sys_close(self, p: Process, sock: int) -> int:
        """close(2), close_fd() in fs/file.c: drop one reference; the socket is released with the last (sock_close)."""
        f = p.files.fds.get(sock)
        if f is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.close")
        p.files.remove(sock)
        if f.sock is not None:
            self._fput(f, exiting=False)
        return 0

    def _fput(self, f: OpenFile, exiting: bool) -> None:
        f.f_count -= 1
        if f.f_count > 0:
            fact(f"{f.f_count} other reference(s) to this socket remain: nothing is sent")
            return
        self.files.release()
        self._inet_release(f.sock, exiting)

    @rule("sys.dup", "fd")
    def sys_dup(self, p: Process, sock: int) -> int:
        """dup(2), f_dupfd() in fs/file.c: a new fd (lowest free) for the same open file."""
        f = p.files.fds.get(sock)
        if f is None:
            raise SysError("EBADF", "sys.dup")
        fd = p.files.alloc_fd()
        p.files.install(fd, f)
        return fd

    @rule("sys.dup2", "fd")
    def sys_dup2(self, p: Process, sock: int, fd: int) -> int:
        """dup2(2), do_dup2() in fs/file.c: EBADF past RLIMIT_NOFILE; an open target is closed silently."""
        f = p.files.fds.get(sock)
        if f is None:
            raise SysError("EBADF", "sys.dup2")
        if fd >= p.files.nofile:
            fact(f"target fd {fd} is not below RLIMIT_NOFILE {p.files.nofile}")
            raise SysError("EBADF", "sys.dup2")
        if fd == sock:
            return fd
        old = p.files.fds.get(fd)
        if old is not None:
            p.files.remove(fd)
            if old.sock is not None:
                self._fput(old, exiting=False)
        p.files.install(fd, f)
        return fd

    @rule("sys.fork", "fd")
    def sys_fork(self, p: Process, **kw: Any) -> int:
        """fork(2), dup_fd() in fs/file.c: the child gets a copy of the fd table sharing every open file."""
        name = kw["as"]
        self._pid += 1
        child = Process(name, p.files.copy(), p.uid, self._pid)
        self.procs[name] = child
        fact(f"process {name} shares {len(child.files.fds)} open socket(s) with {p.name}")
        return 0

    @rule("sys.exit", "fd")
    def sys_exit(self, p: Process) -> int:
        """do_exit() -> exit_files(): every fd is closed, the highest first (task_work runs last-in first-out); a positive SO_LINGER is ignored."""
        return self._exit_next(p)

    def _exit_next(self, p: Process) -> int:
        # each release's segments cross loopback before the next release (task_work_run())
        while p.files.fds:
            fd = max(p.files.fds)
            f = p.files.remove(fd)
            if f.sock is not None:
                self._fput(f, exiting=True)
                if p.files.fds and self.outbox:
                    raise _Block(lambda now: self._exit_next(p), "exit: releasing the next file")
        p.alive = False
        return 0

    @rule("sys.set_nonblocking", "fd")
    def sys_set_nonblocking(self, p: Process, sock: int, on: bool = True, **_: Any) -> int:
        """fcntl(2) F_SETFL O_NONBLOCK: a flag of the open file (any file), shared by its dup/fork copies."""
        f = p.files.fds.get(sock)
        if f is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.set_nonblocking")
        f.nonblock = bool(on)
        return 0

    # ------------------------------------------------------------------ options
    def sys_setsockopt(self, p: Process, sock: int, opt: str, value: Any = 1) -> int:
        _, sk = self._sock(p, sock)
        if sk.kind != "tcp" and opt.startswith("TCP_"):
            raise SysError("ENOPROTOOPT", "sockopt.set")
        self.set_option(sk, opt, value)
        return 0

    def set_option(self, sk: Sock, opt: str, value: Any) -> None:
        setsockopt(sk, opt, value, self.sysctls)

    def sys_getsockopt(self, p: Process, sock: int, opt: str) -> Any:
        _, sk = self._sock(p, sock)
        if opt == "TCP_SYNCNT":
            return sk.syn_retries or self.sysctls["tcp_syn_retries"]
        if opt == "TCP_LINGER2":
            return sk.linger2 if sk.linger2 < 0 else (sk.linger2 or self.sysctls["tcp_fin_timeout"])
        return getsockopt(sk, opt)

    @rule("sys.getsockname", "sockets")
    def sys_getsockname(self, p: Process, sock: int) -> int:
        """getsockname(2), inet_getname() in net/ipv4/af_inet.c: the bound local port (0 if none)."""
        _, sk = self._sock(p, sock)
        return sk.sport

    # ------------------------------------------------------------------ bind / listen
    def _is_local(self, fam: int, addr: str) -> bool:
        ip = ip_addr(addr)
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            else:
                return ip in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))
        return ip == ipaddress.IPv4Address("0.0.0.0") or ip in LOOPBACK4

    @staticmethod
    def _v6_form(sk: Sock, addr: str) -> str:
        """The scenario convention: an IPv4 address given to an AF_INET6 socket means its v4-mapped
        form (0.0.0.0 means ::), as a program using getaddrinfo with AI_V4MAPPED would pass it."""
        ip = ip_addr(addr)
        if sk.family == 6 and ip.version == 4:
            return "::" if ip == ipaddress.IPv4Address("0.0.0.0") else f"::ffff:{ip}"
        return addr

    @rule("sys.bind", "ports")
    def sys_bind(self, p: Process, sock: int, addr: str = "0.0.0.0", port: int = 0) -> int:
        """__inet_bind() in net/ipv4/af_inet.c (inet6_bind() for IPv6); bind(2)."""
        _, sk = self._sock(p, sock)
        addr = self._v6_form(sk, addr)
        ip = ip_addr(addr)
        if (ip.version == 6) != (sk.family == 6):
            fact(f"an {('AF_INET6' if ip.version == 6 else 'AF_INET')} address given to an "
                 f"{('AF_INET6' if sk.family == 6 else 'AF_INET')} socket")
            raise SysError("EAFNOSUPPORT" if sk.family == 4 else "EINVAL", "sys.bind")
        privileged = port and port < self.sysctls["ip_unprivileged_port_start"] and p.uid != 0
        bound = sk.tcp_state != State.CLOSE or sk.in_bhash  # inet_num, not what getsockname() shows

        def check_address() -> None:
            if sk.family == 6 and sk.v6only_opt and ip.ipv4_mapped is not None:
                fact("an IPV6_V6ONLY socket cannot bind a v4-mapped address (__inet6_bind)")
                raise SysError("EINVAL", "sys.bind")
            if not self._is_local(sk.family, addr):
                fact(f"{addr} is not an address of this host (only loopback exists in the namespace)")
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
        old = (sk.addr6, sk.saddr4, sk.laddr)
        sk.set_local(addr, 0, bind=True)
        try:
            if port == 0 and sk.bind_no_port and sk.kind == "tcp":
                fact("IP_BIND_ADDRESS_NO_PORT: only the address is recorded; connect() picks the port")
                return 0
            port = self.bind_port(table, sk, port)
        except SysError:
            sk.addr6, sk.saddr4, sk.laddr = old
            raise
        sk.lport = sk.sport = port
        sk.connect_bind = False  # the port comes from bind() now
        table.add(port, sk)
        sk.in_bhash = True
        sk.bindaddr_lock = sk.laddr not in ("0.0.0.0", "::")
        return 0

    def bind_port(self, table: BindTable, sk: Sock, port: int) -> int:
        """The get_port step of bind(): an explicit port is checked, port 0 is chosen."""
        if port == 0:
            lo, hi = self.sysctls["ip_local_port_range"]
            return table.find_open_port(sk, lo, hi, self.sysctls["ip_local_reserved_ports"],
                                        self.rng.randrange, bool(self.sysctls["ip_autobind_reuse"]))
        table.check_explicit(sk, port)
        sk.bindport_lock = True
        return port

    @rule("sys.listen", "tcp")
    def sys_listen(self, p: Process, sock: int, backlog: int = 128) -> int:
        """inet_listen() in net/ipv4/af_inet.c; __sys_listen() caps the backlog at somaxconn."""
        _, sk = self._sock(p, sock)
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
        self._listen_start(sk)
        return 0

    @rule("listen.recheck", "ports")
    def _listen_start(self, sk: Sock) -> None:
        """inet_csk_listen_start() in net/ipv4/inet_connection_sock.c: set LISTEN, then re-check the port (get_port)."""
        prev = sk.tcp_state
        sk.tcp_state = State.LISTEN
        if not sk.in_bhash:  # inet_num == 0: never bound, or its port was released
            try:
                port = self.listen_autobind(sk)
            except SysError:
                sk.tcp_state = prev
                raise
            sk.lport = sk.sport = port
            self.bhash.add(port, sk)
            sk.in_bhash = True
        else:
            try:
                bad = self.bhash.conflicts(sk, sk.lport, relax=True, reuseport_ok=True)
                if bad:
                    from .ports import describe_owner

                    for o in bad[:3]:
                        fact(f"now LISTEN, port {sk.lport} conflicts with {describe_owner(o)}")
                    raise SysError("EADDRINUSE", "listen.recheck")
            except SysError:
                sk.tcp_state = prev
                raise
        self.listeners.setdefault(sk.lport, []).append(sk)
        self.tcp_set_state(sk, State.LISTEN)

    @rule("listen.autobind", "ports", "ephemeral")
    def listen_autobind(self, sk: Sock) -> int:
        """inet_csk_listen_start() -> inet_csk_get_port(sk, 0): listen() on an unbound socket picks a port like bind(0)."""
        lo, hi = self.sysctls["ip_local_port_range"]
        port = self.bhash.find_open_port(sk, lo, hi, self.sysctls["ip_local_reserved_ports"],
                                         self.rng.randrange, bool(self.sysctls["ip_autobind_reuse"]))
        fact(f"listen() on an unbound socket autobinds port {port}")
        return port

    # ------------------------------------------------------------------ connect
    def _route_saddr(self, sk: Sock, daddr: str) -> str:
        if sk.laddr not in ("0.0.0.0", "::"):
            return sk.laddr
        ip = ip_addr(daddr)
        return "::1" if isinstance(ip, ipaddress.IPv6Address) else "127.0.0.1"

    @rule("sys.connect", "tcp")
    def sys_connect(self, p: Process, sock: int, addr: str = "127.0.0.1", port: int = 0) -> int:
        """__inet_stream_connect() in net/ipv4/af_inet.c; tcp_v4_connect() in net/ipv4/tcp_ipv4.c."""
        f, sk = self._sock(p, sock)
        if sk.kind != "tcp":
            raise SysError("EOPNOTSUPP", "sys.connect")
        if sk.sock_state == SS_CONNECTED:
            fact("the socket is already connected")
            raise SysError("EISCONN", "sys.connect")
        if sk.sock_state == SS_CONNECTING:
            if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
                fact("a non-blocking connect() is still in progress")
                raise SysError("EALREADY", "sys.connect")
            return self._connect_finish(sk)
        if sk.sock_state != SS_UNCONNECTED:
            raise SysError("EINVAL", "sys.connect")
        addr = self._v6_form(sk, addr)
        if sk.tcp_state != State.CLOSE:
            fact(f"the socket is {State(sk.tcp_state).name}")
            raise SysError("EISCONN", "sys.connect")
        daddr = norm_addr(addr)
        dip = ip_addr(daddr)
        if sk.family == 4 and dip.version == 6:
            raise SysError("EAFNOSUPPORT", "sys.connect")
        if not (dip in LOOPBACK4 if dip.version == 4 else dip == ipaddress.IPv6Address("::1")):
            if str(dip) in ("0.0.0.0", "::"):
                # ip_route_output_key_hash_rcu(): "any" means this host: the socket's own source
                # address when it has one, else loopback
                own = sk.laddr if sk.laddr not in ("0.0.0.0", "::") else None
                daddr = own or ("127.0.0.1" if dip.version == 4 else "::1")
                fact(f"connect() to {addr} goes to {daddr}")
            else:
                fact(f"no route to {addr}: the namespace has only loopback")
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
        saddr = self._route_saddr(sk, daddr)
        self._inet_hash_connect(sk, saddr, daddr, port)
        sk.sock_state = SS_CONNECTING
        self._apply(sk, "connect")
        if f.nonblock:
            fact("non-blocking socket: the handshake goes on after connect() returns")
            raise SysError(self.NONBLOCK_CONNECT_ERR, "sys.connect")
        return self._connect_wait(sk)

    def _connect_wait(self, sk: Sock) -> int:
        if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
            raise _Block(lambda now: self._connect_wait(sk), "connect: waiting for the handshake", sk)
        return self._connect_finish(sk)

    @rule("connect.result", "tcp")
    def _connect_finish(self, sk: Sock) -> int:
        """inet_wait_for_connect()/__inet_stream_connect(): CLOSE after SYN_SENT reports sk_err."""
        if sk.tcp_state == State.CLOSE:
            err = sk.err or "ECONNABORTED"
            sk.err = None
            sk.sock_state = SS_UNCONNECTED
            self._disconnect(sk)
            fact(f"the connection attempt ended with {err}")
            raise SysError(err, "connect.result")
        sk.sock_state = SS_CONNECTED
        return 0

    def _inet_hash_connect(self, sk: Sock, saddr: str, daddr: str, dport: int) -> None:
        sysctl = self.sysctls
        if sk.lport:
            # explicitly bound: only the 4-tuple is checked (check_established with twp == NULL)
            key = (saddr, sk.lport, daddr, dport)
            self._check_established(sk, key, explicitly_bound=True)
            sk.raddr, sk.rport = daddr, dport
            if sk.laddr in ("0.0.0.0", "::"):
                # inet_bhash2_update_saddr(): a wildcard-bound socket now owns its source address only
                fact(f"bound to the wildcard: connect() narrows the port's owner to {saddr}")
                sk.set_local(saddr, sk.lport)
            sk.laddr = saddr
            self._ehash_add(sk)
            return
        lo, hi = sysctl["ip_local_port_range"]
        h = hashlib.blake2b(f"{saddr}|{daddr}|{dport}|{self.secret}".encode(), digest_size=8)
        port_offset = int.from_bytes(h.digest(), "little")
        index = port_offset & 255
        start = (self.perturb[index] + (port_offset >> 32)) & 0xFFFFFFFF

        ehash = self.ehash
        reuse_by_age = bool(sysctl["tcp_tw_reuse"]) and bool(sysctl["tcp_timestamps"])
        now_ms, delay_ms = self.now * 1000.0, sysctl["tcp_tw_reuse_delay"]

        def established_ok(port: int) -> bool:
            # the probe of __inet_check_established() for one candidate port, without the
            # bookkeeping of a rule call (the chosen port is checked again as a rule below)
            other = ehash.get((saddr, port, daddr, dport))
            if other is None:
                return True
            if other.__class__ is not TimeWaitSock or not reuse_by_age:
                return False
            return (other.ts_recent and other.substate != State.FIN_WAIT2
                    and now_ms - other.entry * 1000.0 > delay_ms)

        # Nothing frees a port for this destination but a hash or bind-table removal, unless
        # TIME_WAIT entries become reusable with age: a scan that found nothing stays valid.
        dest = (saddr, daddr, dport)
        gens = (self.ehash_frees, self.bhash.frees)
        if not reuse_by_age and self.exhausted.get(dest) == gens:
            fact(f"no port in {lo}-{hi} has a free 4-tuple to this destination (nothing was freed "
                 "since the last full search)")
            raise SysError("EADDRNOTAVAIL", "connect.hash_connect")
        counts = self.dest_ports.get(dest)
        per_pass = (self._eph[1] - self._eph[0] + 1) // 2  # ports one parity pass visits
        skip = None
        if (counts is not None and not reuse_by_age and not sysctl["ip_local_reserved_ports"]
                and not self.bhash.bind_owner_in(lo, hi)):
            def skip(parity: int) -> bool:
                # every port of this parity already carries a 4-tuple to this destination
                return counts[parity] >= per_pass
        try:
            port, i = self.bhash.hash_connect(lo, hi, sysctl["ip_local_reserved_ports"], start,
                                              established_ok, skip)
        except SysError:
            self.exhausted[dest] = gens
            raise
        i = max(i, self.rng.randrange(8) * 2)
        self.perturb[index] = (self.perturb[index] + i + 2) & 0xFFFFFFFF
        key = (saddr, port, daddr, dport)
        self._check_established(sk, key, False)  # recycles a TIME_WAIT entry if allowed
        sk.set_local(saddr if sk.laddr in ("0.0.0.0", "::") else sk.laddr, port)
        sk.laddr = saddr
        sk.connect_bind = True
        sk.raddr, sk.rport = daddr, dport
        self.bhash.add(port, sk)
        sk.in_bhash = True
        self._ehash_add(sk)

    @rule("connect.check_established", "ports")
    def _check_established(self, sk: Sock, key: tuple, explicitly_bound: bool, probe: bool = False) -> bool:
        """__inet_check_established() in net/ipv4/inet_hashtables.c: the 4-tuple must be unused or a reusable TIME_WAIT."""
        other = self.ehash.get(key)
        if other is None:
            return True
        if isinstance(other, TimeWaitSock):
            s = self.sysctls
            if twsk_unique(other, explicitly_bound, s["tcp_tw_reuse"], s["tcp_tw_reuse_delay"], self.now):
                if not probe:
                    self._mib("TWRecycled")
                    self.tw.recycled += 1
                    self._tw_kill(other)
                return True
            if explicitly_bound and not probe:
                fact(f"the 4-tuple {key[0]}:{key[1]} -> {key[2]}:{key[3]} is held by a TIME_WAIT entry")
                raise SysError("EADDRNOTAVAIL", "connect.check_established")
            return False
        if explicitly_bound and not probe:
            fact(f"the 4-tuple {key[0]}:{key[1]} -> {key[2]}:{key[3]} is in use")
            raise SysError("EADDRNOTAVAIL", "connect.check_established")
        return False

    # ------------------------------------------------------------------ accept
    @rule("sys.accept", "tcp")
    def sys_accept(self, p: Process, sock: int, **kw: Any) -> int:
        """__sys_accept4_file() in net/socket.c: the new fd is reserved first (EMFILE), then inet_csk_accept() checks the listener."""
        f0 = p.files.fds.get(sock)
        if f0 is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.accept")
        fd = p.files.alloc_fd()  # before anything else: EMFILE even on a socket that cannot accept
        f, sk = self._sock(p, sock)
        if sk.kind != "tcp":
            raise SysError("EOPNOTSUPP", "sys.accept")
        if sk.tcp_state != State.LISTEN:
            fact(f"the socket is {State(sk.tcp_state).name}, not LISTEN")
            raise SysError("EINVAL", "sys.accept")
        if not sk.accept_q:
            if f.nonblock:
                fact("the accept queue is empty and the socket is non-blocking")
                raise SysError("EAGAIN", "sys.accept")
            raise _Block(lambda now: self.sys_accept(p, sock), "accept: the accept queue is empty", sk)
        child = sk.accept_q.popleft()
        child.parent = None
        self.files.charge(p.uid == 0)
        p.files.install(fd, OpenFile(child))
        fact(f"dequeued a connection from {child.raddr}:{child.rport}; {len(sk.accept_q)} left")
        return fd

    # ------------------------------------------------------------------ data
    @rule("sys.send", "buffers")
    def sys_send(self, p: Process, sock: int, bytes: int, flags: list[str] | None = None) -> int:
        """tcp_sendmsg_locked() in net/ipv4/tcp.c: queue into the send buffer; wait or EAGAIN when full (sk_stream_wait_memory)."""
        f, sk = self._sock(p, sock)
        nonblock = f.nonblock or "MSG_DONTWAIT" in (flags or [])
        if sk.kind != "tcp":
            raise SysError("EDESTADDRREQ", "sys.send")
        return self._send(sk, bytes, nonblock, 0)

    def _send(self, sk: Sock, total: int, nonblock: bool, copied: int) -> int:
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
            raise _Block(lambda now: self._send(sk, total, nonblock, copied), "send: connecting", sk)
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
            self.pool.charge(n)
            copied += n
        # ACKs for what is pushed now are processed when the call releases the socket lock
        # (release_sock() runs the backlog), so they free room only for a later call.
        self._push(sk)
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
        raise _Block(lambda now: self._send(sk, total, nonblock, return_val), "send: the send buffer is full",
                     sk)

    @rule("sys.recv", "buffers")
    def sys_recv(self, p: Process, sock: int, bytes: int = 65536, flags: list[str] | None = None) -> int:
        """tcp_recvmsg_locked() in net/ipv4/tcp.c: data first; then EOF (SOCK_DONE), sk_err, shutdown, ENOTCONN."""
        f, sk = self._sock(p, sock)
        flags = flags or []
        nonblock = f.nonblock or "MSG_DONTWAIT" in flags
        if sk.kind != "tcp":
            raise SysError("EAGAIN" if nonblock else "EOPNOTSUPP", "sys.recv")
        if "MSG_OOB" in flags:
            raise SysError("EINVAL", "sys.recv")
        if "MSG_WAITALL" in flags and not nonblock:
            return self._recv_all(sk, bytes, 0)
        return self._recv(sk, bytes, nonblock, "MSG_PEEK" in flags)

    def _recv_all(self, sk: Sock, want: int, got: int) -> int:
        """MSG_WAITALL (recv(2)): block until the full amount, EOF, an error, or a signal."""
        while got < want:
            if sk.rcv_q:
                got += self._recv(sk, want - got, True, False)
                continue
            if sk.done or sk.err or sk.shutdown & RCV_SHUTDOWN or sk.tcp_state == State.CLOSE:
                if got:
                    return got
                return self._recv(sk, want, True, False)
            total = got
            raise _Block(lambda now: self._recv_all(sk, want, total), "recv: MSG_WAITALL", sk)
        return got

    def _recv(self, sk: Sock, want: int, nonblock: bool, peek: bool) -> int:
        if sk.tcp_state == State.LISTEN:
            raise SysError("ENOTCONN", "sys.recv")
        if sk.rcv_q and want:
            n = min(want, sk.rcv_q)
            if not peek:
                sk.rcv_q -= n
                self.pool.uncharge(n)
                self._window_update(sk)
            return n
        if want == 0:
            return 0
        if sk.done:
            fact("the peer's FIN was received: end of stream")
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
        raise _Block(lambda now: self._recv(sk, want, nonblock, peek), "recv: the receive queue is empty", sk)

    @rule("sys.shutdown", "tcp")
    def sys_shutdown(self, p: Process, sock: int, how: str = "SHUT_WR") -> int:
        """inet_shutdown() in net/ipv4/af_inet.c; tcp_shutdown() in net/ipv4/tcp.c: acts on the socket, so on every fd copy."""
        _, sk = self._sock(p, sock)
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
                self._disconnect(sk)
                sk.sock_state = SS_UNCONNECTED
        elif st == State.SYN_SENT:
            self._disconnect(sk)
            sk.sock_state = SS_UNCONNECTED
        else:
            sk.shutdown |= mask
            if mask & SEND_SHUTDOWN and st in (State.ESTABLISHED, State.SYN_RECV, State.CLOSE_WAIT):
                self._apply(sk, "shutdown_wr")
        if err:
            raise SysError(err, "sys.shutdown")
        return 0

    # ------------------------------------------------------------------ release
    @rule("tcp.close", "tcp")
    def _inet_release(self, sk: Sock, exiting: bool) -> None:
        """__tcp_close() in net/ipv4/tcp.c: unread data -> RST; SO_LINGER {1,0} -> RST; else FIN."""
        sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
        if sk.kind != "tcp":
            (self.udp_ports if sk.kind == "udp" else self.bhash).remove(sk.lport, sk)
            return
        st = sk.tcp_state
        sk.dead = True
        if st == State.LISTEN:
            self._apply(sk, "close")
            self._destroy(sk)
            return
        unread = sk.rcv_q
        if unread:
            sk.rcv_q = 0
            self.pool.uncharge(unread)
        if st == State.CLOSE:
            self._destroy(sk)
            return
        if unread:
            fact(f"{unread} unread byte(s) in the receive queue: the connection is reset (RFC 2525 2.17)")
            self._mib("TCPAbortOnClose")
            self._apply(sk, "abort")
        elif sk.linger[0] and sk.linger[1] == 0:
            fact("SO_LINGER {1, 0}: abortive close, RST instead of FIN")
            self._mib("TCPAbortOnData")
            self._apply(sk, "abort")
        else:
            self._apply(sk, "close")
        st = sk.tcp_state
        if st == State.FIN_WAIT2:
            self._orphan_fin_wait2(sk)
            return
        if st == State.CLOSE:
            self._destroy(sk)

    def _orphan_fin_wait2(self, sk: Sock) -> None:
        if sk.linger2 < 0:
            self._apply_raw(sk, State.CLOSE, ("send_rst",))
            self._destroy(sk)
            return
        tmo = max(float(self.sysctls["tcp_fin_timeout"]), 0.7)
        self._time_wait(sk, State.FIN_WAIT2, tmo)

    def _destroy(self, sk: Sock) -> None:
        """inet_csk_destroy_sock(): unhash, leave the bind bucket, free buffers."""
        self._ehash_del(sk)
        if sk.in_bhash:
            self.bhash.remove(sk.lport, sk)
            sk.in_bhash = False
        if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
            self.listeners[sk.lport].remove(sk)
            if not self.listeners[sk.lport]:
                del self.listeners[sk.lport]
        self._drop_queues(sk)
        if sk.rcv_q:
            self.pool.uncharge(sk.rcv_q)
            sk.rcv_q = 0
        self.socks.discard(sk)

    def _disconnect(self, sk: Sock) -> None:
        """tcp_disconnect(): back to CLOSE; a listener drops its queue, a connection is reset."""
        st = sk.tcp_state
        if st == State.LISTEN:
            self._listen_stop(sk)
            if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
                self.listeners[sk.lport].remove(sk)
                if not self.listeners[sk.lport]:
                    del self.listeners[sk.lport]
        elif st in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.FIN_WAIT2,
                    State.SYN_RECV, State.LAST_ACK, State.CLOSING):
            self._send_seg(sk, RST)
            sk.err = "ECONNRESET"  # tcp_need_reset(): RST sent, sk_err = ECONNRESET
        elif st == State.SYN_SENT:
            sk.err = "ECONNRESET"  # an aborted connection attempt reports ECONNRESET
        self.tcp_set_state(sk, State.CLOSE)
        self._ehash_del(sk)
        sk.seq_gap += sk.max_window + 2  # tcp_disconnect(): write_seq += max_window + 2 (listeners too)
        if sk.in_bhash and not sk.bindport_lock:
            self.bhash.remove(sk.lport, sk)
            sk.in_bhash = False
            sk.lport = 0
            sk.connect_bind = False
        sk.raddr, sk.rport = None, 0
        sk.done = False
        sk.shutdown = 0
        if not sk.bindaddr_lock:
            # inet_reset_saddr(): an address that bind() did not choose is forgotten
            sk.set_local("::" if sk.family == 6 else "0.0.0.0", sk.lport)

    def _listen_stop(self, sk: Sock) -> None:
        """inet_csk_listen_stop(): queued children and pending requests are reset."""
        while sk.accept_q:
            child = sk.accept_q.popleft()
            child.dead = True
            if child.tcp_state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1,
                                   State.FIN_WAIT2, State.SYN_RECV):
                self._apply(child, "abort")  # inet_child_forget() -> tcp_disconnect(): RST
            self._destroy(child)
        for key, other in list(self.ehash.items()):
            if isinstance(other, Sock) and other.is_request and other.parent is sk:
                self._destroy(other)

    # ------------------------------------------------------------------ state machine
    def tcp_set_state(self, sk: Sock, new: State) -> None:
        """tcp_set_state(): CLOSE unhashes and drops an autobound port (kept if SOCK_BINDPORT_LOCK)."""
        sk.tcp_state = int(new)
        self.woken.add(sk)
        if new == State.CLOSE:
            self._ehash_del(sk)
            if sk.lport in self.listeners and sk in self.listeners[sk.lport]:
                self.listeners[sk.lport].remove(sk)
                if not self.listeners[sk.lport]:
                    del self.listeners[sk.lport]
            if sk.in_bhash and not sk.bindport_lock and not sk.dead:
                # inet_put_port(): inet_num = 0; getsockname() still shows inet_sport
                self.bhash.remove(sk.lport, sk)
                sk.in_bhash = False
                sk.lport = 0
                sk.connect_bind = False  # __inet_put_port() clears SOCK_CONNECT_BIND
        if new == State.ESTABLISHED and sk.established_at is None:
            sk.established_at = self.now

    def _apply(self, sk: Sock, event: str) -> None:
        new, actions = tcp.transition(State(sk.tcp_state), event)
        self._apply_raw(sk, new, actions, event)

    def _apply_raw(self, sk: Sock, new: State, actions: tuple[str, ...], event: str = "") -> None:
        old = State(sk.tcp_state)
        if "set_err" in actions:
            sk.err = ("ETIMEDOUT" if event == "syn_timeout" else tcp.reset_errno(old))
        if "send_rst" in actions:
            # the RST answers with the connection's addresses, before CLOSE releases the port
            self._send_seg(sk, RST)
        if new != old:
            self.tcp_set_state(sk, new)
        for a in actions:
            if a == "send_syn":
                sk.syn_unacked = True
                sk.seq_gap = 0  # tcp_connect_init(): snd_una = write_seq for the new attempt
                self._send_seg(sk, SYN)
            elif a == "arm_syn_timer":
                sk.syn_gen += 1
                sk.syn_tries = 0
                self.timer_requests.append(("syn", 1.0, sk, sk.syn_gen))
            elif a == "send_synack":
                self._send_seg(sk, SYN | ACK)
            elif a == "send_ack":
                self._send_seg(sk, ACK)
            elif a == "send_fin":
                sk.fin_pending = True
                self._push(sk)
            elif a == "send_rst":
                sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
                self._drop_queues(sk)
            elif a == "listen_stop":
                self._listen_stop(sk)
            elif a == "time_wait":
                self._time_wait(sk, State.TIME_WAIT, self.TIME_WAIT_LEN)
            elif a == "fin_wait2":
                sk.shutdown |= SEND_SHUTDOWN
                if sk.dead:
                    self._orphan_fin_wait2(sk)
        if new == State.CLOSE and sk.dead:
            self._destroy(sk)

    def _drop_queues(self, sk: Sock) -> None:
        if sk.snd_q:
            self.pool.uncharge(sk.snd_q)
        sk.snd_una = sk.snd_nxt = sk.write_seq

    @rule("tw.enter", "timewait")
    def _time_wait(self, sk: Sock, substate: State, timeo: float) -> None:
        """tcp_time_wait() in net/ipv4/tcp_minisocks.c: a TIME_WAIT minisock replaces the socket for 2MSL."""
        admitted = self.tw.admit()
        key = sk.key()
        if admitted:
            tw = TimeWaitSock(sk, int(substate), self.now, self.timer_expiry(self.now, timeo), sk.used_ts)
            self._ehash_del(sk)
            self._eh_put(key, tw)
            self.bhash.add(sk.lport, tw)
            self.timer_requests.append(("tw", timeo, tw, tw.gen))
            fact(f"{sk.laddr}:{sk.lport} -> {sk.raddr}:{sk.rport} enters "
                 f"{'TIME_WAIT' if substate == State.TIME_WAIT else 'FIN_WAIT2 (orphan)'} for {timeo:g} s")
        else:
            self._mib("TCPTimeWaitOverflow")
        # tcp_done(): the full socket goes to CLOSE
        sk.tcp_state = int(State.CLOSE)
        self._ehash_del(sk)
        if sk.dead or not sk.bindport_lock:
            if sk.in_bhash:
                self.bhash.remove(sk.lport, sk)
                sk.in_bhash = False
        sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
        if sk.dead:
            self._destroy(sk)

    def _tw_kill(self, tw: TimeWaitSock) -> None:
        """inet_twsk_kill(): the entry leaves ehash and the bind bucket; the port may become free."""
        key = (tw.laddr, tw.lport, tw.raddr, tw.rport)
        if self.ehash.get(key) is tw:
            self._eh_pop(key)
        self.bhash.remove(tw.lport, tw)
        tw.gen += 1
        self.tw.release()

    # ------------------------------------------------------------------ hashing
    def _ehash_add(self, sk: Sock) -> None:
        self._eh_put(sk.key(), sk)
        sk.in_ehash = True

    def _ehash_del(self, sk: Sock) -> None:
        if sk.in_ehash:
            key = sk.key()
            if self.ehash.get(key) is sk:
                self._eh_pop(key)
            sk.in_ehash = False

    def _eh_put(self, key: tuple, obj: Any) -> None:
        if key not in self.ehash:
            lo, top = self._eph
            if lo <= key[1] < top:
                d = (key[0], key[2], key[3])
                c = self.dest_ports.get(d)
                if c is None:
                    c = self.dest_ports[d] = [0, 0]
                c[key[1] & 1] += 1
        self.ehash[key] = obj

    def _eh_pop(self, key: tuple) -> None:
        del self.ehash[key]
        self.ehash_frees += 1
        lo, top = self._eph
        if lo <= key[1] < top:
            self.dest_ports[(key[0], key[2], key[3])][key[1] & 1] -= 1

    # ------------------------------------------------------------------ output
    def _send_seg(self, sk: Sock, flags: int, length: int = 0) -> None:
        if sk.raddr is None or sk.blackhole:
            return
        free = max(0, buffers.receive_window(sk.rcvbuf, sk.rcv_ratio) - sk.rcv_q)
        self.outbox.append(Segment((sk.laddr, sk.lport), (sk.raddr, sk.rport), flags, length,
                                   sk.rcv_nxt, free, acks_fin=sk.done,
                                   ts=bool(self.sysctls["tcp_timestamps"])))

    def _push(self, sk: Sock) -> None:
        """tcp_push(): send queued data within the peer's window, then a pending FIN."""
        if sk.tcp_state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.LAST_ACK, State.CLOSING):
            return
        room = sk.snd_edge - sk.snd_nxt
        if sk.unsent and room > 0:
            n = min(sk.unsent, room)
            sk.snd_nxt += n
            self._send_seg(sk, ACK | DATA, n)
        if sk.fin_pending and not sk.unsent and not sk.fin_sent:
            sk.fin_sent = True
            self._send_seg(sk, FIN | ACK)

    def _window_update(self, sk: Sock) -> None:
        if sk.raddr is not None and sk.tcp_state in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2):
            self._send_seg(sk, ACK)

    # ------------------------------------------------------------------ input
    def deliver(self, seg: Segment, now: float) -> None:
        """A segment arrives on loopback: demultiplex (ehash, then listeners), else answer RST."""
        self.now = now
        key = (seg.dst[0], seg.dst[1], seg.src[0], seg.src[1])
        sk = self.ehash.get(key)
        if isinstance(sk, TimeWaitSock):
            self._tw_input(sk, seg)
            return
        if sk is not None:
            self._rcv(sk, seg)
            self.woken.add(sk)
            return
        if seg.flags & SYN and not seg.flags & ACK:
            lsk = self._lookup_listener(seg.dst[0], seg.dst[1], seg)
            if lsk is not None:
                self._listener_syn(lsk, seg)
                return
        if not seg.flags & RST:
            self._reset_reply(seg)

    def _reset_reply(self, seg: Segment) -> None:
        """tcp_v4_send_reset(): no socket for this segment -> RST."""
        self.outbox.append(Segment(seg.dst, seg.src, RST | ACK))

    @rule("tcp.lookup_listener", "tcp", "minor")
    def _lookup_listener(self, daddr: str, dport: int, seg: Segment) -> Sock | None:
        """__inet_lookup_listener() in net/ipv4/inet_hashtables.c: best address match; SO_REUSEPORT groups by hash."""
        best = self.best_listeners(daddr, dport, family_bonus=True)
        if not best:
            return None
        group = [s for s in best if s.reuseport]
        if len(group) > 1:
            h = hashlib.blake2b(f"{seg.src}|{seg.dst}|{self.secret}".encode(), digest_size=4)
            return group[int.from_bytes(h.digest(), "little") % len(group)]
        return best[0]

    def best_listeners(self, daddr: str, dport: int, family_bonus: bool) -> list[Sock]:
        """The listeners on ``dport`` that accept ``daddr`` with the best address score: a specific
        address beats a wildcard; with ``family_bonus`` an IPv4 listener beats a dual-stack one
        for an IPv4 destination (compute_score())."""
        best: list[Sock] = []
        score = -1
        dip = ip_addr(daddr)
        for sk in self.listeners.get(dport, []):
            if sk.family == 4 and dip.version == 6:
                continue
            if sk.family == 6 and dip.version == 4 and sk.ipv6only:
                continue
            if sk.laddr == daddr:
                s = 2
            elif sk.laddr in ("0.0.0.0", "::"):
                s = 1
            else:
                continue
            if family_bonus and sk.family == 4 and dip.version == 4:
                s += 1
            if s > score:
                best, score = [sk], s
            elif s == score:
                best.append(sk)
        return best

    @rule("listen.accept_queue_full", "tcp", "minor")
    def _acceptq_full(self, lsk: Sock) -> bool:
        """sk_acceptq_is_full() in include/net/sock.h: sk_ack_backlog > sk_max_ack_backlog (backlog N holds N+1)."""
        full = len(lsk.accept_q) > lsk.backlog
        if full:
            fact(f"accept queue holds {len(lsk.accept_q)} > backlog {lsk.backlog}: the SYN is dropped")
        return full

    def _listener_syn(self, lsk: Sock, seg: Segment) -> None:
        if self._acceptq_full(lsk):
            self.syn_to_full_listener(lsk, seg)
            return
        req = Sock(lsk.family, "tcp", lsk.uid, lsk.sndbuf, lsk.rcvbuf, lsk.v6only_opt)
        for a in ("reuse", "reuseport", "linger", "snd_lock", "rcv_lock", "nodelay",
                  "shutdown"):  # sk_clone_lock() copies the listener (but clears SOCK_BINDPORT_LOCK)
            setattr(req, a, getattr(lsk, a))
        req.is_request = True
        req.parent = lsk
        # tcp_v4_syn_recv_sock(): the child's rcv_saddr is the address the SYN was sent to
        dst = seg.dst[0]
        req.set_local(f"::ffff:{dst}" if lsk.family == 6 and ":" not in dst else dst, seg.dst[1])
        req.raddr, req.rport = seg.src
        req.tcp_state = int(State.SYN_RECV)
        req.snd_edge = seg.wnd
        req.used_ts = seg.ts and bool(self.sysctls["tcp_timestamps"])
        self._ehash_add(req)
        self.socks.add(req)
        self._send_seg(req, SYN | ACK)

    def _rcv(self, sk: Sock, seg: Segment) -> None:
        st = State(sk.tcp_state)
        if seg.flags & RST:
            if st in (State.CLOSE, State.LISTEN):
                return
            if sk.is_request:
                self._destroy(sk)
                return
            self._apply(sk, "rcv_rst")
            sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
            self._drop_queues(sk)
            return
        if seg.flags & SYN:
            if st == State.SYN_SENT and seg.flags & ACK:
                sk.snd_edge = seg.wnd
                sk.syn_unacked = False
                sk.used_ts = seg.ts and bool(self.sysctls["tcp_timestamps"])
                sk.syn_gen += 1
                self._apply(sk, "rcv_synack")
                if not sk.snd_lock:
                    sk.sndbuf = buffers.expand_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
            elif st == State.SYN_SENT:
                sk.snd_edge = seg.wnd
                self._apply(sk, "rcv_syn")
            elif st == State.SYN_RECV and seg.flags & ACK and not sk.is_request:
                sk.snd_edge = seg.wnd
                sk.syn_unacked = False
                self._apply(sk, "rcv_synack")
                if not sk.snd_lock:
                    sk.sndbuf = buffers.expand_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
                self._established_shut_wr(sk)
            return
        if st == State.SYN_RECV and sk.is_request:
            self._request_ack(sk, seg)
            return
        if st == State.SYN_RECV and seg.flags & ACK:
            self._apply(sk, "rcv_ack")
        st = State(sk.tcp_state)
        # data
        if seg.flags & DATA and seg.length:
            if st in (State.FIN_WAIT1, State.FIN_WAIT2) and sk.shutdown & RCV_SHUTDOWN:
                fact("data arrived after close(): the socket answers RST (tcp_rcv_state_process)")
                self._mib("TCPAbortOnData")
                self._apply(sk, "rcv_data_after_close")
                return
            if st in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2):
                sk.rcv_q += seg.length
                sk.rcv_nxt += seg.length
                sk.rcv_ratio = buffers.scaling_ratio(seg.length, sk.rcv_ratio)
                self.pool.charge(seg.length)
                self._send_seg(sk, ACK)
        # acknowledgement / window
        if seg.flags & ACK:
            acked = min(seg.ack, sk.snd_nxt) - sk.snd_una
            if acked > 0:
                sk.snd_una += acked
                self.pool.uncharge(acked)
                if sk.nospace:
                    # tcp_new_space() -> tcp_sndbuf_expand(): a writer that ran out of room gets a
                    # bigger send buffer, up to tcp_wmem[2], unless SO_SNDBUF locked it
                    sk.nospace = False
                    if not sk.snd_lock and not self.pool.in_pressure:
                        sk.sndbuf = buffers.grow_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
            sk.snd_edge = max(sk.snd_edge, seg.ack + seg.wnd)
            sk.max_window = max(sk.max_window, seg.wnd)
            if seg.acks_fin and sk.fin_sent and not sk.fin_acked and not seg.flags & FIN:
                sk.fin_acked = True
                if st in (State.FIN_WAIT1, State.CLOSING, State.LAST_ACK):
                    self._apply(sk, "rcv_ack")
                    if sk.tcp_state == State.CLOSE and not sk.dead:
                        return
            self._push(sk)
        st = State(sk.tcp_state)
        if seg.flags & FIN and st not in (State.CLOSE,):
            sk.done = True
            if st == State.FIN_WAIT1 and seg.acks_fin and sk.fin_sent:
                sk.fin_acked = True
                self._apply(sk, "rcv_finack")
            elif tcp.has_transition(st, "rcv_fin"):
                self._apply(sk, "rcv_fin")

    def syn_to_full_listener(self, lsk: Sock, seg: Segment) -> None:
        """tcp_conn_request(): a SYN to a full accept queue is dropped silently (the client retransmits)."""
        lsk.listen_overflows += 1
        self._mib("ListenOverflows")
        self._mib("ListenDrops")

    def _request_ack(self, req: Sock, seg: Segment) -> None:
        """tcp_check_req() -> tcp_v4_syn_recv_sock(): the final ACK turns a request into a queued child."""
        lsk = req.parent
        if lsk is None or lsk.tcp_state != State.LISTEN:
            self._destroy(req)
            self._reset_reply(seg)
            return
        if self._acceptq_full(lsk):
            self._mib("ListenOverflows")
            if self.sysctls["tcp_abort_on_overflow"]:
                self._destroy(req)
                self._reset_reply(seg)
            return  # the request stays (shown SYN_RECV); the client believes it is connected
        req.is_request = False
        req.tcp_state = int(State.ESTABLISHED)
        req.established_at = self.now
        req.snd_edge = seg.ack + seg.wnd
        req.sock_state = SS_CONNECTED
        if not req.snd_lock:
            req.sndbuf = buffers.expand_sndbuf(req.sndbuf, self.sysctls["tcp_wmem"][2])
        # __inet_inherit_port(): the child joins the listener's bind bucket
        self.bhash.add(req.lport, req)
        req.in_bhash = True
        lsk.accept_q.append(req)
        self.woken.add(lsk)
        if seg.flags & DATA and seg.length:
            req.rcv_q += seg.length
            req.rcv_nxt += seg.length
            self.pool.charge(seg.length)
        self._established_shut_wr(req)

    def _established_shut_wr(self, sk: Sock) -> None:
        """tcp_rcv_state_process(), case TCP_SYN_RECV: a connection that reaches ESTABLISHED from
        SYN_RECV with SEND_SHUTDOWN set (a listener's flag copied into its child, or a simultaneous
        open after shutdown()) sends its FIN at once. The SYN_SENT path has no such check."""
        if sk.shutdown & SEND_SHUTDOWN and sk.tcp_state == State.ESTABLISHED:
            fact("SEND_SHUTDOWN was set before the connection existed: the FIN goes out at once")
            self._apply(sk, "shutdown_wr")

    def _tw_input(self, tw: TimeWaitSock, seg: Segment) -> None:
        """tcp_timewait_state_process() in net/ipv4/tcp_minisocks.c."""
        if seg.flags & RST:
            self._tw_kill(tw)  # TIME_WAIT assassination (tcp_rfc1337 = 0)
            return
        if seg.flags & SYN and not seg.flags & ACK:
            self._tw_kill(tw)
            lsk = self._lookup_listener(seg.dst[0], seg.dst[1], seg)
            if lsk is not None:
                self._listener_syn(lsk, seg)
            else:
                self._reset_reply(seg)
            return
        if tw.substate == State.FIN_WAIT2:
            if seg.flags & DATA and seg.length:
                self._tw_kill(tw)
                self._reset_reply(seg)
                return
            if seg.flags & FIN:
                tw.substate = int(State.TIME_WAIT)
                self._rearm_tw(tw)
                self.outbox.append(Segment(seg.dst, seg.src, ACK, acks_fin=True))
            return
        if seg.flags & FIN:
            self._rearm_tw(tw)
            self.outbox.append(Segment(seg.dst, seg.src, ACK, acks_fin=True))

    def _rearm_tw(self, tw: TimeWaitSock) -> None:
        """inet_twsk_reschedule(): back to a full TCP_TIMEWAIT_LEN."""
        tw.gen += 1
        tw.expires = self.timer_expiry(self.now, self.TIME_WAIT_LEN)
        self.timer_requests.append(("tw", self.TIME_WAIT_LEN, tw, tw.gen))

    # ------------------------------------------------------------------ timers
    def timer(self, kind: str, obj: Any, gen: int, now: float) -> None:
        self.now = now
        TRAIL.clear()
        if kind == "tw":
            if obj.gen != gen or self.ehash.get((obj.laddr, obj.lport, obj.raddr, obj.rport)) is not obj:
                return
            self._tw_kill(obj)
            self.events.append((now, f"TIME_WAIT {obj.laddr}:{obj.lport} -> {obj.raddr}:{obj.rport} expired"))
        elif kind == "syn":
            sk = obj
            if sk.syn_gen != gen or sk.tcp_state != State.SYN_SENT:
                return
            retries = sk.syn_retries or self.sysctls["tcp_syn_retries"]
            if sk.syn_tries >= retries:
                self._apply(sk, "syn_timeout")
                return
            sk.syn_tries += 1
            self._send_seg(sk, SYN)
            self.timer_requests.append(("syn", float(2 ** sk.syn_tries), sk, gen))

    # ------------------------------------------------------------------ observations
    def tcp_rows(self) -> list[tuple[str, int, str | None, int, str]]:
        """What /proc/net/tcp{,6} lists: listeners, ehash sockets (incl. requests) and minisocks."""
        rows = []
        for port, lst in self.listeners.items():
            for sk in lst:
                rows.append((sk.laddr, port, None, 0, "LISTEN"))
        for key, o in self.ehash.items():
            st = o.shown_state if isinstance(o, TimeWaitSock) else State(o.tcp_state).name
            rows.append((key[0], key[1], key[2], key[3], st))
        return rows

    def sockstat(self) -> dict[str, int]:
        # sockstat_seq_show(): inuse counts tcp_prot (IPv4) sockets; AF_INET6 ones are in sockstat6
        inuse = sum(1 for v in self.listeners.values() for sk in v if sk.family == 4)
        inuse += sum(1 for o in self.ehash.values()
                     if isinstance(o, Sock) and not o.is_request and o.family == 4)
        orphan = sum(1 for o in self.ehash.values() if isinstance(o, Sock) and o.dead)
        return {"inuse": inuse, "orphan": orphan, "tw": self.tw.count}

    def queues(self, proc: str, fd: int) -> Any:
        p = self.procs[proc]
        f = p.files.fds.get(fd)
        if f is None:
            return "EBADF"
        sk = f.sock
        return self.siocq(sk)

    @rule("ioctl.siocq", "buffers", "minor")
    def siocq(self, sk: Sock) -> Any:
        """tcp_ioctl() in net/ipv4/tcp.c: SIOCINQ/SIOCOUTQ; EINVAL on a listener, 0 while connecting, write_seq - snd_una."""
        if sk.tcp_state == State.LISTEN:
            return "EINVAL"
        if sk.tcp_state in (State.SYN_SENT, State.SYN_RECV):
            return {"recv_q": 0, "send_q": 0}
        return {"recv_q": sk.rcv_q, "send_q": sk.snd_q + sk.syn_unacked + sk.seq_gap}

    def socket_fds(self, proc: str) -> list[int]:
        """/proc/PID/fd entries that are sockets, from 3 up (as the real backend reports them)."""
        return [fd for fd in self.procs[proc].files.sockets() if fd >= 3]
