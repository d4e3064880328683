"""The Windows rule variants: ``WinsockKernel`` is the Linux :class:`~sim.kernel.stack.Kernel` with
the rules overridden where Winsock and the Windows TCP/IP stack differ.

Nobody ran these rules against a Windows kernel: each one cites the Microsoft Learn page (or KB
article) it implements in the first line of its docstring, and says so where a choice had to be
made without a source (``inferred``). docs/windows.md lists the decisions and the evidence; the
bracketed tags ([W20] ...) refer to the reference list at the end of docs/windows.md.

What changes on a Windows host, at a glance:

- SOCKET values come from a handle table: multiples of 4, a value freed by ``closesocket`` is
  handed out again first; an unknown value is ``WSAENOTSOCK``.
- ``WSAStartup``/``WSACleanup`` keep a per-process reference count; every socket call before
  startup fails with ``WSANOTINITIALISED``; the last cleanup resets every open socket.
- bind(): Microsoft's SO_REUSEADDR x SO_EXCLUSIVEADDRUSE outcome tables (same user, different
  users, and the pre-2003 table), dual-stack exclusive binds, TIME_WAIT does not hold a port
  against a later bind unless the new socket is exclusive; no privileged ports.
- listen(): no autobind (``WSAEINVAL`` on an unbound socket), a second listen() keeps the backlog,
  SOMAXCONN and SOMAXCONN_HINT(N); a full queue answers RST (the client sees WSAECONNREFUSED).
- connect(): ``WSAEWOULDBLOCK`` for a non-blocking connect, ``WSAEISCONN`` once it completed,
  refused attempts are retried (about 2 s even on loopback), implicit binds take a whole port from
  the dynamic range 49152-65535, exhaustion is ``WSAENOBUFS``.
- TIME_WAIT lasts TcpTimedWaitDelay (120 s by default).
- send/recv/shutdown error names (WSAENOTCONN, WSAESHUTDOWN, sticky WSAECONNRESET), SD_RECEIVE
  resets the connection when data is (or arrives) queued.
- closesocket linger semantics: {1,0} abortive, {1,n} waits on a blocking socket and fails with
  WSAEWOULDBLOCK on a non-blocking one, {0,x} graceful in the background.
- A nonpaged-pool limit charged per connection (TCB) and per buffered byte: WSAENOBUFS.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

from ..personality.windows import WINDOWS_DEFAULTS
from .handles import FileTable, OpenFile
from .rules import MINOR, RULES, fact, rule
from .sockets import SS_CONNECTED, SS_CONNECTING, SS_UNCONNECTED, Sock
from .errors import Block, SysError
from .handles import Process
from .skbuff import DATA, RST, SYN, Segment
from .stack import DEFAULT_SYSCTLS, Kernel, Outcome
from .tcp_states import State
from .winsock_args import WinsockArgs
from .winsock_io import WinsockIO
from .winsock_opts import WinsockOptions
from .winsock_ports import WinsockPorts
from .winsock_tables import (
    DEFAULT_POOL_LIMIT, DOCUMENTED, SOMAXCONN, SOMAXCONN_HINT_MAX, SOMAXCONN_HINT_MIN,
    TCB_BYTES, V4_ANY, V6_ANY, NonPagedPool, WinHandleTable,
)

LEARN = "https://learn.microsoft.com/en-us/windows/win32"
# facts the shared (Linux) model notes in Linux's own terms: a Windows explanation leaves them out
LINUX_ONLY_FACT = re.compile(r"/proc|\bfds?\b|RLIMIT|inetsw|sysctl|\b_*[a-z0-9]+_[a-z0-9_]+\(\)|"
                             r"\bsk_|SOCK_[A-Z]+_LOCK|tcp_[a-z_]+|net\.ipv4")

WSA_FREE_CALLS = frozenset({"WSAStartup", "WSACleanup", "exit", "fork"})
CONNECTED = (State.ESTABLISHED, State.CLOSE_WAIT)


class WinsockKernel(WinsockArgs, WinsockOptions, WinsockPorts, WinsockIO, Kernel):
    """One Windows host: Winsock on top of the Windows TCP/IP stack (the rule variants)."""

    personality = "windows"
    DEFAULTS = WINDOWS_DEFAULTS
    # TcpTimedWaitDelay: REG_DWORD seconds, valid 30-300; XP/2003 and the Vista/2008 registry
    # paper give 120 s (0x78) [W26, W28]; the port-exhaustion page says 4 minutes [W24] (conflict).
    TIME_WAIT_LEN = 120.0
    NONBLOCK_CONNECT_ERR = "EAGAIN"  # connect on a non-blocking socket: WSAEWOULDBLOCK [W4]
    # a refused SYN is sent again after the same time-out each time (KB 175523 [W50]); 1 s is
    # inferred from "over 2 seconds" in all (Wine test_WSAPoll) with two retries [W45, W46]
    SYN_RST_RETRY_INTERVAL = 1.0
    ENHANCED_SOCKET_SECURITY = True  # Windows Server 2003 and later [W20]

    def __init__(self, sysctls: dict[str, Any] | None = None, file_max: int = 2466170, seed: int = 0):
        given = {k: v for k, v in (sysctls or {}).items() if v is not None}  # None: not set
        for key in self.DEFAULTS:
            # The scenario format fills every setting with its Linux default: a value equal to the
            # Linux default means "not chosen" here, so the Windows default applies.
            if key in given and _same(given[key], DEFAULT_SYSCTLS.get(key)):
                del given[key]
        super().__init__(given, file_max, seed)
        self.TIME_WAIT_LEN = float(self.sysctls.get("TcpTimedWaitDelay", type(self).TIME_WAIT_LEN))
        self.pool = NonPagedPool(self._pool_limit(given))
        self.wsa_refs: dict[int, int] = {}  # per process (PID): its threads share one count
        self.win_decided: list[str] = []  # Windows rules that decided the call under way
        self._port_cursor: dict[int, int] = {}

    def _pool_limit(self, given: dict[str, Any]) -> int:
        if "nonpaged_pool_bytes" in given:
            return int(given["nonpaged_pool_bytes"])
        mem = given.get("tcp_mem")
        if mem is not None and not _same(mem, DEFAULT_SYSCTLS["tcp_mem"]):
            return int(mem[2]) * 4096  # until the model has its own field: tcp_mem[2] pages
        return DEFAULT_POOL_LIMIT

    # ------------------------------------------------------------------ processes / handles
    def new_file_table(self, nofile: int) -> FileTable:
        return WinHandleTable(nofile)

    def socket_fds(self, proc: str) -> list[int]:
        """Every SOCKET handle of the process (no standard streams among them)."""
        return self.procs[proc].files.sockets()

    # ------------------------------------------------------------------ syscall entry
    def syscall(self, proc: str, call: str, args: dict[str, Any], now: float) -> Outcome:
        if call not in WSA_FREE_CALLS and self.wsa_refs.get(self.procs[proc].pid, 0) <= 0:
            return super().syscall(proc, "wsa_refused", {"call": call}, now)
        return super().syscall(proc, call, args, now)

    def finish_outcome(self, out: Outcome) -> Outcome:
        """On a Windows host a successful call is credited to the Windows rule that decided it (one
        that noted a decision with :meth:`decided`), else to the call's own Winsock rule; facts
        speak Windows only."""
        decided, self.win_decided = self.win_decided, []
        if out.err is None and out.blocked is None:
            wins = [r for r in out.trail if r.startswith("win.") and MINOR not in RULES[r].tags]
            picks = [r for r in decided if r in out.trail]
            if picks:
                out.rule = picks[-1]
            elif wins:
                out.rule = wins[0]
        out.facts = [f for f in out.facts if not LINUX_ONLY_FACT.search(f)]
        return out

    def wrap_resume(self, fn: Callable[[float], Any], origin: str | None = None) -> Callable[[float], Outcome]:
        inner = super().wrap_resume(fn, origin)

        def resume(now: float) -> Outcome:
            out = inner(now)
            if out.blocked is None and origin and origin.startswith("win.") and not (out.rule or "").startswith("win."):
                out.rule = origin  # a blocked Winsock call completes under its own rule
            return out

        return resume

    def decided(self, rule_id: str, text: str) -> None:
        """Note that ``rule_id`` decided the outcome of the call under way (and why)."""
        fact(text)
        self.win_decided.append(rule_id)

    @staticmethod
    def _retag(rule_id: str, documented: set[str], fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        """Run the shared TCP/IP implementation; an error it finds is credited to the Windows call's rule."""
        try:
            return fn(*a, **kw)
        except SysError as e:
            if not (e.rule or "").startswith("win."):
                wsa = "WSAEWOULDBLOCK" if e.name == "EAGAIN" else "WSA" + e.name
                fact(f"{wsa}: one of the errors this call's page documents" if e.name in documented
                     else f"{wsa}: not on this call's page; the shared TCP/IP model decided it")
                raise SysError(e.name, rule_id) from None
            raise

    # ------------------------------------------------------------------ WSAStartup / WSACleanup
    @rule("win.wsa_not_initialised", "windows", "sockets")
    def sys_wsa_refused(self, p: Process, call: str) -> int:
        """WSAStartup function (Learn/api/winsock/nf-winsock-wsastartup): socket calls fail with WSANOTINITIALISED until a successful WSAStartup."""
        fact(f"{call}: process {p.name} has no successful WSAStartup outstanding")
        raise SysError("WSANOTINITIALISED", "win.wsa_not_initialised")

    @rule("win.wsastartup", "windows", "sockets")
    def sys_WSAStartup(self, p: Process, **_: Any) -> int:
        """WSAStartup function (Learn/api/winsock/nf-winsock-wsastartup): each successful call needs its own WSACleanup (a per-process reference count)."""
        n = self.wsa_refs[p.pid] = self.wsa_refs.get(p.pid, 0) + 1
        fact(f"Winsock reference count of process {p.pid} ({p.name}): {n}")
        return 0

    @rule("win.wsacleanup", "windows", "sockets")
    def sys_WSACleanup(self, p: Process, **_: Any) -> int:
        """WSACleanup function (Learn/api/winsock/nf-winsock-wsacleanup): only the last call cleans up; open sockets are reset and freed as if closesocket were called."""
        n = self.wsa_refs.get(p.pid, 0)
        if n <= 0:
            fact("more WSACleanup calls than successful WSAStartup calls")
            raise SysError("WSANOTINITIALISED", "win.wsacleanup")
        self.wsa_refs[p.pid] = n - 1
        if n > 1:
            fact(f"reference count {n} -> {n - 1}: nothing is cleaned up yet")
            return 0
        fds = p.files.sockets()
        fact(f"last WSACleanup: {len(fds)} open socket(s) are reset and freed")
        for fd in fds:
            f = self.file_close_fd(p, fd)
            if f.sock.kind == "tcp" and f.sock.tcp_state != State.LISTEN:
                f.sock.linger = (1, 0)  # "reset": an abortive close (interpretation, see docs)
            self.fput(f, exiting=False)
        return 0

    def exit_files(self, p: Process) -> int:
        if any(q is not p and q.alive and q.files is p.files for q in self.procs.values()):
            fact(f"{p.name} is one thread of its process: the process's SOCKET handles and its "
                 "Winsock reference count stay")
            p.alive = False
            return 0
        self.wsa_refs[p.pid] = 0
        return super().exit_files(p)

    @rule("win.thread", "windows", "fd")
    def dup_fd(self, p: Process, **kw: Any) -> int:
        """CreateThread function (Learn, processthreadsapi.h), Socket Handles (Learn/winsock/socket-handles-2) and WSAStartup function (Learn/api/winsock/nf-winsock-wsastartup): Windows has no fork; a scenario's fork starts a second thread of the process, which uses the same SOCKET handles and the process's one WSAStartup count."""
        ret = Kernel.dup_fd(self, p, **kw)
        child = self.procs[kw["as"]]
        for f in child.files.fds.values():
            f.f_count -= 1  # one handle table, not a copy
        child.files, child.pid = p.files, p.pid
        fact(f"{kw['as']} is a second thread of {p.name}'s process: it shares its SOCKET handles "
             f"and its Winsock reference count ({self.wsa_refs.get(p.pid, 0)})")
        return ret

    # ------------------------------------------------------------------ socket / handles
    @rule("win.socket", "windows", "sockets")
    def sys_socket(self, p: Process, family: str = "AF_INET", type: str = "SOCK_STREAM",
                   protocol: Any = 0, nonblock: bool = False, **_: Any) -> int:
        """socket function (Learn/api/winsock2/nf-winsock2-socket): a new SOCKET handle, blocking by default, or INVALID_SOCKET."""
        return self._retag("win.socket", DOCUMENTED["socket"], super().sys_socket, p, family, type,
                           protocol, nonblock)

    @rule("win.closesocket", "windows", "fd")
    def close_fd(self, p: Process, sock: int) -> int:
        """closesocket function (Learn/api/winsock/nf-winsock-closesocket): l_onoff=0 graceful in the background; {1,0} abortive; {1,n} waits on a blocking socket, WSAEWOULDBLOCK on a non-blocking one."""
        f = p.files.fds.get(sock)
        if f is None or f.sock is None:
            fact(f"{sock} is not an open SOCKET handle (closed already, or never returned)")
            raise SysError("ENOTSOCK", "win.closesocket")
        sk = f.sock
        onoff, secs = sk.linger
        if sk.kind == "tcp" and f.f_count == 1 and onoff and secs > 0 and self._linger_pending(sk):
            if f.nonblock:
                fact(f"SO_LINGER {{1, {secs}}} on a non-blocking socket with {sk.snd_q} byte(s) "
                     "not yet acknowledged: the close cannot complete at once; the handle stays valid")
                raise SysError("EAGAIN", "win.closesocket")
            deadline = self.now + secs
            self.inet_csk_reset_xmit_timer("win_linger", float(secs), sk, 0)
            fact(f"SO_LINGER {{1, {secs}}}: closesocket blocks until {sk.snd_q} byte(s) are "
                 f"acknowledged or {secs} s pass")
            raise Block(lambda now: self._linger_wait(p, sock, f, sk, deadline),
                         f"closesocket: lingering up to {secs} s for unacknowledged data")
        if onoff and secs == 0:
            fact("SO_LINGER {1, 0}: hard close, RST, no TIME_WAIT")
        sk.win_closed = True  # a call another thread is blocked in on it is canceled
        self.woken.add(sk)
        return Kernel.close_fd(self, p, sock)

    @staticmethod
    def _linger_pending(sk: Sock) -> bool:
        return sk.snd_q > 0 and sk.tcp_state in CONNECTED

    @rule("win.linger_wait", "windows", "fd")
    def _linger_wait(self, p: Process, sock: int, f: OpenFile, sk: Sock, deadline: float) -> int:
        """closesocket function (Learn/api/winsock/nf-winsock-closesocket): a blocking linger close is graceful if the data goes out within l_linger seconds, else hard; it returns 0 either way."""
        if p.files.fds.get(sock) is not f:
            return 0
        if not self._linger_pending(sk):
            fact("every queued byte was acknowledged within the linger time: graceful close")
            return Kernel.close_fd(self, p, sock)
        if self.now >= deadline - 1e-9:
            fact(f"the linger time ran out with {sk.snd_q} byte(s) unacknowledged: hard close (RST)")
            sk.linger = (1, 0)
            return Kernel.close_fd(self, p, sock)
        raise Block(lambda now: self._linger_wait(p, sock, f, sk, deadline),
                     "closesocket: lingering for unacknowledged data")

    @rule("win.ioctlsocket_fionbio", "windows", "fd")
    def setfl(self, p: Process, sock: int, on: bool = True, cmd: str = "FIONBIO", **_: Any) -> int:
        """ioctlsocket function (Learn/api/winsock/nf-winsock-ioctlsocket): FIONBIO with a nonzero argument makes the socket non-blocking; a new socket is blocking."""
        f, _ = self.sockfd_lookup(p, sock)
        f.nonblock = bool(on)
        fact(f"FIONBIO {int(bool(on))}: the socket is now {'non-blocking' if on else 'blocking'}")
        return 0

    @rule("win.getsockname", "windows", "sockets")
    def inet_getname(self, p: Process, sock: int, null: Any = (), addrlen: int | None = None) -> int:
        """getsockname function (Learn/api/winsock/nf-winsock-getsockname): the local port; WSAEINVAL if the socket has not been bound, WSAEFAULT for a bad name or a namelen too small."""
        _, sk = self.sockfd_lookup(p, sock)
        if null or addrlen is not None:
            self.check_name_out(sk, "getsockname", null, addrlen)
        if not sk.in_bhash and not sk.lport:
            fact("the socket has not been bound to an address")
            raise SysError("EINVAL", "win.getsockname")
        return sk.lport

    # ------------------------------------------------------------------ listen
    @rule("win.listen", "windows", "tcp")
    def inet_listen(self, p: Process, sock: int, backlog: int = 128) -> int:
        """listen function (Learn/api/winsock2/nf-winsock2-listen): WSAEINVAL on an unbound socket, WSAEISCONN on a connected one; a second listen() succeeds without changing the backlog."""
        _, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp":
            fact("listen() needs a connection-oriented socket")
            raise SysError("EOPNOTSUPP", "win.listen")
        if sk.tcp_state == State.LISTEN:
            fact(f"already listening: success, the backlog stays {sk.backlog}")
            return 0
        if sk.tcp_state != State.CLOSE:
            fact(f"the socket is {State(sk.tcp_state).name}")
            raise SysError("EISCONN", "win.listen")
        if sk.sock_state != SS_UNCONNECTED:
            self._forget_failed_connect(sk)
        if not sk.in_bhash:
            fact("the socket has not been bound: Windows does not pick a port for listen()")
            raise SysError("EINVAL", "win.listen")
        sk.backlog = self._backlog(backlog)
        self.listeners.setdefault(sk.lport, []).append(sk)
        self.tcp_set_state(sk, State.LISTEN, "listen")
        return 0

    @rule("win.listen_backlog", "windows", "tcp")
    def _backlog(self, backlog: int) -> int:
        """listen function (Learn/api/winsock2/nf-winsock2-listen): SOMAXCONN -> a maximum reasonable value; SOMAXCONN_HINT(N) -> N clamped to 200..65535; other values are silently limited."""
        reasonable = int(self.sysctls["somaxconn"])
        if backlog == SOMAXCONN:
            fact(f"SOMAXCONN: the provider picks its reasonable maximum, {reasonable}")
            return reasonable
        if backlog < 0:
            n = -backlog
            eff = min(max(n, SOMAXCONN_HINT_MIN), SOMAXCONN_HINT_MAX)
            fact(f"SOMAXCONN_HINT({n}): clamped to {SOMAXCONN_HINT_MIN}..{SOMAXCONN_HINT_MAX} -> {eff}")
            return eff
        eff = min(max(backlog, 1), reasonable)
        fact(f"backlog {backlog} -> {eff} (legal range 1..{reasonable}; the nearest legal value "
             "replaces an illegal one)")
        return eff

    @rule("win.accept_queue_full", "windows", "tcp", "minor")
    def sk_acceptq_is_full(self, lsk: Sock) -> bool:
        """listen function (Learn/api/winsock2/nf-winsock2-listen): the backlog is the maximum length of the queue of pending connections."""
        full = len(lsk.accept_q) >= lsk.backlog
        if full:
            fact(f"the queue holds {len(lsk.accept_q)} connection(s), backlog {lsk.backlog}: full")
        return full

    @rule("win.listen_queue_full_refuses", "windows", "tcp")
    def syn_to_full_listener(self, lsk: Sock, seg: Segment) -> None:
        """listen function (Learn/api/winsock2/nf-winsock2-listen): if a connection request arrives and the queue is full, the client receives WSAECONNREFUSED."""
        lsk.listen_overflows += 1
        self._mib("ListenOverflows")
        fact("the SYN is answered with RST")
        self.tcp_v4_send_reset(seg)

    def tcp_conn_request(self, lsk: Sock, seg: Segment) -> None:
        if not self.pool.can_charge(TCB_BYTES):
            self._pool_refuses_syn(seg)
            return
        super().tcp_conn_request(lsk, seg)

    @rule("win.pool_refuses_connection", "windows", "buffers")
    def _pool_refuses_syn(self, seg: Segment) -> None:
        """KB 293841 / KB 917114: with the nonpaged pool exhausted no TCB can be allocated; the request is answered with RST (inferred)."""
        self._mib("NonPagedPoolRefused")
        self.tcp_v4_send_reset(seg)

    @rule("win.lookup_listener", "windows", "tcp", "minor")
    def inet_lookup_listener(self, daddr: str, dport: int, seg: Segment) -> Sock | None:
        """Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE (Learn/winsock/using-so-reuseaddr-and-so-exclusiveaddruse): a specific bind serves its address; among sockets sharing a port the choice is indeterminate."""
        best = self.best_listeners(daddr, dport, family_bonus=False)
        if len(best) > 1:
            return self._first_bound_listener(best, daddr, dport)
        return best[0] if best else None

    @rule("win.first_bound_listener", "windows", "tcp")
    def _first_bound_listener(self, best: list[Sock], daddr: str, dport: int) -> Sock:
        """Wine dlls/ws2_32/tests/sock.c, test_reuseaddr (asserted on Windows): among listeners sharing an address the connection goes to the one bound first; Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE (Learn/winsock) calls it nondeterministic -- the assertion wins."""
        pick = min(best, key=lambda o: getattr(o, "win_bind_seq", 0))
        fact(f"{len(best)} listeners share {daddr}:{dport}: the one bound first gets the connection")
        return pick

    # ------------------------------------------------------------------ connect
    @rule("win.connect", "windows", "tcp")
    def inet_stream_connect(self, p: Process, sock: int, addr: str = "127.0.0.1", port: int = 0,
                            null: Any = (), addrlen: int | None = None) -> int:
        """connect function (Learn/api/winsock2/nf-winsock2-connect): WSAEWOULDBLOCK on a non-blocking socket, WSAEALREADY while pending, WSAEISCONN once connected, WSAEINVAL on a listening socket, WSAEFAULT for a bad name or namelen."""
        f, sk = self.sockfd_lookup(p, sock)
        if null or addrlen is not None:
            self.check_name_in(sk, "connect", null, addrlen)
        if sk.kind == "tcp":
            if sk.tcp_state == State.LISTEN:
                fact("the socket is listening")
                raise SysError("EINVAL", "win.connect")
            if sk.sock_state == SS_CONNECTING and sk.tcp_state in CONNECTED:
                sk.sock_state = SS_CONNECTED
                fact("the non-blocking connect has completed: the socket is connected")
                raise SysError("EISCONN", "win.connect")
            ip = ipaddress.ip_address(addr)
            if port == 0 or ip in (V4_ANY, V6_ANY):
                fact(f"remote address {addr}:{port}: the address or port is 0")
                raise SysError("EADDRNOTAVAIL", "win.connect")
            if sk.sock_state == SS_CONNECTING and sk.tcp_state == State.CLOSE:
                self._forget_failed_connect(sk)
            if sk.sock_state == SS_UNCONNECTED and sk.tcp_state == State.CLOSE:
                self.pool.reserve(TCB_BYTES)
                sk.win_rst_tries = 0
        return self._retag("win.connect", DOCUMENTED["connect"], super().inet_stream_connect, p, sock, addr, port)

    def connect_known_to_fail(self, proc: str, addr: str, port: int, now: float) -> bool:
        """The engine's shortcut for refused attempts is Linux's (a remembered fruitless port
        search in __inet_hash_connect()); Winsock's port search here keeps no such memory, so every
        attempt makes its calls."""
        return False

    def lifecycle_shape(self, before: dict[str, Any], client: str, server: str, csk: Any, ssk: Any, lsk: Any,
                        timers: tuple[tuple, tuple]) -> None:
        """The engine's one-call lifecycle (sim/kernel/loopback.py) is learnt from Linux's path;
        here every lifecycle makes its calls."""
        return None

    def inet_hash_connect(self, sk: Sock, saddr: str, daddr: str, dport: int) -> None:
        if sk.lport:
            super().inet_hash_connect(sk, saddr, daddr, dport)
            return
        self._implicit_bind(sk, saddr, daddr, dport)

    @rule("win.connect_retry_after_failure", "windows", "tcp")
    def _forget_failed_connect(self, sk: Sock) -> None:
        """Wine dlls/ws2_32/tests/sock.c, test_select (asserted on Windows): after a non-blocking connect failed, connect() starts a new attempt (WSAEWOULDBLOCK) and listen() works; the failure stays readable with SO_ERROR (connect function, Learn/api/winsock2/nf-winsock2-connect: connect may be called again)."""
        fact(f"the last connection attempt failed ({getattr(sk, 'win_so_error', None) or sk.err}): "
             "the socket is unconnected again")
        sk.err = None
        sk.sock_state = SS_UNCONNECTED
        self.tcp_disconnect(sk)

    @rule("win.connect_result", "windows", "tcp")
    def inet_connect_result(self, sk: Sock) -> int:
        """connect function (Learn/api/winsock2/nf-winsock2-connect): WSAECONNREFUSED when the target actively refused, WSAETIMEDOUT without an answer; connect may then be called again."""
        try:
            return self._retag("win.connect_result", DOCUMENTED["connect"], super().inet_connect_result, sk)
        except SysError:
            sk.win_so_error = None  # a blocking connect reported it itself: SO_ERROR reads 0 (test_select)
            raise

    @rule("win.connect_refused_retry", "windows", "tcp")
    def _syn_refused(self, sk: Sock) -> bool:
        """connect function (Learn/api/winsock2/nf-winsock2-connect), KB 175523 (Winsock TCP Connection Performance to Unused Ports) and TcpMaxConnectRetransmissions (Server 2003 registry reference): a SYN answered by RST is sent again after the same, undoubled time-out, so WSAECONNREFUSED comes after over 2 s even on loopback (Wine test_WSAPoll); the 1 s interval is inferred."""
        tries = getattr(sk, "win_rst_tries", 0)
        limit = int(sk.syn_retries or self.sysctls["tcp_syn_retries"])
        if tries >= limit:
            fact(f"RST after {tries} retransmission(s) of the SYN: the connection is refused")
            return False
        sk.win_rst_tries = tries + 1
        self.inet_csk_clear_xmit_timer("syn", sk)  # the retry replaces the pending SYN retransmission timer
        self.inet_csk_reset_xmit_timer("win_syn_retry", self.SYN_RST_RETRY_INTERVAL, sk, sk.syn_gen)
        fact(f"RST in answer to the SYN: retry {tries + 1} of {limit} in {self.SYN_RST_RETRY_INTERVAL:g} s")
        return True

    # ------------------------------------------------------------------ accept
    @rule("win.accept", "windows", "tcp")
    def do_accept(self, p: Process, sock: int, **kw: Any) -> int:
        """accept function (Learn/api/winsock2/nf-winsock2-accept): a new SOCKET handle for a queued connection, with the listener's options; WSAEINVAL if listen was not called, WSAEWOULDBLOCK if non-blocking and none is queued, WSAEFAULT if addrlen is too small."""
        f = p.files.fds.get(sock)
        lsk = f.sock if f is not None else None
        null, addrlen = kw.pop("null", ()), kw.pop("addrlen", None)
        if (null or addrlen is not None) and lsk is not None:
            self.check_name_out(lsk, "accept", null, addrlen)
        try:
            fd = self._retag("win.accept", DOCUMENTED["accept"], super().do_accept, p, sock, **kw)
        except Block as b:
            raise Block(lambda now: self._accept_resume(p, sock, lsk, kw), b.reason, b.key) from None
        child = p.files.fds[fd].sock
        if lsk is not None and child is not None:
            self.inherit_options(lsk, child)
        return fd

    def _accept_resume(self, p: Process, sock: int, lsk: Sock | None, kw: dict[str, Any]) -> int:
        if lsk is not None and getattr(lsk, "win_closed", False):
            return self._canceled_by_close(p, sock)
        return self.do_accept(p, sock, **kw)

    @rule("win.blocking_call_canceled", "windows", "fd")
    def _canceled_by_close(self, p: Process, sock: int) -> int:
        """closesocket function (Learn/api/winsock/nf-winsock-closesocket): pending blocking calls on the socket by any thread of the process are canceled; Wine dlls/ws2_32/tests/sock.c, test_accept (asserted on Windows): a blocked accept returns INVALID_SOCKET; the error, WSAEINTR (Windows Sockets Error Codes: a blocking operation was interrupted), is inferred."""
        fact(f"SOCKET {sock} was closed by another thread while accept() waited on it")
        raise SysError("EINTR", "win.blocking_call_canceled")

    # ------------------------------------------------------------------ segment input
    def tcp_rcv_state_process(self, sk: Sock, seg: Segment) -> None:
        st = sk.tcp_state
        if seg.flags & RST and st == State.SYN_SENT and not sk.is_request:
            if self._syn_refused(sk):
                return
        if (seg.flags & DATA and seg.length and getattr(sk, "win_rd_shut", False) and not sk.dead
                and st in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2)):
            self._reset_on_receive(sk, f"{seg.length} byte(s) arrived")
            return
        synchronized = st not in (State.SYN_SENT, State.LISTEN, State.CLOSE) and not sk.is_request
        super().tcp_rcv_state_process(sk, seg)
        if sk.tcp_state in CONNECTED and getattr(sk, "win_connected_at", None) is None:
            sk.win_connected_at = self.now  # SO_CONNECT_TIME counts from here
        if st == State.SYN_SENT and not sk.is_request:
            if sk.tcp_state == State.CLOSE and sk.err:
                sk.win_so_error = sk.err  # kept for SO_ERROR until a connect succeeds
            elif sk.tcp_state in CONNECTED:
                sk.win_so_error = None
        if seg.flags & RST and synchronized and sk.tcp_state == State.CLOSE:
            if st == State.CLOSE_WAIT:
                self._abort_after_peer_close(sk)
            sk.win_reset = True
            if sk.err == "EPIPE":  # Winsock has no EPIPE: a reset connection is WSAECONNRESET
                sk.err = "ECONNRESET"

    @rule("win.abort_after_peer_close", "windows", "tcp")
    def _abort_after_peer_close(self, sk: Sock) -> None:
        """Wine dlls/ws2_32/tests/sock.c, test_shutdown "send data to a peer which is closed" (asserted on Windows): a reset answering data sent after the peer closed makes recv fail with WSAECONNABORTED, not WSAECONNRESET (recv function, Learn/api/winsock/nf-winsock-recv: WSAECONNABORTED, the circuit was terminated)."""
        fact("the peer had closed (CLOSE_WAIT) and answered our data with RST: the connection is aborted")
        sk.win_reset_err = "ECONNABORTED"

    # ------------------------------------------------------------------ TIME_WAIT
    @rule("win.time_wait", "windows", "timewait")
    def tcp_time_wait(self, sk: Sock, substate: State, timeo: float) -> None:
        """TcpTimedWaitDelay (KB 314053, Tcpip Parameters): a closed connection stays in TIME_WAIT for TcpTimedWaitDelay seconds, 30-300, default 120 (0x78)."""
        if substate == State.TIME_WAIT:
            fact(f"TcpTimedWaitDelay = {self.TIME_WAIT_LEN:g} s")
        super().tcp_time_wait(sk, substate, timeo)

    # ------------------------------------------------------------------ pool bookkeeping
    def inet_ehash_insert(self, sk: Sock) -> None:
        if not sk.in_ehash:
            self.pool.charge_tcb()
        super().inet_ehash_insert(sk)

    def inet_unhash(self, sk: Sock) -> None:
        if sk.in_ehash:
            self.pool.uncharge_tcb()
        super().inet_unhash(sk)

    # ------------------------------------------------------------------ timers
    def timer(self, kind: str, obj: Any, gen: int, now: float) -> None:
        if kind == "win_syn_retry":
            self.enter(now, "timer", "", kind)
            sk = obj
            if sk.syn_gen != gen or sk.tcp_state != State.SYN_SENT:
                return
            self.tcp_transmit_skb(sk, SYN)
            sk.syn_tries = 0
            self.inet_csk_reset_xmit_timer("syn", 1.0, sk, gen)  # an unanswered retry still times out
            return
        if kind in ("win_linger", "win_rcvtimeo", "win_sndtimeo"):
            self.now = now  # nothing to do: the engine retries the blocked closesocket / recv / send
            return
        super().timer(kind, obj, gen, now)

    def sockstat(self) -> dict[str, int]:
        s = super().sockstat()
        s["nonpaged_pool_bytes"] = self.pool.bytes
        return s

def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b
