"""The trace schema shared by both backends.

A trace is what one backend (the simulator or the real kernel) did with one scenario: for every
step, when it ran, which process issued which call with which arguments, what the call returned,
the canonical error *name* (``EADDRINUSE``, never a number), whether it blocked and when it woke,
and what observations saw. Only the simulator fills ``rule``/``cite``/``events``: the real kernel
cannot say why.

Both backends produce this schema and :mod:`sim.compare` compares two of them field by field.
The schema is plain JSON so that ``--json`` output is stable and diffable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

# Outcome markers that are not errno names.
BLOCKED = "BLOCKED"  # the call did not return at issue; see ``completed_after``
PROCESS_BUSY = "PROCESS_BUSY"  # the step's process was still blocked in an earlier call
PROCESS_GONE = "PROCESS_GONE"  # the step's process had exited or was killed


@dataclass
class StepRecord:
    index: int  # position in the scenario's step list (0-based)
    line: int  # line of the step in the scenario file (1-based; 0 if unknown)
    kind: str  # "call", "sleep", "observe", "load", "timer", "qt"
    proc: str | None = None
    call: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0  # seconds since the scenario started, when the step was issued
    returned: float | None = None  # real backend: when the system call returned (seconds since the start)
    ret: Any = None  # POSIX-style return value: fd, byte count, option value, port, 0, or -1
    err: str | None = None  # errno name (WSA name under windows), BLOCKED, PROCESS_BUSY, PROCESS_GONE
    errno: int | None = None  # the error's number as the program sees it (errno / WSAGetLastError)
    blocked: bool = False  # the call did not complete when issued
    completed_after: int | None = None  # for a blocked call: index of the step after which it returned
    completed_time: float | None = None
    obs: Any = None  # observation result (observe steps), or load statistics (load steps)
    name: dict[str, Any] | None = None  # the address a call returned: {addr, port} (getsockname, getpeername, accept)
    rule: str | None = None  # simulator only: id of the rule that decided the outcome
    cite: str | None = None  # simulator only: that rule's source
    trail: list[str] = field(default_factory=list)  # simulator only: every rule consulted
    facts: list[str] = field(default_factory=list)  # simulator only: facts the rule looked at
    step: int | None = None  # the scenario step this record comes from (a timer's op step for its slot's calls)
    via: str | None = None  # a call made by a timer's slot: which timeout
    syscalls: list[dict[str, Any]] = field(default_factory=list)  # simulator only: the system calls a Qt call made
    tolerate: list[dict[str, Any]] = field(default_factory=list)  # the step's crosscheck tolerances
    expect: Any = None  # the scenario's expectation, if any
    expect_ok: bool | None = None  # None when the step has no expectation

    def outcome(self) -> str:
        """Short text of the outcome: ``ok``, ``3``, ``EADDRINUSE``, ``BLOCKED``."""
        if self.err:
            return self.err
        if self.ret is None or self.ret == 0:
            return "ok"
        return str(self.ret)


@dataclass
class RawSegment:
    """A segment as a backend saw it go out: absolute sequence numbers (the model's start at 0)."""

    src: tuple[str, int]
    dst: tuple[str, int]
    flags: str  # "SYN", "SYN|ACK", "PSH|ACK", "FIN|ACK", "RST", "RST|ACK" (order of TCP_FLAG_ORDER)
    seq: int
    ack: int = 0  # 0 unless ACK is set
    length: int = 0  # payload bytes
    win: int = 0  # the window field as sent (scaled down, except on SYNs)
    opts: dict[str, Any] = field(default_factory=dict)  # mss, wscale, sack_ok, sack, ts
    time: float = 0.0


@dataclass
class WireSegment:
    """One segment of the trace: numbers relative to each side's initial sequence number."""

    rec: int  # index of the step record that caused it (the step after which it was on the wire)
    conn: int  # connection number, 1-based, in order of first segment
    dir: str  # ">" from the connection's initiator (the side that sent the first segment), "<" back
    src: str  # "127.0.0.1:40000", "[::1]:5000"
    dst: str
    flags: str
    seq: int
    ack: int
    len: int
    win: int
    opts: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    states: list[str] = field(default_factory=list)  # [sender, receiver] TCP state after the step

    def line(self) -> str:
        """``SYN seq=0 ack=0 len=0 win=65495 <mss 65495,sack_ok,ts,wscale 7>`` (no addresses)."""
        ack = f" ack={self.ack}" if "ACK" in self.flags.split("|") else ""
        return (f"{self.flags} seq={self.seq}{ack} len={self.len} win={self.win}"
                + (f" <{options_text(self.opts)}>" if self.opts else ""))


TCP_FLAG_ORDER = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def options_text(opts: dict[str, Any]) -> str:
    parts = []
    for k in ("mss", "sack_ok", "ts", "wscale", "sack"):
        if k in opts:
            parts.append(k if opts[k] is True else f"{k} {opts[k]}")
    return ",".join(parts)


def endpoint_text(ep: tuple[str, Any]) -> str:
    """``127.0.0.1:9500`` / ``[::1]:9500``; a v4-mapped address is shown as the IPv4 address the
    segment carries."""
    if ep[0].startswith("::ffff:") and "." in ep[0]:
        return f"{ep[0][7:]}:{ep[1]}"
    return f"[{ep[0]}]:{ep[1]}" if ":" in ep[0] else f"{ep[0]}:{ep[1]}"


class WireNumbering:
    """Turn :class:`RawSegment` s into :class:`WireSegment` s, the same way for both backends.

    A connection is a pair of endpoints from a SYN (without ACK) on: a SYN from a pair whose
    connection already went past its handshake starts a new connection (TIME_WAIT recycling, a
    new connect() after a refusal), while a SYN retransmission or the second SYN of a
    simultaneous open stays in the current one. Each side's initial sequence number is the
    sequence number of the SYN it sent; a side that never sent one (a closed port answering RST)
    keeps its numbers as sent, which is 0 or the acknowledgement it answers (tcp_v4_send_reset()
    in net/ipv4/tcp_ipv4.c).
    """

    def __init__(self) -> None:
        self.conns: dict[frozenset, dict[str, Any]] = {}
        self.count = 0

    def _conn(self, seg: RawSegment) -> dict[str, Any]:
        key = frozenset((seg.src, seg.dst))
        conn = self.conns.get(key)
        flags = seg.flags.split("|")
        if "SYN" in flags and "ACK" not in flags:
            same = (conn is not None and conn["handshake"]
                    and conn["isn"].get(seg.src, seg.seq) == seg.seq)
            if not same:
                conn = None
        if conn is None:
            self.count += 1
            conn = {"id": self.count, "first": seg.src, "isn": {}, "handshake": True}
            self.conns[key] = conn
        return conn

    def add(self, rec: int, seg: RawSegment) -> WireSegment:
        conn = self._conn(seg)
        flags = seg.flags.split("|")
        if "SYN" in flags:
            conn["isn"].setdefault(seg.src, seg.seq)
        else:
            conn["handshake"] = False
        isn = conn["isn"]
        seq = (seg.seq - isn[seg.src]) % 2**32 if seg.src in isn else seg.seq
        ack = 0
        if "ACK" in flags:
            ack = (seg.ack - isn[seg.dst]) % 2**32 if seg.dst in isn else seg.ack
        return WireSegment(rec=rec, conn=conn["id"], dir=">" if seg.src == conn["first"] else "<",
                           src=endpoint_text(seg.src), dst=endpoint_text(seg.dst),
                           flags="|".join(f for f in TCP_FLAG_ORDER if f in flags), seq=seq,
                           ack=ack, len=seg.length, win=seg.win, opts=dict(seg.opts),
                           time=seg.time)


@dataclass
class Trace:
    scenario: str
    backend: str  # "sim" or "real"
    personality: str = "linux"
    seed: int | None = None
    steps: list[StepRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # end-of-run tables (sim) / counters (real)
    meta: dict[str, Any] = field(default_factory=dict)  # kernel version, host, duration, ...
    wire: list[WireSegment] = field(default_factory=list)  # every segment on the wire, in order
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        steps = [StepRecord(**s) for s in data.get("steps", [])]
        wire = [WireSegment(**w) for w in data.get("wire", [])]
        rest = {k: v for k, v in data.items() if k not in ("steps", "wire")}
        return cls(steps=steps, wire=wire, **rest)

    @property
    def failed_expectations(self) -> list[StepRecord]:
        return [s for s in self.steps if s.expect_ok is False]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


# --------------------------------------------------------------------------- the backend contract
#
# Both backends are driven by the scenario runner (sim/scenario/runner.py) one step at a time, in
# the scenario's global order, through this plain-data interface. Nothing here depends on the
# scenario model: the runner passes dicts (``Scenario.model_dump(by_alias=True)``) and resolves
# socket names to fd numbers before each call, so a backend only ever sees ints.

from typing import Protocol  # noqa: E402


@dataclass
class CallResult:
    ret: Any = None  # fd / byte count / option value / port / 0; -1 on error
    err: str | None = None  # errno name; None on success
    errno: int | None = None
    blocked: bool = False  # True: the call has not returned yet (it may complete later)
    name: dict[str, Any] | None = None  # an address the call returned: {addr, port}
    at: float | None = None  # real backend: when the system call began (seconds since the start)
    until: float | None = None  # real backend: when the system call returned
    rule: str | None = None  # simulator only
    cite: str | None = None
    trail: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


@dataclass
class Completion:
    """A call that blocked earlier and has now returned."""

    index: int  # the step index of the call
    result: CallResult
    time: float


class Backend(Protocol):
    name: str

    def start(self, scenario: dict[str, Any]) -> None:
        """Set up the host (sysctls, limits) and one process per entry of ``processes``."""

    def now(self) -> float:
        """Seconds since start (simulated or real)."""

    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        """Issue one call in process ``proc``; ``args['sock']`` is already an fd number.

        Returns when the call returned, or with ``blocked=True`` when it did not within the
        backend's bound (the call stays pending; see :meth:`completions`). Before returning, the
        backend lets the network settle (segments in flight on loopback are delivered).
        """

    def sleep(self, seconds: float) -> None:
        """Let time pass (the simulator advances its clock; the real backend really sleeps)."""

    def observe(self, obs: dict[str, Any]) -> Any:
        """Run one observation; ``obs['sock']`` is already an fd number."""

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        """Run a load step; returns its statistics (see docs/scenarios.md)."""

    def sysctl(self, values: dict[str, Any]) -> str | None:
        """Change per-namespace sysctls now; returns why a setting was refused, or None."""

    def completions(self) -> list[Completion]:
        """Pending calls that returned since the last time this was asked."""

    def endpoint_states(self) -> dict[tuple[str, str], str]:
        """(local endpoint, remote endpoint) as :func:`endpoint_text` writes them -> TCP state
        name, for every connected socket now (optional, like :meth:`wire_segments`)."""

    def wire_segments(self) -> list[RawSegment]:
        """Segments put on the wire since the last time this was asked, in order (optional: a
        backend without it has an empty wire; the real one without a capture says why in
        ``summary["wire"]``)."""

    def close(self) -> dict[str, Any]:
        """Tear everything down; return the end-of-run summary."""
