"""net/ipv4/tcp_output.c: segment transmission."""

from __future__ import annotations

from typing import Any

from . import buffers
from .skbuff import ACK, DATA, FIN, RST, Segment
from .sockets import Sock
from .tcp_states import State
from .tracepoints import SegmentSent, TcpSendReset


class TcpOutput:
    """Kernel functions of net/ipv4/tcp_output.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_transmit_skb(self, sk: Sock, flags: int, length: int = 0) -> None:
        """tcp_transmit_skb(): build a segment of this connection (its window: the free receive space)."""
        if sk.raddr is None or sk.blackhole:
            return
        free = max(0, buffers.receive_window(sk.rcvbuf, sk.rcv_ratio) - sk.rcv_q)
        self.ip_queue_xmit(Segment((sk.laddr, sk.lport), (sk.raddr, sk.rport), flags, length,
                                   sk.rcv_nxt, free, acks_fin=sk.done,
                                   ts=bool(self.sysctls["tcp_timestamps"])), sk)

    def ip_queue_xmit(self, seg: Segment, sk: Any = None) -> None:
        """ip_queue_xmit(): the segment leaves for the wire (the engine drains ``outbox``)."""
        self.outbox.append(seg)
        if self.probes:
            self.emit(SegmentSent(sk, seg))
            if seg.flags & RST:
                self.emit(TcpSendReset(sk, seg))

    def tcp_push(self, sk: Sock) -> None:
        """tcp_push(): send queued data within the peer's window, then a pending FIN."""
        if sk.tcp_state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.LAST_ACK, State.CLOSING):
            return
        room = sk.snd_edge - sk.snd_nxt
        if sk.unsent and room > 0:
            n = min(sk.unsent, room)
            sk.snd_nxt += n
            self.tcp_transmit_skb(sk, ACK | DATA, n)
        if sk.fin_pending and not sk.unsent and not sk.fin_sent:
            sk.fin_sent = True
            self.tcp_transmit_skb(sk, FIN | ACK)
