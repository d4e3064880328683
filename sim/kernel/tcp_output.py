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


GSO_MAX_SIZE = 65536  # GSO_LEGACY_MAX_SIZE: a loopback or veth device's sk_gso_max_size
MAX_TCP_HEADER = 320  # include/net/tcp.h: L1_CACHE_ALIGN(128 + MAX_HEADER) on x86_64


def tcp_bound_to_half_wnd(max_window: int, pktsize: int, ts: bool) -> int:
    """tcp_bound_to_half_wnd() in include/net/tcp.h: a packet is at most half the largest window
    the peer offered (the whole window while that is at most 536 bytes), never below 68 bytes
    less the TCP header."""
    cutoff = max_window >> 1 if max_window > 536 else max_window
    if cutoff and pktsize > cutoff:
        return max(cutoff, 68 - (32 if ts else 20))
    return pktsize


def tcp_tso_segs(mss_now: int) -> int:
    """tcp_tso_segs() -> tcp_tso_autosize() (or BBR's bbr_tso_segs()) in net/ipv4/tcp_output.c:
    the MSS a TSO packet may carry: what one GSO packet holds less the header room, at least
    two (tcp_min_tso_segs); on loopback the pacing rate never limits it."""
    return max((GSO_MAX_SIZE - 1 - MAX_TCP_HEADER) // mss_now, 2)


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
        seg = Segment((sk.laddr, sk.lport), (sk.raddr, sk.rport), flags, length, sk.rcv_nxt,
                      acks_fin=sk.done, ts=bool(self.sysctls["tcp_timestamps"]), push=push,
                      origin=sk if length else None, origin_end=sk.snd_nxt)
        self.tcp_options_write(sk, seg)
        # the window the peer learns (tcp_ack_update_window(): the field shifted by the scale
        # we announced; a SYN's field is never scaled)
        seg.wnd = seg.win if flags & SYN else seg.win << sk.rcv_wscale
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
        space = self.tcp_full_space(sk)
        clamp = space if sk.rcv_lock else 65535 << 14
        space = min(space, clamp)
        if space > mss:
            space -= space % mss
        rcv_wnd = min(space, 65535)
        big = max(space, self.sysctls["tcp_rmem"][2], self.sysctls["rmem_max"])
        wscale = max(0, min(14, min(big, clamp).bit_length() - 1 - 15))
        sk.window_clamp = min(clamp, 65535 << wscale)
        return rcv_wnd, wscale

    @staticmethod
    def tcp_rcv_nxt(sk: Sock) -> int:
        """tp->rcv_nxt on the wire's scale (the SYN is 0): the bytes received, and a received FIN."""
        return 1 + sk.rcv_nxt + (1 if sk.done else 0)

    def tcp_receive_window(self, sk: Sock) -> int:
        """tcp_receive_window() in include/net/tcp.h: what is left of the window last offered."""
        return max(0, sk.rcv_wup + sk.rcv_wnd - self.tcp_rcv_nxt(sk))

    def tcp_select_window(self, sk: Sock) -> int:
        """tcp_select_window() in net/ipv4/tcp_output.c: the window field of a segment: the new
        window from __tcp_select_window() (here _tcp_select_window), never less than what is left of the window already
        offered (a window is never shrunk), scaled down by the window scale."""
        cur = self.tcp_receive_window(sk)
        new = self._tcp_select_window(sk)
        if new < cur:
            step = 1 << sk.rcv_wscale
            new = -(-cur // step) * step
        sk.rcv_wnd, sk.rcv_wup = new, self.tcp_rcv_nxt(sk)
        return min(new, 65535 << sk.rcv_wscale) >> sk.rcv_wscale

    def tcp_space(self, sk: Sock) -> int:
        """tcp_space() in include/net/tcp.h: the window the free part of the receive buffer holds
        (sk_rcvbuf less the truesize of the queued and backlogged skbs, at the learnt
        scaling_ratio)."""
        free = sk.rcvbuf - sk.backlog_len - self.sk_rmem_alloc(sk)
        return buffers.tcp_win_from_space(free, sk.scaling_ratio)

    def tcp_full_space(self, sk: Sock) -> int:
        """tcp_full_space() in include/net/tcp.h: the window the whole receive buffer holds."""
        return buffers.tcp_win_from_space(sk.rcvbuf, sk.scaling_ratio)

    def _tcp_select_window(self, sk: Sock) -> int:
        """__tcp_select_window(): the free receive space, capped by rcv_ssthresh; zero when less
        than half the buffer is free and the free part is under an MSS or 1/16 of the buffer;
        aligned up to the scale unit, or (unscaled) kept as offered while within one MSS."""
        allowed = self.tcp_full_space(sk)
        free = self.tcp_space(sk)
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

    def tcp_push(self, sk: Sock, sendmsg: bool = False) -> None:
        """tcp_push() -> tcp_write_xmit(): send queued data within the peer's window. A packet
        goes only if the head skb (at most one MSS of it) fits in the window
        (tcp_snd_wnd_test(): no segment smaller than that is sent into a nearly closed window);
        inside tcp_sendmsg() each skb leaves as it fills (tcp_push_one(), forced_push()), so a
        packet is one skb of the size goal; later pushes send up to what the window, the
        connection's MSS and the TSO budget allow (tcp_grow_skb(), tcp_tso_segs()). PSH on the
        last segment of a write and wherever more than half the peer's largest window was
        written since the last PSH (forced_push()); a FIN queued behind unsent data rides on
        its last segment (tcp_send_fin()), else it goes alone."""
        if sk.tcp_state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.LAST_ACK, State.CLOSING):
            return
        peer = sk.peer_max_window  # tp->max_window: the largest window field the peer sent, scaled
        mss_now = self.tcp_current_mss(sk)
        limit = self.tcp_xmit_size_goal(sk, mss_now) if sendmsg else mss_now * tcp_tso_segs(mss_now)
        while sk.unsent:
            room = sk.snd_edge - sk.snd_nxt
            if min(sk.unsent, mss_now) > room:  # tcp_snd_wnd_test()
                break
            n = min(sk.unsent, room, limit)
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

    def tcp_current_mss(self, sk: Sock) -> int:
        """tcp_current_mss() -> tp->mss_cache, set by tcp_sync_mss() when the connection is set
        up: the path MSS less the timestamp option, bounded to half the largest window the peer
        had offered then (tcp_bound_to_half_wnd()); later, larger windows do not change it."""
        if not sk.mss_cache:
            mss = tcp_advmss(sk, self.fib.mtu(sk.raddr)) - (12 if sk.used_ts else 0)
            sk.mss_cache = tcp_bound_to_half_wnd(sk.peer_max_window, mss, sk.used_ts)
        return sk.mss_cache

    def tcp_xmit_size_goal(self, sk: Sock, mss_now: int) -> int:
        """tcp_xmit_size_goal() in net/ipv4/tcp.c: the size tcp_sendmsg() fills an skb to: whole
        MSS within half the peer's largest window and the device's GSO limit."""
        goal = tcp_bound_to_half_wnd(sk.peer_max_window, GSO_MAX_SIZE, sk.used_ts)
        return max(goal // mss_now * mss_now, mss_now)

    def tcp_init_buffer_space(self, sk: Sock) -> None:
        """tcp_init_buffer_space() in net/ipv4/tcp_input.c: at establishment the window clamp
        becomes the full receive space, and rcv_ssthresh stays within it."""
        full = self.tcp_full_space(sk)
        if not sk.window_clamp or sk.window_clamp >= full:
            sk.window_clamp = full
        sk.rcv_ssthresh = min(sk.rcv_ssthresh or sk.window_clamp, sk.window_clamp)
