"""A load step's connections on loopback taken in one kernel call each (the engine's side).

Kernel.tcp_loopback_lifecycle (sim/kernel/loopback.py) makes a whole lifecycle from the shape of
the step's own lifecycles through the general path; this part decides when that may be done and
adds what the engine counts around it: the segments delivered, and the trace's wire -- either the
lifecycle's six segments in loopback's transmission order (their numbers relative to the two
initial sequence numbers, their ports those of the connection) while the wire has room, or their
count once it is full.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import TYPE_CHECKING, Any, Callable

from ..kernel.skbuff import ACK

if TYPE_CHECKING:
    from .host import SimBackend

_MASK = 0xFFFFFFFF
RECORD, COUNT = "record", "count"  # the wire keeps the segments, or only counts them


class _WireSegment:
    """A segment as the trace's wire shows it (what engine/wire.py's raw_segment() reads)."""

    __slots__ = ("src", "dst", "flags", "push", "seq", "ack_seq", "length", "win", "opts")

    def __init__(self, src: tuple, dst: tuple, flags: int, push: bool, seq: int, ack_seq: int, length: int,
                 win: int, opts: dict | None):
        self.src, self.dst, self.flags, self.push = src, dst, flags, push
        self.seq, self.ack_seq, self.length, self.win, self.opts = seq, ack_seq, length, win, opts


class OneCallLifecycles:
    """When a load step's lifecycle may be taken in one kernel call, and its shapes.

    Eligible: the fast engine, the server accepting on the client's host, the client closing
    first, an unbound client, zero latency, no link. A lifecycle is taken in one call only when
    the engine would do nothing else around it (nothing in flight, nobody subscribed, no other
    blocked call than the acceptor's accept()) and the kernel is in the state the shape was learnt
    in; otherwise, and until two consecutive lifecycles through the calls gave the same shape (for
    the same outcome of the port search and the same state of the wire), the calls are made.
    """

    def __init__(self, b: SimBackend, spec: dict[str, Any], k: Any):
        self.b, self.k, self.spec = b, k, spec
        self.client, self.server = spec["proc"], spec["accept_proc"]
        # confirmed shapes by wire mode, then by whether a TIME_WAIT entry was taken over
        self.shapes: dict[str, dict[bool, Any]] = {RECORD: {}, COUNT: {}}
        self.last: dict[tuple[str, bool], Any] = {}  # the last shape seen, by the same keys
        self.room = 0  # wire nodes a recorded lifecycle adds
        self.mark: tuple | None = None
        self.csk = self.ssk = None

    @staticmethod
    def eligible(b: SimBackend, spec: dict[str, Any], k: Any) -> bool:
        server = spec.get("accept_proc")
        return (b.fast and server is not None and spec.get("close_first", "client") == "client"
                and not spec.get("bind_addr") and b.net is None and b.latencies.get(id(k)) == 0.0
                and b.kernel_of(server) is k)

    def idle(self, quiet: Callable[[], bool]) -> bool:
        """Nothing but the acceptor's accept() waits, nothing is in flight, nobody watches."""
        b = self.b
        if b.pending or len(b.waiters) != 1 or b.wire_recorder.limit is None:
            return False
        (parked,) = b.waiters.values()
        return (len(parked) == 1 and parked[0][1].proc == self.server and parked[0][1].call == "accept"
                and quiet())

    def mode(self) -> str | None:
        """COUNT once the wire is full, RECORD while a whole lifecycle fits, else None."""
        rec = self.b.wire_recorder
        free = rec.limit - len(rec.nodes)
        if free <= 0:
            return COUNT
        return RECORD if self.room and free >= self.room else None

    def replay(self) -> bool:
        b = self.b
        mode = self.mode()
        shapes = self.shapes.get(mode) if mode else None
        if not shapes:
            return False
        done = self.k.tcp_loopback_lifecycle(shapes, self.client, self.server, b.env.now)
        if done is None:
            return False
        shape, key, isn_c, isn_s = done
        segments, not_recorded, wire = shape.engine
        b.segments += segments
        rec = b.wire_recorder
        rec.dropped += not_recorded
        if wire:
            ends = ((key[0], key[1]), (key[2], key[3]))
            isns = (isn_c, isn_s)
            _record(rec, wire, ends, isns, None)
        b._drain()  # the two timer entries
        return True

    def before(self, stats: dict[str, Any]) -> None:
        b = self.b
        self.csk = self.ssk = None
        rec = b.wire_recorder
        self.mark = (self.k.lifecycle_snapshot(self.client, self.server), stats["ok"], stats["accepted"],
                     b.segments, rec.dropped, b.timers.pending, len(rec.roots), len(rec.nodes))

    def after(self, stats: dict[str, Any], quiet: Callable[[], bool]) -> None:
        mark, self.mark = self.mark, None
        if mark is None:
            return
        snap, ok, accepted, segments, dropped, pending, roots, nodes = mark
        b, k = self.b, self.k
        if (stats["ok"] != ok + 1 or stats["accepted"] != accepted + 1 or self.csk is None or self.ssk is None
                or b.timers.pending != pending + 2 or not self.idle(quiet)):
            return
        timers = []
        for lane in (1.0, k.TIME_WAIT_LEN):
            last = b.timers.last(lane)
            if last is None or last[1] is None or len(last[1]) != 4 or last[1][0] is not k:
                return
            _, kind, obj, gen = last[1]
            if type(obj) is weakref.ref:  # a SYN timer holds its socket weakly (SimBackend)
                obj = obj()
            timers.append((lane, kind, obj, gen))
        (listener,) = b.waiters  # the acceptor's accept() sleeps on the listener's wait queue
        shape = k.lifecycle_shape(snap, self.client, self.server, self.csk, self.ssk, listener, tuple(timers))
        if shape is None:
            return
        rec = b.wire_recorder
        added, not_recorded = len(rec.nodes) - nodes, rec.dropped - dropped
        if added and not not_recorded:
            wire = _shape_of(rec.roots[roots:], self.csk, self.ssk)
            if wire is None or _count(wire) != added:
                return
            mode = RECORD
        elif not added and len(rec.nodes) >= rec.limit:
            wire, mode = (), COUNT
        else:
            return  # the wire filled up within this lifecycle
        shape = dataclasses.replace(shape, engine=(b.segments - segments, not_recorded, wire))
        prev = self.last.get((mode, shape.recycled))
        self.last[(mode, shape.recycled)] = shape
        if prev is not None and prev.same(shape):
            self.shapes[mode][shape.recycled] = shape
            if mode == RECORD:
                self.room = added


def _shape_of(roots: list, csk: Any, ssk: Any) -> tuple | None:
    """The recorded segments of a lifecycle, each as (from the client?, flags, PSH, length,
    window, options, sequence and acknowledgement numbers relative to the sender's and the
    receiver's initial sequence numbers, the segments it caused), or None if one is not of the
    lifecycle's connection."""
    client, server = (csk.laddr, csk.lport), (csk.raddr, csk.rport)
    out = []
    for node in roots:  # [segment, *the segments its delivery caused] (WireRecorder)
        seg, children = node[0], node[1:]
        if seg.src == client and seg.dst == server:
            mine, theirs, from_client = csk.isn, ssk.isn, True
        elif seg.src == server and seg.dst == client:
            mine, theirs, from_client = ssk.isn, csk.isn, False
        else:
            return None
        sub = _shape_of(children, csk, ssk)
        if sub is None:
            return None
        ack = (seg.ack_seq - theirs) & _MASK if seg.flags & ACK else None  # (the wire shows none)
        out.append((from_client, seg.flags, seg.push, seg.length, seg.win, dict(seg.opts or {}),
                    (seg.seq - mine) & _MASK, ack, sub))
    return tuple(out)


def _count(wire: tuple) -> int:
    return sum(1 + _count(w[-1]) for w in wire)


def _record(rec: Any, wire: tuple, ends: tuple, isns: tuple, parent: list | None) -> None:
    """Add a lifecycle's segments to the wire recorder, in the shape's causal order."""
    for from_client, flags, push, length, win, opts, seq, ack, sub in wire:
        me, peer = (0, 1) if from_client else (1, 0)
        seg = _WireSegment(ends[me], ends[peer], flags, push, (isns[me] + seq) & _MASK,
                           0 if ack is None else (isns[peer] + ack) & _MASK, length, win, opts)
        node = [seg]
        (parent if parent is not None else rec.roots).append(node)
        rec.nodes[id(seg)] = node
        _record(rec, sub, ends, isns, node)
