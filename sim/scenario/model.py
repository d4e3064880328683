"""The typed scenario: what a scenario file means once validated.

A scenario is a host (personality, sysctls, limits), a set of processes, and an ordered list of
steps executed in that global order by either backend. Every model forbids unknown keys, so a
misspelt option is an error with its line, never silently ignored.

Names: a step with ``as: NAME`` binds NAME to the fd the call returned (socket, accept, dup,
dup2) or to the new process (fork). Later steps refer to sockets by name (``sock: srv``) or by a
literal fd number (``sock: 3``). Names are per process; a forked child inherits its parent's.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal, Union
from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .fields import (  # noqa: F401 (also the names other modules import from here)
    CAPS, ERRNO_NAMES, INT32, Int32, Name, NotBoolFloat, NotBoolInt, OUTCOME_WORDS, PAIR_OPTS,
    POLL_EVENTS, Port, PortArg, Pos32, REF_PATTERN, Ref, SOCKOPTS, Seconds, SockRef, WSA_NAMES,
    _Strict, _check_addr, _refuse_bool, relocated,
)
from .hosts import (  # noqa: F401 (also the names other modules import from here)
    HOST_GLOBAL_SYSCTLS, Host, HostSpec, Link, Sysctls,
)
from .calls import (  # noqa: F401 (also the names other modules import from here)
    AcceptCall, BindCall, CALL_NAMES, Call, CapsetCall, CloseCall, ClosesocketCall, ConnectCall,
    Dup2Call, DupCall, ExitCall, ForkCall, GetpeernameCall, GetsocknameCall, GetsockoptCall,
    IoctlsocketCall, ListenCall, NAME_CALLS, PollCall, RecvCall, SendCall, SendtoCall,
    SetNonblockCall, SeteuidCall, SetsockoptCall, ShutdownCall, SocketCall, Tolerance,
    WSACleanupCall, WSAGetLastErrorCall, WSAStartupCall, WireTolerance, _Step, check_expect_keys,
)


class Process(_Strict):
    nofile: Annotated[int, NotBoolInt, Field(ge=3, le=1048576)] = 1024  # RLIMIT_NOFILE soft limit
    uid: Annotated[int, NotBoolInt, Field(ge=0, le=65535)] = 0
    host: Name | None = None  # the host it runs on (scenarios with hosts:)
    # capabilities the process lacks from the start (a uid other than 0 has none anyway)
    drop_caps: list[Literal[CAPS]] = []  # type: ignore[valid-type]


# ----------------------------------------------------------------------------- steps


class SleepStep(_Step):
    sleep: Seconds


class ObserveTcp(_Strict):
    """TCP states of the sockets whose local or remote port is ``port`` (as /proc/net/tcp shows)."""

    what: Literal["tcp_states"]
    port: PortArg


class ObserveFds(_Strict):
    """The socket fd numbers open in a process (as /proc/PID/fd shows), in ascending order."""

    what: Literal["fds"]
    proc: Name


class ObserveSockstat(_Strict):
    """/proc/net/sockstat TCP line: inuse, orphan, tw (per namespace), as deltas from the start."""

    what: Literal["sockstat"]


class ObserveTimer(_Strict):
    """QTimer state: isActive(), interval(), remainingTime() (ms; -1 when inactive), isSingleShot()."""

    what: Literal["timer"]
    proc: Name
    name: Name


class ObserveQueues(_Strict):
    """Bytes in a socket's receive and send queues (SIOCINQ, SIOCOUTQ)."""

    what: Literal["queues"]
    proc: Name
    sock: SockRef


TCP_INFO_FIELDS = (
    "state", "ca_state", "retransmits", "probes", "backoff", "unacked", "lost", "retrans",
    "total_retrans", "bytes_acked", "bytes_received", "notsent_bytes", "snd_cwnd", "rto",
)
TCP_INFO_DEFAULT = ("state", "ca_state")


class ObserveTcpInfo(_Strict):
    """getsockopt(TCP_INFO): the socket's state and the counters named in ``fields``."""

    what: Literal["tcp_info"]
    proc: Name
    sock: SockRef
    fields: Annotated[list[Literal[TCP_INFO_FIELDS]], Field(min_length=1)] = list(TCP_INFO_DEFAULT)  # type: ignore[valid-type]


Observation = Annotated[
    Union[ObserveTcp, ObserveFds, ObserveSockstat, ObserveQueues, ObserveTimer, ObserveTcpInfo],
    Field(discriminator="what")
]


