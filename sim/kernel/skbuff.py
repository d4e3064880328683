"""The segment on the wire (a simplified ``struct sk_buff`` with its TCP header, include/linux/skbuff.h).

The kernel model puts :class:`Segment` objects in ``Kernel.outbox``; the engine carries them over
the loopback wire and hands them to ``Kernel.deliver``. Fields are plain attributes so that more
header fields (sequence numbers, options) can be added without touching the code that only reads
the flags.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def describe(self) -> str:
        names = [n for b, n in ((SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST")) if self.flags & b]
        d = f" {self.length}B" if self.length else ""
        return f"{self.src[0]}:{self.src[1]} > {self.dst[0]}:{self.dst[1]} {'|'.join(names) or 'DATA'}{d}"
