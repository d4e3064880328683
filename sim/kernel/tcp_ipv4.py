"""net/ipv4/tcp_ipv4.c: the receive entry point and resets for segments without a socket."""

from __future__ import annotations

from .skbuff import ACK, RST, SYN, Segment
from .timewait import TimeWaitSock
from .tracepoints import SegmentDelivered


class TcpIpv4:
    """Kernel functions of net/ipv4/tcp_ipv4.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_v4_rcv(self, seg: Segment) -> None:
        """tcp_v4_rcv(): demultiplex an arriving segment (ehash, then listeners), else answer RST."""
        key = (seg.dst[0], seg.dst[1], seg.src[0], seg.src[1])
        sk = self.ehash.get(key)
        if self.probes:
            self.emit(SegmentDelivered(seg, sk))
        if isinstance(sk, TimeWaitSock):
            self.tcp_timewait_state_process(sk, seg)
            return
        if sk is not None:
            self.tcp_rcv_state_process(sk, seg)
            self.woken.add(sk)
            return
        if seg.flags & SYN and not seg.flags & ACK:
            lsk = self.inet_lookup_listener(seg.dst[0], seg.dst[1], seg)
            if lsk is not None:
                self.tcp_conn_request(lsk, seg)
                return
        if not seg.flags & RST:
            self.tcp_v4_send_reset(seg)

    def tcp_v4_send_reset(self, seg: Segment) -> None:
        """tcp_v4_send_reset(): no socket for this segment -> RST."""
        self.ip_queue_xmit(Segment(seg.dst, seg.src, RST | ACK))