class ObserveStep(_Step):
    observe: Observation


class LoadSpec(_Strict):
    """Repeat a connection pattern at a fixed rate for a duration.

    The client process opens a socket, connects to ``addr:port`` and closes; the server process
    (``accept_proc``/``listener``) accepts each connection and closes it. ``close_first`` says who
    closes first (the active closer keeps the TIME_WAIT entry).
    """

    proc: Name
    addr: str = "127.0.0.1"
    port: Port
    rate: Annotated[float, NotBoolFloat, Field(gt=0, le=1e6)]  # connections per second
    duration: Annotated[float, NotBoolFloat, Field(gt=0, le=7 * 24 * 3600)]
    accept_proc: Name | None = None
    listener: SockRef | None = None
    close_first: Literal["client", "server"] = "client"
    reuseaddr: bool = False  # SO_REUSEADDR on each client socket before connect
    bind_addr: str | None = None  # explicit bind(addr, 0) before connect
    stop_on_error: bool = False

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr(v)))

    @model_validator(mode="after")
    def _server_pair(self) -> LoadSpec:
        if (self.accept_proc is None) != (self.listener is None):
            raise ValueError("accept_proc and listener go together: give both or neither")
        return self


LOAD_KEYS = ("attempts", "ok", "errors", "first_error", "first_error_at", "accepted")


class LoadStep(_Step):
    load: LoadSpec

    @model_validator(mode="after")
    def _expect_shape(self) -> LoadStep:
        if self.expect is not None and not isinstance(self.expect, str):
            check_expect_keys(self.expect, LOAD_KEYS, "a load step")
        return self


QT_METHODS = {
    "QTcpServer": ("listen", "serverError", "errorString", "isListening", "socketDescriptor",
                   "setListenBacklogSize", "setMaxPendingConnections", "hasPendingConnections",
                   "nextPendingConnection", "close", "signals"),
    "QTcpSocket": ("connectToHost", "state", "error", "errorString", "bytesAvailable",
                   "bytesToWrite", "socketDescriptor", "write", "readAll", "disconnectFromHost",
                   "abort", "signals"),
}
QT_CALLS = tuple(f"{c}.{m}" for c, ms in QT_METHODS.items() for m in ms)
# which keys each Qt call needs (value: setListenBacklogSize, setMaxPendingConnections, write)
QT_NEEDS = {"QTcpServer.listen": ("port",), "QTcpSocket.connectToHost": ("addr", "port"),
            "QTcpServer.setListenBacklogSize": ("value",), "QTcpServer.setMaxPendingConnections": ("value",),
            "QTcpSocket.write": ("value",), "QTcpServer.nextPendingConnection": ("as",)}


class QtCall(_Strict):
    """One call on a Qt object of process ``proc``: ``call`` is ``Class.method`` (QTcpServer or
    QTcpSocket); the object named ``object`` is created on first use. ``signals`` is the list of
    signals the object emitted since the last look."""

    proc: Name
    object: Name
    call: Literal[QT_CALLS]  # type: ignore[valid-type]
    addr: str | None = None
    port: Port | None = None
    value: Annotated[int, Field(ge=0, le=1 << 30)] | None = None
    as_: Name | None = Field(None, alias="as")

    @field_validator("addr")
    @classmethod
    def _v4(cls, v: str | None) -> str | None:
        if v is not None and (_check_addr(v) and ":" in v):
            raise ValueError("an IPv4 literal such as 127.0.0.1 (Qt steps model IPv4 QHostAddress values only)")
        return v

    @model_validator(mode="after")
    def _needs(self) -> QtCall:
        for key in QT_NEEDS.get(self.call, ()):
            if getattr(self, "as_" if key == "as" else key) is None:
                raise ValueError(f"{key}: for {self.call}")
        return self


class QtStep(_Step):
    qt: QtCall

    @field_validator("expect")
    @classmethod
    def _expect_word(cls, v: Any) -> Any:
        """A Qt call's expectation is its return value: true/false, an enum name, a number, a list."""
        return v

def _slot_tag(v: Any) -> str:
    if isinstance(v, dict):
        return "qt" if "object" in v else "call"
    return "qt" if isinstance(v, QtCall) else "call"


SlotCall = Annotated[
    Union[Annotated[Call, Tag("call")], Annotated[QtCall, Tag("qt")]],
    Discriminator(_slot_tag),
]


