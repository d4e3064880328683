"""net/ipv4/tcp_ipv4.c: the receive entry point and resets for segments without a socket."""

from __future__ import annotations

from .skbuff import ACK, DATA, FIN, RST, SYN, Segment
from .timewait import TimeWaitSock
from .tracepoints import SegmentDelivered


class TcpIpv4:
    """Kernel functions of net/ipv4/tcp_ipv4.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_v4_rcv(self, seg: Segment) -> None:
        """tcp_v4_rcv(): demultiplex an arriving segment (ehash, then listeners), else answer RST."""
        self.rx_seg = seg
        try:
            self.tcp_v4_do_rcv(seg)
        finally:
            self.rx_seg = None

    def tcp_v4_do_rcv(self, seg: Segment) -> None:
        key = (seg.dst[0], seg.dst[1], seg.src[0], seg.src[1])
        sk = self.ehash.get(key)
        if sk is not None and not isinstance(sk, TimeWaitSock):
            self.tcp_rcv_window(sk, seg)
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

    def tcp_rcv_window(self, sk, seg: Segment) -> None:
        """tcp_ack_update_window() / tcp_rcv_synsent_state_process(): the peer's window field
        (unscaled on a SYN, where its window scale arrives) feeds tp->max_window."""
        if seg.flags & SYN:
            sk.peer_isn = seg.seq
            sk.snd_wscale = (seg.opts or {}).get("wscale", 0)
            win = seg.win
        else:
            win = seg.win << sk.snd_wscale
        sk.peer_max_window = max(sk.peer_max_window, win)

    def tcp_v4_send_reset(self, seg: Segment) -> None:
        """tcp_v4_send_reset() in net/ipv4/tcp_ipv4.c: an RST built from the arriving segment
        alone: it acknowledges nothing and takes the segment's acknowledgement as its sequence
        number when the segment has ACK; otherwise it has sequence 0 and acknowledges the
        segment (SYN and FIN counted); window 0, no options."""
        if seg.flags & ACK:
            rst = Segment(seg.dst, seg.src, RST, seq=seg.ack_seq)
        else:
            rst = Segment(seg.dst, seg.src, RST | ACK, seq=0,
                          ack_seq=(seg.seq + (seg.length if seg.flags & DATA else 0)
                                   + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)) & 0xFFFFFFFF)
        self.ip_queue_xmit(rst)
