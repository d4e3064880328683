"""net/ipv4/tcp_output.c: segment transmission."""

from __future__ import annotations

from typing import Any

from . import buffers
from .skbuff import ACK, DATA, FIN, RST, SYN, Segment
from .sockets import Sock
from .tcp_states import State
from .tracepoints import SegmentSent, TcpSendReset


from .fib import LO_MTU


def tcp_advmss(sk: Sock, mtu: int = LO_MTU) -> int:
    """The MSS this side offers: ipv4_default_advmss() (net/ipv4/route.c): the route's MTU less
    40 bytes of headers, at most IPV4_MAX_PMTU (65535) - 40 = 65495 on lo, 1460 on a veth link;
    IPv6: ip6_default_advmss() (net/ipv6/route.c): the MTU less 60 bytes = 65476 on lo."""
    if sk.raddr is not None and ":" in sk.raddr and not sk.blackhole:  # (ipv6_mapped: IPv4's)
        return mtu - 60
    return min(mtu, 65535) - 40


class TcpOutput:
    """Kernel functions of net/ipv4/tcp_output.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_transmit_skb(self, sk: Sock, flags: int, length: int = 0, push: bool = False) -> None:
        """tcp_transmit_skb(): build a segment of this connection: its header (sequence numbers,
        window from tcp_select_window(), options from tcp_syn_options()/tcp_established_options())."""
        if sk.raddr is None:
            return
        if sk.blackhole:
            self.tcp_transmit_mapped(sk, flags)
            return
        if flags & RST and self.rx_seg is not None and self.rx_seg.dst == (sk.laddr, sk.lport):
            # an RST decided while processing an arriving segment answers that segment
            # (tcp_v4_do_rcv() -> reset: tcp_v4_send_reset()), not from the socket's state
            self.tcp_v4_send_reset(self.rx_seg)
            return
        if flags & RST:
            flags |= ACK  # tcp_send_active_reset(): TCPHDR_ACK | TCPHDR_RST at tcp_acceptable_seq()
        free = max(0, buffers.receive_window(sk.rcvbuf, sk.rcv_ratio) - sk.rcv_q)
        seg = Segment((sk.laddr, sk.lport), (sk.raddr, sk.rport), flags, length, sk.rcv_nxt, free,
                      acks_fin=sk.done, ts=bool(self.sysctls["tcp_timestamps"]), push=push)
        self.tcp_options_write(sk, seg)
        self.ip_queue_xmit(seg, sk)

    def secure_tcp_seq(self) -> int:
        """secure_tcp_seq() (net/core/secure_seq.c): a new connection's initial sequence number.
        Linux hashes the 4-tuple with a secret and a clock; the model counts, so that every
        connection attempt starts a sequence space of its own (the wire shows numbers relative
        to it)."""
        self.isn_next = (self.isn_next + 0x01000193) & 0xFFFFFFFF
        return self.isn_next

    def tcp_send_delayed_ack(self, sk: Sock) -> None:
        """tcp_send_delayed_ack(): the ACK waits for the delayed-ACK timer, or for a segment of
        ours to carry it. A FIN received in ESTABLISHED is acknowledged this way: tcp_fin() puts
        the socket in pingpong mode, which is not quick-ACK mode (__tcp_ack_snd_check())."""
        self.delack[sk.id] = sk

    def tcp_transmit_mapped(self, sk: Sock, flags: int) -> None:
        """ipv6_mapped's queue_xmit (ip_queue_xmit) for a native-IPv6 connection: the segment
        leaves as IPv4 from inet_saddr to inet_daddr -- the addresses of the socket's earlier
        v4-mapped connect -- with the new ports; an answer cannot find the socket."""
        if sk.v4_addrs is None:
            return
        seg = Segment((sk.v4_addrs[0], sk.lport), (sk.v4_addrs[1], sk.rport), flags,
                      ts=bool(self.sysctls["tcp_timestamps"]))
        self.tcp_options_write(sk, seg)
        self.ip_queue_xmit(seg, sk)

    def tcp_options_write(self, sk: Sock, seg: Segment) -> None:
        """The header fields of ``seg``: sequence numbers relative to each side's initial sequence
        number (SYN and FIN take one each), the window field and the options."""
        if sk.isn is None:
            sk.isn = self.secure_tcp_seq()
        if seg.flags & SYN:
            seg.seq = sk.isn
            mss = tcp_advmss(sk, self.fib.mtu(sk.raddr))
            ts = bool(self.sysctls["tcp_timestamps"]) and (not seg.flags & ACK or sk.used_ts)
            # tcp_openreq_init_rwin(): the SYN-ACK's window leaves room for the timestamp option
            if not (seg.flags & ACK and not sk.is_request and sk.rcv_wnd):
                # tcp_connect_init() / tcp_openreq_init_rwin(); a simultaneous open's SYN-ACK
                # repeats the window of the socket's SYN (tcp_rcv_synsent_state_process())
                # a TIME_WAIT's ts_recent inherited by connect() counts like the SYN-ACK's
                # timestamps (tcp_connect_init(): advmss less the timestamp option)
                rcv_wnd, wscale = self.tcp_select_initial_window(
                    sk, mss - (12 if ts and (seg.flags & ACK or sk.ts_recent) else 0))
                sk.rcv_wnd, sk.rcv_wup, sk.rcv_wscale, sk.rcv_ssthresh = rcv_wnd, 1, wscale, rcv_wnd
            wscale = sk.rcv_wscale
            seg.win = min(sk.rcv_wnd, 65535)  # a SYN's window is never scaled (RFC 7323 §2.2)
            seg.opts = {"mss": mss, "sack_ok": True, "wscale": wscale}
            if ts:
                seg.opts["ts"] = True
        else:
            seg.seq = (sk.isn + 1 + sk.snd_nxt - seg.length
                       + (1 if sk.fin_sent and not seg.flags & FIN else 0)) & 0xFFFFFFFF
            seg.win = self.tcp_select_window(sk)
            seg.opts = {"ts": True} if sk.used_ts else {}
            if sk.dsack and seg.flags & ACK:
                sk.dsack = False
                if seg.flags == ACK:
                    seg.opts["sack"] = 1
        if seg.flags & ACK:
            seg.ack_seq = (sk.peer_isn + 1 + sk.rcv_nxt + (1 if sk.done else 0)) & 0xFFFFFFFF
            self.delack.pop(sk.id, None)  # tcp_event_ack_sent(): the ACK rides on this segment

    def tcp_select_initial_window(self, sk: Sock, mss: int) -> tuple[int, int]:
        """tcp_select_initial_window() in net/ipv4/tcp_output.c: the SYN's window (the receive
        space rounded down to a multiple of the MSS, at most 65535) and the window scale that lets
        the window reach max(tcp_rmem[2], rmem_max), bounded by the clamp of a locked SO_RCVBUF
        (tcp_connect_init(), tcp_openreq_init_rwin())."""
        space = buffers.receive_window(sk.rcvbuf, sk.rcv_ratio)  # tcp_full_space()
        clamp = space if sk.rcv_lock else 65535 << 14
        space = min(space, clamp)
        if space > mss:
            space -= space % mss
        rcv_wnd = min(space, 65535)
        big = max(space, self.sysctls["tcp_rmem"][2], self.sysctls["rmem_max"])
        wscale = max(0, min(14, min(big, clamp).bit_length() - 1 - 15))
        sk.window_clamp = min(clamp, 65535 << wscale)
        return rcv_wnd, wscale

    def tcp_select_window(self, sk: Sock) -> int:
        """tcp_select_window() in net/ipv4/tcp_output.c: the window field of a segment: the new
        window from __tcp_select_window() (here _tcp_select_window), never less than what is left of the window already
        offered (a window is never shrunk), scaled down by the window scale."""
        cur = max(0, sk.rcv_wup + sk.rcv_wnd - (1 + sk.rcv_nxt))
        new = self._tcp_select_window(sk)
        if new < cur:
            step = 1 << sk.rcv_wscale
            new = -(-cur // step) * step
        sk.rcv_wnd, sk.rcv_wup = new, 1 + sk.rcv_nxt
        return min(new, 65535 << sk.rcv_wscale) >> sk.rcv_wscale

    def _tcp_select_window(self, sk: Sock) -> int:
        """__tcp_select_window(): the free receive space, capped by rcv_ssthresh; zero when less
        than half the buffer is free and the free part is under an MSS or 1/16 of the buffer;
        aligned up to the scale unit, or (unscaled) kept as offered while within one MSS."""
        allowed = buffers.receive_window(sk.rcvbuf, sk.rcv_ratio)  # tcp_full_space()
        free = max(0, allowed - sk.rcv_q)  # tcp_space()
        full = min(sk.window_clamp or allowed, allowed)
        mss = min(sk.rcv_mss, full) if full > 0 else 0
        if mss <= 0:
            return 0
        if free < full >> 1:
            free -= free % (1 << sk.rcv_wscale)
            if free < allowed >> 4 or free < mss:
                return 0
        free = min(free, sk.rcv_ssthresh)
        if sk.rcv_wscale:
            step = 1 << sk.rcv_wscale
            return -(-free // step) * step
        window = sk.rcv_wnd
        if window <= free - mss or window > free:
            window = free - free % mss
        elif mss == full and free > window + (full >> 1):
            window = free
        return window

    def ip_queue_xmit(self, seg: Segment, sk: Any = None) -> None:
        """ip_queue_xmit(): the segment leaves for the wire (the engine drains ``outbox``)."""
        self.outbox.append(seg)
        if self.probes:
            self.emit(SegmentSent(sk, seg))
            if seg.flags & RST:
                self.emit(TcpSendReset(sk, seg))

    def tcp_push(self, sk: Sock) -> None:
        """tcp_push() -> tcp_write_xmit(): send queued data within the peer's window, in segments
        of at most half the largest window the peer offered (tcp_bound_to_half_wnd()); PSH on the
        last segment of a write and wherever more than half that window was written since the
        last PSH (forced_push()); a FIN queued behind unsent data rides on its last segment
        (tcp_send_fin()), else it goes alone."""
        if sk.tcp_state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.LAST_ACK, State.CLOSING):
            return
        mss = tcp_advmss(sk, self.fib.mtu(sk.raddr)) - (12 if sk.used_ts else 0)
        peer = sk.peer_max_window  # tp->max_window: the largest window field the peer sent, scaled
        goal = min(mss, peer >> 1) if peer > 536 else max(peer, 1)
        if sk.snd_wscale:
            # a scaled window: TSO/GSO packets carry several such segments each (what one
            # captured packet holds depends on tcp_tso_autosize()); the model sends what the
            # window allows as one packet
            goal = sk.unsent
        while sk.unsent and sk.snd_edge - sk.snd_nxt > 0:
            n = min(sk.unsent, sk.snd_edge - sk.snd_nxt, max(goal, 1))
            end = sk.snd_nxt + n
            push = end in sk.psh_marks or end - sk.pushed_seq > peer >> 1
            if push:
                sk.pushed_seq = end
                sk.psh_marks = {m for m in sk.psh_marks if m > end}
            fin = sk.fin_pending and not sk.fin_sent and end == sk.write_seq
            sk.snd_nxt = end
            if fin:
                sk.fin_sent = True
            self.tcp_transmit_skb(sk, ACK | DATA | (FIN if fin else 0), n, push)
        if sk.fin_pending and not sk.unsent and not sk.fin_sent:
            sk.fin_sent = True
            self.tcp_transmit_skb(sk, FIN | ACK)

    def tcp_init_buffer_space(self, sk: Sock) -> None:
        """tcp_init_buffer_space() in net/ipv4/tcp_input.c: at establishment the window clamp
        becomes the full receive space, and rcv_ssthresh stays within it."""
        full = buffers.receive_window(sk.rcvbuf, sk.rcv_ratio)
        if not sk.window_clamp or sk.window_clamp >= full:
            sk.window_clamp = full
        sk.rcv_ssthresh = min(sk.rcv_ssthresh or sk.window_clamp, sk.window_clamp)

    def tcp_event_data_recv(self, sk: Sock, length: int) -> None:
        """tcp_measure_rcv_mss() and tcp_grow_window() (net/ipv4/tcp_input.c): a received segment
        updates the receiver's MSS estimate and opens rcv_ssthresh by two of them, up to the clamp."""
        if length >= sk.rcv_mss:
            sk.rcv_mss = min(length, tcp_advmss(sk, self.fib.mtu(sk.raddr)))
        if sk.rcv_ssthresh < sk.window_clamp:
            sk.rcv_ssthresh = min(sk.rcv_ssthresh + 2 * sk.rcv_mss, sk.window_clamp)