class TimerOp(_Strict):
    """An application timer with QTimer semantics, in the event loop of process ``proc``.

    ``op`` is a QTimer method: ``start`` (restarts a running timer), ``stop``, ``setInterval``,
    ``setSingleShot``, ``setTimerType``, or the static ``singleShot`` (one shot, no object).
    ``on_timeout`` lists the calls the connected slot makes in ``proc`` at each timeout: system
    calls, or Qt calls (``object:`` and ``call: QTcpServer.listen`` ...; a Qt call fails when it
    returns false). ``until_ok`` re-arms a single-shot timer while the slot's last call fails: the usual
    ``QTimer::singleShot`` retry loop.
    """

    proc: Name
    name: Name
    op: Literal["start", "stop", "setInterval", "setSingleShot", "setTimerType", "singleShot"]
    interval: Annotated[int, NotBoolInt, Field(ge=-(2**31), le=2**31 - 1)] | None = None  # milliseconds
    single_shot: bool | None = None
    type: Literal["PreciseTimer", "CoarseTimer", "VeryCoarseTimer"] | None = None
    on_timeout: list[SlotCall] = []  # system calls, or Qt calls (with object:)
    until_ok: bool = False
    # only when the process's previous call failed: `if (bind(...) == SOCKET_ERROR) QTimer::singleShot(...)`
    if_failed: bool = False
    max_shots: Annotated[int, NotBoolInt, Field(ge=1, le=100000)] = 1000  # bound on timeouts of this timer

    @model_validator(mode="before")
    @classmethod
    def _slot_runs_in_timer_process(cls, data: Any) -> Any:
        """Calls in on_timeout run in the timer's own thread: their proc defaults to the timer's."""
        if isinstance(data, dict) and isinstance(data.get("on_timeout"), list):
            data = dict(data)
            data["on_timeout"] = [
                ({**c, "proc": data.get("proc")} if isinstance(c, dict) and "proc" not in c else c)
                for c in data["on_timeout"]]
        return data


class TimerStep(_Step):
    timer: TimerOp


class SysctlStep(_Step):
    """Change per-namespace sysctls from this point on (what ``sysctl -w`` does mid-run)."""

    sysctl: Sysctls

    @field_validator("sysctl", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, dict) and not v:
            raise ValueError("sysctl: name at least one setting")
        if isinstance(v, dict):
            glob = [k for k in v if k in HOST_GLOBAL_SYSCTLS]
            if glob:
                raise ValueError(f"sysctl: {glob[0]} is host-global and cannot change inside the "
                                 "scenario's network namespace")
        return v


STEP_KINDS = ("call", "sleep", "observe", "load", "timer", "sysctl", "qt")


def _step_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        for k in STEP_KINDS:
            if k in v:
                return k
        return None
    return step_kind(v)


Step = Annotated[
    Union[
        Annotated[Call, Tag("call")],
        Annotated[SleepStep, Tag("sleep")],
        Annotated[ObserveStep, Tag("observe")],
        Annotated[LoadStep, Tag("load")],
        Annotated[TimerStep, Tag("timer")],
        Annotated[SysctlStep, Tag("sysctl")],
        Annotated[QtStep, Tag("qt")],
    ],
    Discriminator(_step_tag, custom_error_type="step_kind",
                  custom_error_message="a step needs one of call:, sleep:, observe:, load:, timer:, "
                                       "sysctl: or qt:"),
]


