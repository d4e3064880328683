"""The kernel: processes, syscalls, segment input, timers -- sans I/O and sans clock.

The engine (sim/engine) drives this object: it calls :meth:`Kernel.syscall` for each call, drains
:attr:`Kernel.outbox` (segments to put on the loopback wire) and :attr:`Kernel.timer_requests`
(timers to arm), calls :meth:`Kernel.deliver` when a segment arrives and :meth:`Kernel.timer`
when a timer fires. Every method takes ``now`` (seconds); none reads a clock or sleeps.

The class is composed of one part per kernel source file, each in the module named after that
file, each function named after the kernel function it models:

=========================  ==================================================================
``file``                   fs/file.c: close_fd, fput, f_dupfd, do_dup2, dup_fd, exit_files, setfl
``socket``                 net/socket.c: sys_socket, do_accept, socket options
``af_inet``                net/ipv4/af_inet.c: inet_bind, inet_listen, inet_stream_connect,
                           inet_shutdown, inet_getname
``inet_connection_sock``   inet_csk_get_port, inet_csk_listen_start/stop, inet_csk_destroy_sock
``inet_hashtables``        inet_hash_connect, inet_check_established, ehash, inet_lookup_listener
``tcp``                    tcp_set_state (the only writer of a TCP state), tcp_close,
                           tcp_disconnect, tcp_sendmsg, tcp_recvmsg, tcp_ioctl
``tcp_input``              tcp_rcv_state_process, tcp_conn_request
``tcp_output``             tcp_transmit_skb, tcp_push
``tcp_minisocks``          tcp_time_wait, tcp_timewait_state_process, inet_twsk_kill, tcp_check_req
``tcp_ipv4``               tcp_v4_rcv, tcp_v4_send_reset
``tcp_timer``              the SYN retransmission timer, the TIME_WAIT timer
``tcp_states``             the TCP states and the transition table
``tracepoints``            the events observers subscribe to
=========================  ==================================================================

Another personality (sim/kernel/winsock.py) varies this kernel by overriding the functions listed
in :data:`HOOKS`, and nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import buffers
from .af_inet import AfInet
from .capability import Credentials
from .select import Select
from .sys import Sys
from .errors import Block, SysError
from .fib import Fib, Route
from .file import FileOps
from .handles import FileCount, FileTable, Process
from .inet_connection_sock import InetConnectionSock
from .inet_hashtables import InetHashtables
from .loopback import LoopbackLifecycle
from .ports import BindTable
from .rules import Trail, activate, decisive, rule
from .skbuff import ACK, DATA, FIN, RST, SYN, Segment  # noqa: F401  (re-exported)
from .socket import SocketCalls
from .sockets import Sock
from .tcp import Tcp
from .tcp_input import TcpInput
from .tcp_ipv4 import TcpIpv4
from .tcp_minisocks import TcpMinisocks
from .tcp_output import TcpOutput
from .tcp_states import State
from .tcp_timer import TcpTimer
from .timers import wheel_expiry
from .timewait import TCP_TIMEWAIT_LEN, TimeWaitSock, TimeWaitTable
from .tracepoints import KernelEntered, SyscallExit, Tracepoints

# The system calls a scenario can make, and the kernel function each one enters.
SYSCALLS: dict[str, str] = {
    "socket": "sys_socket", "close": "close_fd", "dup": "f_dupfd", "dup2": "do_dup2", "fork": "dup_fd",
    "exit": "exit_files", "set_nonblocking": "setfl", "setsockopt": "do_sock_setsockopt",
    "getsockopt": "do_sock_getsockopt", "getsockname": "inet_getname", "bind": "inet_bind",
    "listen": "inet_listen", "connect": "inet_stream_connect", "accept": "do_accept",
    "send": "tcp_sendmsg", "recv": "tcp_recvmsg", "shutdown": "inet_shutdown",
    "getpeername": "inet_getpeername", "sendto": "sys_sendto", "poll": "do_pollfd",
    "seteuid": "sys_seteuid", "capset": "sys_capset",
    "eventfd": "do_eventfd",  # made by the Qt layer (an event loop's wake-up fd), not by scenarios
}

# The named hook points: the functions another personality may override (sim/kernel/winsock.py).
# Each is a kernel function of this model whose behaviour differs on that personality's kernel; a
# test checks that a personality overrides nothing else.
HOOKS: frozenset[str] = frozenset({
    # processes and entry
    "new_file_table", "socket_fds", "syscall", "finish_outcome", "wrap_resume", "timer", "sockstat",
    # the system calls
    "sys_socket", "close_fd", "exit_files", "dup_fd", "setfl", "inet_getname", "inet_getpeername",
    "do_sock_setsockopt", "sock_setsockopt", "do_sock_getsockopt", "inet_bind", "inet_listen", "inet_stream_connect", "inet_connect_result",
    "do_accept", "tcp_sendmsg", "tcp_sendmsg_locked", "tcp_recvmsg", "tcp_recvmsg_locked",
    "inet_shutdown",
    # ports, listeners, connections
    "inet_csk_get_port", "inet_hash_connect", "sk_acceptq_is_full", "syn_to_full_listener",
    "tcp_conn_request", "inet_lookup_listener", "tcp_rcv_state_process", "tcp_time_wait",
    "inet_ehash_insert", "inet_unhash",
    # the engine's shortcut for a load step's refused attempts (a personality without it says no)
    "connect_known_to_fail",
    # the engine's fast path for a load step's lifecycle on loopback (sim/kernel/loopback.py)
    "lifecycle_shape",
})


@dataclass
class Outcome:
    ret: Any = None
    err: str | None = None
    name: dict[str, Any] | None = None  # an address the call returned: {addr, port}
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


DEFAULT_SYSCTLS: dict[str, Any] = {
    "ip_local_port_range": (32768, 60999), "ip_local_reserved_ports": [],
    "ip_unprivileged_port_start": 1024, "ip_autobind_reuse": 0, "tcp_max_tw_buckets": 131072,
    "tcp_tw_reuse": 2, "tcp_tw_reuse_delay": 1000, "tcp_timestamps": 1, "tcp_fin_timeout": 60,
    "somaxconn": 4096, "tcp_max_syn_backlog": 2048, "tcp_syncookies": 1,
    "tcp_abort_on_overflow": 0, "tcp_syn_retries": 6, "tcp_wmem": (4096, 16384, 4194304),
    "tcp_rmem": (4096, 131072, 33554432), "wmem_max": 4194304, "rmem_max": 4194304,
    "tcp_mem": (287898, 383867, 575796), "bindv6only": 0,
}




class Kernel(Tracepoints, FileOps, Select, SocketCalls, AfInet, InetConnectionSock, InetHashtables, Tcp,
             TcpInput, TcpOutput, TcpMinisocks, TcpIpv4, TcpTimer, Route, Credentials, Sys, LoopbackLifecycle):
    """One host kernel (one network namespace) with its processes: the Linux rules.

    Another personality subclasses this class and overrides the functions named in :data:`HOOKS`
    where its kernel differs (see sim/kernel/winsock.py); the subclass is chosen once per host.
    """

    personality = "linux"
    TIME_WAIT_LEN = TCP_TIMEWAIT_LEN
    NONBLOCK_CONNECT_ERR = "EINPROGRESS"  # __inet_stream_connect(): -EINPROGRESS
    DEFAULTS: dict[str, Any] = {}  # personality defaults applied under the scenario's sysctls
    SYSCALLS = SYSCALLS

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
        # destination -> (generations, valid until ms) of a failed port search
        self.exhausted: dict[tuple, tuple[tuple[int, int], float]] = {}
        self.port_searches_spared = 0  # connect()s answered from a remembered fruitless search
        self.woken: set[Any] = set()  # sockets whose wait queue was woken (sk_state_change, sk_data_ready)
        self.outbox: list[Segment] = []
        self.isn_next = 0  # secure_tcp_seq()
        self.rx_seg: Segment | None = None  # the segment being processed (tcp_v4_rcv())
        self.delack: dict[int, Sock] = {}  # sockets with a delayed ACK pending (ICSK_ACK_TIMER)
        # the socket whose send/recv holds its lock (lock_sock()) while the segments it caused
        # cross loopback: data for it waits in its backlog (tcp_input.tcp_backlog_data())
        self.owned: Sock | None = None
        self.timer_requests: list[tuple[str, float, Any, int]] = []
        self.perturb = [0] * 256  # table_perturb[] of __inet_hash_connect
        self.secret = self.rng.getrandbits(64)
        self.mib: dict[str, int] = {}
        self.fib = Fib()  # addresses and routes besides loopback (hosts joined by links)
        self._pid = 100
        self.now = 0.0
        # CLOCK_MONOTONIC (seconds) at now = 0: the kernel's millisecond clock tcp_clock_ms()
        # ticks on whole milliseconds of that clock (set to a real run's when following one)
        self.clock_start = 0.0
        # following a real run: (when the current step's real call returned, whether it succeeded);
        # and when the real calls that stamped TIME_WAIT entries returned (see tw_old_enough)
        self.followed: tuple[float, bool | None] | None = None
        self.stamp_late: dict[Any, float] = {}
        self._last_expiry: dict[float, float] = {}  # delay -> the last wheel expiry handed out for it
        self.probes: list[Any] = []  # subscribers (tracepoints.Tracepoints.subscribe)
        self.trail = Trail(self.probes)  # the rules and facts of the current kernel entry
        self.ret_name: dict[str, Any] | None = None  # the address the current call returns
        self.caller: Process | None = None  # the process making the current call

    # ------------------------------------------------------------------ processes
    def add_process(self, name: str, nofile: int = 1024, uid: int = 0) -> Process:
        self._pid += 1
        p = Process(name, self.new_file_table(nofile), uid, self._pid)
        self.procs[name] = p
        return p

    def timer_expiry(self, now: float, delay: float) -> float:
        """When a kernel timer armed now for ``delay`` fires: on the timer wheel's bucket boundary.

        Timers of one wheel bucket fire at the same moment; they share one float for it (kept per
        delay: SYN timers armed between TIME_WAIT entries would otherwise make a float per entry)."""
        at = wheel_expiry(now, delay)
        last = self._last_expiry.get(delay)
        if at == last:
            return last
        self._last_expiry[delay] = at
        return at

    def new_file_table(self, nofile: int) -> FileTable:
        return FileTable(nofile)

    def _mib(self, name: str, n: int = 1) -> None:
        self.mib[name] = self.mib.get(name, 0) + n

    def rule_hits(self) -> set[str]:
        """Every rule this kernel consulted since it was made (coverage: ``socksim rules``)."""
        return self.trail.all_hits()

    # ------------------------------------------------------------------ entry points
    def enter(self, now: float, what: str, proc: str = "", call: str = "") -> Trail:
        """Every entry from the engine: set the time, start a fresh trail (it becomes current)."""
        self.now = now
        if self.owned is not None:
            self.release_sock()
        t = self.trail
        t.clear()
        activate(t)
        if self.probes:
            self.emit(KernelEntered(what, proc, call))
        return t

    def syscall(self, proc: str, call: str, args: dict[str, Any], now: float) -> Outcome:
        self.now = now  # enter(), inlined: the hottest path of a load step
        if self.owned is not None:
            self.release_sock()
        t = self.trail
        t.clear()
        activate(t)
        if self.probes:
            self.emit(KernelEntered("syscall", proc, call))
        p = self.procs[proc]
        self.ret_name, self.caller = None, p
        try:
            ret = getattr(self, self.SYSCALLS.get(call) or "sys_" + call)(p, **args)
            out = Outcome(ret=ret, name=self.ret_name)
        except SysError as e:
            out = Outcome(ret=-1, err=e.name, rule=e.rule)
        except Block as b:
            origin = t.rules[0] if t.rules else None
            out = Outcome(blocked=Blocked(proc, call, self.wrap_resume(b.resume, origin), b.reason, b.key))
        out.trail = list(t.rules)
        out.facts = list(t.facts)
        if out.rule is None:
            out.rule = decisive(out.trail)
        out = self.finish_outcome(out)
        if self.probes:
            self.emit(SyscallExit(proc, call, out.ret, out.err, out.rule, out.blocked is not None))
        return out

    def finish_outcome(self, out: Outcome) -> Outcome:
        """Hook: the last look at a call's outcome before the engine gets it (Linux: none)."""
        return out

    def wrap_resume(self, fn: Callable[[float], Any], origin: str | None = None) -> Callable[[float], Outcome]:
        def resume(now: float) -> Outcome:
            t = self.enter(now, "resume")
            self.ret_name = None
            try:
                out = Outcome(ret=fn(now))
                out.name = self.ret_name
            except SysError as e:
                out = Outcome(ret=-1, err=e.name, rule=e.rule)
            except Block as b:
                return Outcome(blocked=Blocked("", "", self.wrap_resume(b.resume, origin), b.reason, b.key))
            out.trail, out.facts = list(t.rules), list(t.facts)
            if out.rule is None:
                out.rule = decisive(out.trail) or origin
            return self.finish_outcome(out)

        return resume

    def deliver(self, seg: Segment, now: float) -> None:
        """A segment arrives on loopback (tcp_v4_rcv())."""
        self.now = now
        activate(self.trail)
        self.tcp_v4_rcv(seg)

    def tcp_delack_timer(self, now: float) -> bool:
        """Between two steps the delayed-ACK timers fire (tcp_delack_timer()): True if any ACK went out."""
        if not self.delack:
            return False
        self.enter(now, "timer", "", "delack")
        return self.tcp_delack_timer_handler()

    def timer(self, kind: str, obj: Any, gen: int, now: float) -> None:
        """A timer the engine armed (from ``timer_requests``) expired."""
        self.enter(now, "timer", "", kind)
        if kind == "tw":
            self.tw_timer_handler(obj, gen)
        elif kind == "syn":
            self.tcp_retransmit_syn(obj, gen)

    # ------------------------------------------------------------------ observations
    def tcp_rows(self) -> list[tuple[str, int, str | None, int, str]]:
        """What /proc/net/tcp{,6} lists: listeners, ehash sockets (incl. requests) and minisocks."""
        return list(self.iter_tcp_rows())

    def iter_tcp_rows(self) -> Iterator[tuple[str, int, str | None, int, str]]:
        """The rows of :meth:`tcp_rows` one at a time, as tcp4_seq_show() writes them (a million
        TIME_WAIT entries need not be listed twice over to be read once)."""
        for port, lst in self.listeners.items():
            for sk in lst:
                yield (sk.laddr, port, None, 0, "LISTEN")
        for key, o in self.ehash.items():
            st = o.shown_state if isinstance(o, TimeWaitSock) else State(o.tcp_state).name
            yield (key[0], key[1], key[2], key[3], st)

    def sockstat(self) -> dict[str, int]:
        # sockstat_seq_show(): inuse counts tcp_prot (IPv4) sockets; AF_INET6 ones are in sockstat6
        inuse = sum(1 for v in self.listeners.values() for sk in v if sk.family == 4)
        inuse += sum(1 for o in self.ehash.values()
                     if isinstance(o, Sock) and not o.is_request and o.family == 4)
        orphan = sum(1 for o in self.ehash.values() if isinstance(o, Sock) and o.dead)
        return {"inuse": inuse, "orphan": orphan, "tw": self.tw.count}

    def queues(self, proc: str, fd: int) -> Any:
        activate(self.trail)  # tcp_ioctl() is a rule: it is consulted on behalf of this kernel
        p = self.procs[proc]
        f = p.files.fds.get(fd)
        if f is None:
            return "EBADF"
        sk = f.sock
        return self.tcp_ioctl(sk)

    def tcp_info(self, proc: str, fd: int, fields: list[str]) -> Any:
        """getsockopt(TCP_INFO) (tcp_get_info() in net/ipv4/tcp.c): the named fields."""
        from .tcp import tcp_get_info

        activate(self.trail)
        f = self.procs[proc].files.fds.get(fd)
        if f is None:
            return "EBADF"
        if f.sock is None or f.sock.kind != "tcp":
            return "EOPNOTSUPP"
        return tcp_get_info(f.sock, fields)

    def set_sysctls(self, values: dict[str, Any], now: float) -> None:
        """sysctl -w: per-namespace settings change for what happens next."""
        self.now = now
        self.sysctls.update(values)
        lo, hi = self.sysctls["ip_local_port_range"]
        span = hi + 1 - lo
        self._eph = (lo, lo + (span & ~1 if span > 1 else span))
        self.exhausted.clear()
        if "tcp_max_tw_buckets" in values:
            self.tw.max_buckets = self.sysctls["tcp_max_tw_buckets"]

    def socket_fds(self, proc: str) -> list[int]:
        """/proc/PID/fd entries that are sockets, from 3 up (as the real backend reports them)."""
        return [fd for fd in self.procs[proc].files.sockets() if fd >= 3]
