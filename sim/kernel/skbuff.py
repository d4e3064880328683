"""The segment on the wire (a simplified ``struct sk_buff`` with its TCP header, include/linux/skbuff.h).

The kernel model puts :class:`Segment` objects in ``Kernel.outbox``; the engine carries them over
the loopback wire and hands them to ``Kernel.deliver``. Fields are plain attributes so that more
header fields (sequence numbers, options) can be added without touching the code that only reads
the flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SYN, ACK, FIN, RST, DATA = 1, 2, 4, 8, 16


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
    # the TCP header as it goes on the wire (tcp_transmit_skb(), tcp_v4_send_reset()): sequence
    # numbers relative to the sender's initial sequence number (the SYN is 0, the first data byte 1),
    # the 16-bit window field (scaled down, except on a SYN), the options, and PSH
    seq: int = 0
    ack_seq: int = 0
    win: int = 0
    opts: dict | None = None
    push: bool = False
    # the sending socket and its byte count at the segment's end: the receiver's skb is a clone
    # of the skb the sender keeps for retransmission until that data is acknowledged
    origin: Any = None
    origin_end: int = 0

    def describe(self) -> str:
        names = [n for b, n in ((SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST")) if self.flags & b]
        d = f" {self.length}B" if self.length else ""
        return f"{self.src[0]}:{self.src[1]} > {self.dst[0]}:{self.dst[1]} {'|'.join(names) or 'DATA'}{d}"


# The receive queue's memory (sk_rmem_alloc). Measured on loopback (6.18, ``ss -tm``): an skb
# costs its payload plus 832 bytes (the sk_buff and its head). skb_try_coalesce() (net/core/
# skbuff.c) appends a later in-order skb's page fragment to the queue's tail skb, charging only
# the payload, but never to a tail that is still a clone -- on loopback, while the sender still
# holds the original for retransmission, i.e. until the sender has processed the ACK of that
# data (so the segments of one burst are not merged, a later write's are) -- and the tail takes
# at most MAX_SKB_FRAGS fragments.
LO_SKB_OVERHEAD = 832
MAX_SKB_FRAGS = 17


@dataclass(slots=True)
class RcvSkb:
    """One skb of the receive queue: unread payload, truesize, page fragments, and whose clone it is."""

    len: int
    truesize: int
    frags: int = 1
    origin: Any = None  # the sending socket (loopback), None once it may be written to
    origin_end: int = 0

    def cloned(self) -> bool:
        """skb_cloned(): the sender still holds the data (not acknowledged to it yet)."""
        return self.origin is not None and self.origin.snd_una < self.origin_end
