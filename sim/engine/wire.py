"""The simulated wire as the trace shows it: every segment the kernel sends, in loopback's order.

On ``lo`` Linux hands a transmitted segment to the receiving socket at once (``loopback_xmit()``
-> ``netif_rx()``, processed in the softirq that runs when the sender re-enables bottom halves),
so the receiver's answer goes on the wire before the sender's next segment: a two-segment
write shows as data, ACK, data, ACK. The engine delivers the kernel's output in FIFO order after
each kernel entry, which processes the same segments in a different order; this recorder
restores loopback's transmission order from causality: each segment is followed by the
segments that its delivery made the kernel send (depth first).

The engine tells the recorder what it takes from the kernel's outbox (no kernel subscription:
the kernel's tracepoints stay free of cost when nobody else listens).
"""

from __future__ import annotations

from typing import Any

from ..kernel.skbuff import ACK, DATA, FIN, RST, SYN
from ..trace import RawSegment


class WireRecorder:
    """Segments in transmission order; :meth:`take` returns (and forgets) what was sent.

    ``limit`` (None: none) bounds the segments held until the next :meth:`take`: a load step
    makes millions of segments, and its trace keeps the first ``limit`` of them (in
    transmission order up to there) and the count of the others in ``dropped``.
    """

    def __init__(self) -> None:
        self.roots: list[list] = []
        self.nodes: dict[int, list] = {}  # id(segment) -> [segment, *children] (one list a segment)
        self.limit: int | None = None
        self.dropped = 0

    def sent(self, seg: Any, cause: Any = None) -> None:
        """``seg`` left the kernel; ``cause`` is the segment whose delivery made it (None: a call
        or a timer). A segment already known is not recorded twice."""
        if id(seg) in self.nodes:
            return
        if self.limit is not None and len(self.nodes) >= self.limit:
            self.dropped += 1
            return
        node = [seg]
        parent = self.nodes.get(id(cause)) if cause is not None else None
        (parent if parent is not None else self.roots).append(node)
        self.nodes[id(seg)] = node

    def take(self) -> list[RawSegment]:
        out: list[RawSegment] = []
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            out.append(raw_segment(node[0]))
            stack.extend(reversed(node[1:]))
        self.roots, self.nodes = [], {}
        return out


def raw_segment(seg: Any) -> RawSegment:
    f = seg.flags
    names = [n for b, n in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST")) if f & b]
    if seg.push:
        names.append("PSH")
    if f & ACK:
        names.append("ACK")
    return RawSegment(src=tuple(seg.src), dst=tuple(seg.dst), flags="|".join(names), seq=seg.seq,
                      ack=seg.ack_seq if f & ACK else 0,
                      length=seg.length if f & DATA else 0, win=seg.win, opts=dict(seg.opts or {}))
