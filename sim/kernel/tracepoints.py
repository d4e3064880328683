"""The kernel's tracepoints: typed events, delivered to plain callables subscribed on one kernel.

Linux lets observers attach to named tracepoints (``include/trace/events/sock.h``,
``include/trace/events/tcp.h``: ``inet_sock_set_state``, ``tcp_send_reset``, ``sock_exceed_buf_limit``
...) instead of patching kernel functions; the model does the same. Every observer of the model --
the runner's per-step facts, rule coverage, ``explain``, the object graph -- subscribes with
:meth:`Tracepoints.subscribe` and receives the event objects below, in the order the kernel
produced them, synchronously, while the kernel runs.

Events are small plain objects (``__slots__``) holding references to the kernel objects involved
(a ``Sock``, a ``TimeWaitSock``, a segment, a process name). A subscriber must treat them as
read-only. With nobody subscribed an event is never built: every emit site is guarded by a test
of the (empty) subscriber list.

Event names follow the Linux tracepoints where one exists; the others name the kernel function
they are emitted from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class InetSockSetState:
    """trace_inet_sock_set_state (include/trace/events/sock.h): ``sk`` went from ``old`` to ``new``
    by the transition-table row ``(old, event)``. ``sk`` is a full socket or a TIME_WAIT minisock."""

    sk: Any
    old: int
    new: int
    event: str


@dataclass(frozen=True, slots=True)
class SegmentSent:
    """A segment put on the wire (tcp_transmit_skb(), or tcp_v4_send_reset() when ``sk`` is None)."""

    sk: Any
    seg: Any


@dataclass(frozen=True, slots=True)
class SegmentDelivered:
    """A segment arrives at this kernel (tcp_v4_rcv()); ``sk`` is what it was demultiplexed to
    (a socket, a TIME_WAIT minisock, a listener) or None."""

    seg: Any
    sk: Any


@dataclass(frozen=True, slots=True)
class TcpSendReset:
    """trace_tcp_send_reset (include/trace/events/tcp.h): an RST goes out (``sk`` None: no socket)."""

    sk: Any
    seg: Any


@dataclass(frozen=True, slots=True)
class TimerArmed:
    """A kernel timer is armed: ``kind`` ("syn", "tw", ...) for ``obj``, ``delay`` seconds, generation ``gen``."""

    kind: str
    obj: Any
    delay: float
    gen: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the engine armed expired; ``live`` is False when its generation was superseded."""

    kind: str
    obj: Any
    gen: int
    live: bool


@dataclass(frozen=True, slots=True)
class TimerCancelled:
    """A pending timer no longer applies (its object was freed or re-armed)."""

    kind: str
    obj: Any


@dataclass(frozen=True, slots=True)
class InetTwskEntered:
    """tcp_time_wait() -> inet_twsk_hashdance(): ``tw`` replaces ``sk`` (``substate`` TIME_WAIT or FIN_WAIT2)."""

    sk: Any
    tw: Any
    substate: int
    timeout: float


@dataclass(frozen=True, slots=True)
class InetTwskKilled:
    """inet_twsk_kill(): ``tw`` leaves the hash and the bind bucket; ``why`` is "timer", "rst",
    "syn" (a new SYN takes the 4-tuple), "data" (FIN_WAIT2 minisock got data) or "recycled"."""

    tw: Any
    why: str


@dataclass(frozen=True, slots=True)
class RequestQueued:
    """A connection request: ``stage`` "request" (tcp_conn_request() made ``req`` for a SYN) or
    "accept_queue" (tcp_check_req() -> inet_csk_reqsk_queue_add(): the child waits for accept())."""

    listener: Any
    req: Any
    stage: str


@dataclass(frozen=True, slots=True)
class PortBound:
    """inet_bind_hash() / inet_csk_get_port(): ``owner`` joins the bind bucket of ``port``."""

    port: int
    owner: Any


@dataclass(frozen=True, slots=True)
class PortReleased:
    """inet_put_port(): ``owner`` leaves the bind bucket of ``port``."""

    port: int
    owner: Any


@dataclass(frozen=True, slots=True)
class FdInstall:
    """fd_install() (fs/file.c): ``fd`` of process ``proc`` now refers to ``file``."""

    proc: str
    fd: int
    file: Any


@dataclass(frozen=True, slots=True)
class CloseFd:
    """close_fd() (fs/file.c): ``fd`` of process ``proc`` no longer refers to ``file``."""

    proc: str
    fd: int
    file: Any


@dataclass(frozen=True, slots=True)
class BufferCharged:
    """sk_mem_charge(): ``nbytes`` of socket buffer are charged to the TCP memory pool."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class BufferUncharged:
    """sk_mem_uncharge(): ``nbytes`` of socket buffer are given back to the TCP memory pool."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class RuleConsulted:
    """A rule of the model was consulted (sim/kernel/rules.py); its docstring cites the source."""

    rule: str


@dataclass(frozen=True, slots=True)
class FactNoted:
    """A fact a rule looked at (what explanations show)."""

    text: str


@dataclass(frozen=True, slots=True)
class KernelEntered:
    """The engine entered the kernel: ``what`` is "syscall", "resume", "deliver" or "timer"."""

    what: str
    proc: str
    call: str


@dataclass(frozen=True, slots=True)
class SyscallExit:
    """raw_syscalls:sys_exit: a system call of ``proc`` returned ``ret``/``err`` (decided by ``rule``)
    or ``blocked``."""

    proc: str
    call: str
    ret: Any
    err: str | None
    rule: str | None
    blocked: bool


Subscriber = Callable[[Any], None]


class Tracepoints:
    """The subscription point of one kernel (a part of :class:`~.stack.Kernel`).

    ``self.probes`` is the list of subscribers; emit sites test it before building an event, so an
    unobserved kernel pays one truth test per site.
    """

    probes: list[Subscriber]

    def subscribe(self, fn: Subscriber) -> Subscriber:
        """Call ``fn(event)`` for every event of this kernel from now on; returns ``fn``."""
        self.probes.append(fn)
        return fn

    def unsubscribe(self, fn: Subscriber) -> None:
        self.probes.remove(fn)

    def emit(self, event: Any) -> None:
        for fn in self.probes:
            fn(event)