class Check(_Strict):
    """A condition over several captured steps, checked when the run ends.

    ``distinct``: the captured values (ports, for a captured address) are all different.
    ``same``: the captured values are all equal (whole addresses compare address and port).
    ``count``: how many of the captured steps meet ``where`` (an expectation); ``expect`` is the
    count wanted: a number, ``{range: [lo, hi]}`` or ``{one_of: [...]}``.
    """

    distinct: Annotated[list[Name], Field(min_length=2)] | None = None
    same: Annotated[list[Name], Field(min_length=2)] | None = None
    count: Annotated[list[Name], Field(min_length=1)] | None = None
    where: Any = "ok"
    expect: Any = None
    note: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        kinds = [k for k in ("distinct", "same", "count") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a check has exactly one of distinct:, same: or count:")
        if self.count is not None and self.expect is None:
            raise ValueError("a count: check needs expect: (the number of steps wanted)")
        if self.count is None and self.expect is not None:
            raise ValueError(f"a {kinds[0]}: check takes no expect:")
        return self


class Scenario(_Strict):
    name: Name
    description: str = ""
    tags: list[str] = []
    slow: bool = False  # the real run waits out kernel timers (e.g. 60 s TIME_WAIT)
    host: Host = Host()
    hosts: dict[Name, HostSpec] = {}  # several hosts, each its own kernel (instead of host:)
    links: list[Link] = []
    processes: dict[Name, Process]
    steps: Annotated[list[Step], Field(min_length=1)]
    checks: list[Check] = []
    seed: Annotated[int, NotBoolInt] = 0
    tolerate: list[WireTolerance] = []  # wire tolerances for every step
    # filled in by the loader, not by the file:
    source: str | None = Field(None, exclude=True)
    step_lines: tuple[int, ...] = Field((), exclude=True)
    # where each captured-value reference is written: (step index, key) -> (line, column)
    ref_marks: dict[tuple[int, str], tuple[int, int]] = Field({}, exclude=True)
    check_lines: tuple[int, ...] = Field((), exclude=True)

    @model_validator(mode="after")
    def _known_processes(self) -> Scenario:
        if not self.processes:
            raise ValueError("processes: at least one process is needed")
        return self

    @model_validator(mode="after")
    def _topology(self) -> Scenario:
        if not self.hosts:
            if self.links:
                raise ValueError("links: a link joins hosts declared under hosts:, and there are none")
            for name, p in self.processes.items():
                if p.host is not None:
                    raise ValueError(f"processes.{name}.host: {p.host!r} is not declared under hosts:")
            return self
        if self.host != Host():
            raise ValueError("hosts: give either host: (one host) or hosts: (several), not both")
        for name, p in self.processes.items():
            if p.host is None and len(self.hosts) > 1:
                raise ValueError(f"processes.{name}: say which host it runs on (host: one of "
                                 f"{', '.join(self.hosts)})")
            if p.host is not None and p.host not in self.hosts:
                raise ValueError(f"processes.{name}.host: no host {p.host!r} (hosts: {', '.join(self.hosts)})")
        owner: dict[str, str] = {}
        for h, spec in self.hosts.items():
            for a in spec.addresses:
                if a in owner:
                    raise ValueError(f"hosts.{h}.addresses: {a} is already an address of {owner[a]}")
                owner[a] = h
        pairs = set()
        for i, link in enumerate(self.links):
            for h in link.between:
                if h not in self.hosts:
                    raise ValueError(f"links[{i}].between: no host {h!r} (hosts: {', '.join(self.hosts)})")
            pair = frozenset(link.between)
            if pair in pairs:
                raise ValueError(f"links[{i}]: {' and '.join(link.between)} are already linked")
            pairs.add(pair)
            for h in link.between:
                if not self.hosts[h].addresses:
                    raise ValueError(f"hosts.{h}: a linked host needs an address (addresses: [10.0.0.1])")
        return self

    # ------------------------------------------------------------------ topology
    def host_names(self) -> list[str]:
        """The hosts' names; a one-host scenario has the one host ``host``."""
        return list(self.hosts) or ["host"]

    def host_of(self, proc: str) -> Host:
        """The host (personality, sysctls, limits) process ``proc`` runs on."""
        if not self.hosts:
            return self.host
        p = self.processes.get(proc)
        name = p.host if p is not None and p.host is not None else next(iter(self.hosts))
        return self.hosts[name]

    def host_name_of(self, proc: str) -> str:
        if not self.hosts:
            return "host"
        p = self.processes.get(proc)
        return p.host if p is not None and p.host is not None else next(iter(self.hosts))

    def link_between(self, a: str, b: str) -> Link | None:
        return next((ln for ln in self.links if set(ln.between) == {a, b}), None)

    def host_with_address(self, addr: str) -> str | None:
        """The host that has ``addr`` on an interface (not loopback)."""
        ip = ipaddress.ip_address(addr)
        for h, spec in self.hosts.items():
            if any(ipaddress.ip_address(a) == ip for a in spec.addresses):
                return h
        return None


def step_kind(step: Any) -> str:
    if isinstance(step, SleepStep):
        return "sleep"
    if isinstance(step, ObserveStep):
        return "observe"
    if isinstance(step, LoadStep):
        return "load"
    if isinstance(step, TimerStep):
        return "timer"
    if isinstance(step, SysctlStep):
        return "sysctl"
    if isinstance(step, QtStep):
        return "qt"
    return "call"


def call_args(step: Any) -> dict[str, Any]:
    """The call's arguments as the trace shows them (no bookkeeping fields)."""
    data = step.model_dump(by_alias=True, exclude={"note", "expect", "tolerate", "proc", "call",
                                                   "capture"})
    return {k: v for k, v in data.items() if v is not None and v != []}
