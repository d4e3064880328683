"""net/ipv4/tcp_input.c: segment processing by state, connection requests."""

from __future__ import annotations

from . import buffers
from .rules import fact
from .skbuff import ACK, DATA, FIN, LO_SKB_OVERHEAD, MAX_SKB_FRAGS, RST, SYN, RcvSkb, Segment
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, Sock
from .tcp_states import STATES, State, has_transition
from .tcp_output import tcp_advmss
from .tracepoints import InetSockSetState, RequestQueued


class TcpInput:
    """Kernel functions of net/ipv4/tcp_input.c (a part of :class:`~.stack.Kernel`)."""

    def tcp_rcv_synsent_state_process(self, sk: Sock, seg: Segment, st: State) -> None:
        """tcp_rcv_synsent_state_process(): a SYN-ACK completes an active open; a bare SYN in
        SYN_SENT is a simultaneous open; a SYN-ACK in SYN_RECV completes the simultaneous open."""
        if st == State.SYN_SENT and seg.flags & ACK:
            sk.snd_edge = seg.wnd
            sk.syn_unacked = False
            sk.used_ts = seg.ts and bool(self.sysctls["tcp_timestamps"])
            self.inet_csk_clear_xmit_timer("syn", sk)  # the SYN is answered: no retransmission
            self.tcp_transition(sk, "rcv_synack")
            if not sk.snd_lock:
                sk.sndbuf = buffers.expand_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
        elif st == State.SYN_SENT:
            sk.snd_edge = seg.wnd
            sk.used_ts = seg.ts and bool(self.sysctls["tcp_timestamps"])
            self.tcp_transition(sk, "rcv_syn")
        elif st == State.SYN_RECV and seg.flags & ACK and not sk.is_request:
            sk.snd_edge = seg.wnd
            sk.syn_unacked = False
            self.tcp_transition(sk, "rcv_synack")
            if not sk.snd_lock:
                sk.sndbuf = buffers.expand_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
            self.tcp_synrecv_shut_wr(sk)

    def tcp_rcv_state_process(self, sk: Sock, seg: Segment) -> None:
        """tcp_rcv_state_process() (with tcp_reset(), tcp_data_queue(), tcp_ack(), tcp_fin()): a segment for a hashed socket."""
        st = STATES[sk.tcp_state]
        if seg.flags & RST:
            if st in (State.CLOSE, State.LISTEN):
                return
            if sk.is_request:
                self.inet_csk_destroy_sock(sk)
                return
            self.tcp_transition(sk, "rcv_rst")
            sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
            self.tcp_write_queue_purge(sk)
            return
        if seg.flags & SYN:
            self.tcp_rcv_synsent_state_process(sk, seg, st)
            return
        if st == State.SYN_RECV and sk.is_request:
            self.tcp_check_req(sk, seg)
            return
        if st == State.SYN_RECV and seg.flags & ACK:
            self.tcp_transition(sk, "rcv_ack")
        st = STATES[sk.tcp_state]
        # data
        if seg.flags & DATA and seg.length:
            if st in (State.FIN_WAIT1, State.FIN_WAIT2) and sk.shutdown & RCV_SHUTDOWN:
                fact("data arrived after close(): the socket answers RST (tcp_rcv_state_process)")
                self._mib("TCPAbortOnData")
                self.tcp_transition(sk, "rcv_data_after_close")
                return
            if st in (State.ESTABLISHED, State.FIN_WAIT1, State.FIN_WAIT2):
                if sk is self.owned:
                    self.tcp_add_backlog(sk, seg)
                self.tcp_queue_rcv(sk, seg)
                sk.rcv_nxt += seg.length
                self.sk_mem_charge(seg.length)
                self.tcp_event_data_recv(sk, seg)
                # quick-ACK mode (tcp_event_data_recv() -> tcp_incr_quickack()): data is
                # acknowledged at once; with a FIN, once, after the FIN is taken (below)
                if not seg.flags & FIN:
                    self.tcp_transmit_skb(sk, ACK)
        # acknowledgement / window
        if seg.flags & ACK:
            acked = min(seg.ack, sk.snd_nxt) - sk.snd_una
            if acked > 0:
                sk.snd_una += acked
                self.sk_mem_uncharge(acked)
                if sk.nospace:
                    # tcp_new_space() -> tcp_sndbuf_expand(): a writer that ran out of room gets a
                    # bigger send buffer, up to tcp_wmem[2], unless SO_SNDBUF locked it
                    sk.nospace = False
                    if not sk.snd_lock and not self.pool.in_pressure:
                        sk.sndbuf = buffers.grow_sndbuf(sk.sndbuf, self.sysctls["tcp_wmem"][2])
            sk.snd_edge = max(sk.snd_edge, seg.ack + seg.wnd)
            sk.max_window = max(sk.max_window, seg.wnd)
            if seg.acks_fin and sk.fin_sent and not sk.fin_acked and not seg.flags & FIN:
                sk.fin_acked = True
                if st in (State.FIN_WAIT1, State.CLOSING, State.LAST_ACK):
                    self.tcp_transition(sk, "rcv_ack")
                    if sk.tcp_state == State.CLOSE and not sk.dead:
                        return
            self.tcp_push(sk)
        st = STATES[sk.tcp_state]
        if seg.flags & FIN and st not in (State.CLOSE,):
            if not seg.length and not sk.done:
                self.tcp_queue_fin(sk, seg)
            sk.done = True
            if st == State.FIN_WAIT1 and seg.acks_fin and sk.fin_sent:
                sk.fin_acked = True
                self.tcp_transition(sk, "rcv_finack")
            elif has_transition(st, "rcv_fin"):
                self.tcp_transition(sk, "rcv_fin")
            if seg.flags & DATA and seg.length and self.delack.pop(sk.id, None) is not None:
                self.tcp_transmit_skb(sk, ACK)  # data and FIN together: acknowledged at once

    def tcp_conn_request(self, lsk: Sock, seg: Segment) -> None:
        if self.sk_acceptq_is_full(lsk):
            self.syn_to_full_listener(lsk, seg)
            return
        req = Sock(lsk.family, "tcp", lsk.uid, lsk.sndbuf, lsk.rcvbuf, lsk.v6only_opt)
        for a in ("reuse", "reuseport", "linger", "snd_lock", "rcv_lock", "nodelay", "keepalive",
                  "linger2", "user_timeout", "rcvlowat", "port_range", "syn_retries", "user_mss",
                  "shutdown"):  # sk_clone_lock() copies the listener (but clears SOCK_BINDPORT_LOCK)
            setattr(req, a, getattr(lsk, a))
        req.is_request = True
        req.parent = lsk
        # tcp_v4_syn_recv_sock(): the child's rcv_saddr is the address the SYN was sent to
        dst = seg.dst[0]
        req.set_local(f"::ffff:{dst}" if lsk.family == 6 and ":" not in dst else dst, seg.dst[1])
        req.raddr, req.rport = seg.src
        self.tcp_set_state(req, State.SYN_RECV, "conn_request")
        if self.probes:  # the listener's own row: it stays LISTEN
            self.emit(InetSockSetState(lsk, int(State.LISTEN), int(State.LISTEN), "rcv_syn"))
            self.emit(RequestQueued(lsk, req, "request"))
        req.snd_edge = seg.wnd
        req.used_ts = seg.ts and bool(self.sysctls["tcp_timestamps"])
        self.tcp_rcv_window(req, seg)
        self.inet_ehash_insert(req)
        self.socks.add(req)
        self.tcp_transmit_skb(req, SYN | ACK)

    def syn_to_full_listener(self, lsk: Sock, seg: Segment) -> None:
        """tcp_conn_request(): a SYN to a full accept queue is dropped silently (the client retransmits)."""
        lsk.listen_overflows += 1
        self._mib("ListenOverflows")
        self._mib("ListenDrops")

    def tcp_synrecv_shut_wr(self, sk: Sock) -> None:
        """tcp_rcv_state_process(), case TCP_SYN_RECV: a connection that reaches ESTABLISHED from
        SYN_RECV with SEND_SHUTDOWN set (a listener's flag copied into its child, or a simultaneous
        open after shutdown()) sends its FIN at once. The SYN_SENT path has no such check."""
        if sk.shutdown & SEND_SHUTDOWN and sk.tcp_state == State.ESTABLISHED:
            fact("SEND_SHUTDOWN was set before the connection existed: the FIN goes out at once")
            self.tcp_transition(sk, "shutdown_wr")

    # ------------------------------------------------------------------ receive queue and window

    def tcp_queue_rcv(self, sk: Sock, seg: Segment) -> None:
        """tcp_queue_rcv() with tcp_try_coalesce() (net/ipv4/tcp_input.c) and skb_try_coalesce()
        (net/core/skbuff.c): in-order data joins the tail skb of the receive queue, charging only
        its payload, if the tail is no longer a clone of the sender's skb and has room for one
        more page fragment (MAX_SKB_FRAGS); otherwise it is queued as an skb of its own,
        charging its truesize (payload + LO_SKB_OVERHEAD)."""
        n = seg.length
        self.sk_rmem_alloc(sk)
        tail = sk.rcv_skbs[-1] if sk.rcv_skbs else None
        if tail is not None and tail.frags < MAX_SKB_FRAGS and not tail.cloned():
            tail.len += n
            tail.truesize += n
            tail.frags += 1
            sk.rmem_alloc += n
        else:
            sk.rcv_skbs.append(RcvSkb(n, n + LO_SKB_OVERHEAD, 1, seg.origin, seg.origin_end))
            sk.rmem_alloc += n + LO_SKB_OVERHEAD
        sk.rcv_q += n

    def tcp_queue_fin(self, sk: Sock, seg: Segment) -> None:
        """tcp_data_queue() -> tcp_queue_rcv() for a bare FIN: skb_try_coalesce() (net/core/
        skbuff.c) merges it into the tail skb, which costs nothing, unless the tail is still a
        clone of the sender's skb or the queue is empty; then the FIN is an skb of its own whose
        truesize (LO_SKB_OVERHEAD) stays charged until a read reaches it (tcp_recvmsg_locked(),
        found_fin_ok). Measured on Linux 6.18: the ACK of a FIN to an empty queue with a 2304-byte
        SO_RCVBUF offers 1151, the window it had offered less the FIN's sequence number
        (scenarios/regressions/fin-skb-keeps-window.yaml)."""
        self.sk_rmem_alloc(sk)
        tail = sk.rcv_skbs[-1] if sk.rcv_skbs else None
        if tail is not None and not tail.cloned():
            return
        sk.rcv_skbs.append(RcvSkb(0, LO_SKB_OVERHEAD, 1, seg.origin, seg.origin_end))
        sk.rmem_alloc += LO_SKB_OVERHEAD

    def tcp_eat_fin_skb(self, sk: Sock) -> None:
        """tcp_recvmsg_locked(), found_fin_ok: a read that reaches the FIN's own skb frees it."""
        if sk.rcv_skbs and not sk.rcv_skbs[0].len:
            sk.rmem_alloc -= sk.rcv_skbs.pop(0).truesize

    def tcp_add_backlog(self, sk: Sock, seg: Segment) -> None:
        """tcp_v4_rcv() -> tcp_add_backlog(): data for a socket whose send() or recv() holds its
        lock -- on loopback, data that call caused, such as the peer's answer to a window update
        or a self-connected socket's own -- waits in the backlog; __release_sock() processes it
        at the end of the call and clears sk_backlog.len only after the whole backlog, so until
        then tcp_space() counts that truesize twice (backlog and receive queue)."""
        sk.backlog_len += seg.length + LO_SKB_OVERHEAD

    def lock_sock(self, sk: Sock) -> None:
        """lock_sock(): a send or receive (or its retry after a wait) owns ``sk``: what it
        causes to arrive for ``sk`` waits in the backlog. Whatever another call (or the same
        call before it slept, sk_wait_data() / sk_stream_wait_memory()) had backlogged was
        processed when that one released the socket."""
        if self.owned is not None:
            self.release_sock()
        self.owned = sk

    def release_sock(self) -> None:
        """release_sock() -> __release_sock(): the backlog is drained, sk_backlog.len is zero."""
        self.owned.backlog_len = 0
        self.owned = None

    def sk_rmem_alloc(self, sk: Sock) -> int:
        """sk_rmem_alloc (include/net/sock.h): the truesize of the skbs in the receive queue; an
        empty queue holds none (a queue emptied without reading, on close or abort, frees them)."""
        if not sk.rcv_q and sk.rcv_skbs and sk.rcv_skbs[-1].len:
            sk.rcv_skbs.clear()  # (a FIN's own skb, of no payload, stays until a read reaches it)
            sk.rmem_alloc = 0
        return sk.rmem_alloc

    def tcp_rcv_queue_purge(self, sk: Sock) -> int:
        """__skb_queue_purge(&sk->sk_receive_queue) (__tcp_close(), tcp_disconnect(),
        inet_csk_destroy_sock()): every skb of the receive queue is freed, a FIN's own too, and the
        unread bytes are uncharged; returns how many there were."""
        unread = sk.rcv_q
        if unread:
            sk.rcv_q = 0
            self.sk_mem_uncharge(unread)
        sk.rcv_skbs.clear()
        sk.rmem_alloc = 0
        return unread

    def tcp_eat_recv_skb(self, sk: Sock, n: int) -> None:
        """tcp_recvmsg_locked() -> tcp_eat_recv_skb() (net/ipv4/tcp.c): ``n`` bytes read from the
        head of the queue; an skb is freed, and its truesize uncharged, once all of it is read."""
        while n and sk.rcv_skbs:
            head = sk.rcv_skbs[0]
            k = min(n, head.len)
            head.len -= k
            n -= k
            if head.len == 0:
                sk.rcv_skbs.pop(0)
                sk.rmem_alloc -= head.truesize

    def tcp_event_data_recv(self, sk: Sock, seg: Segment) -> None:
        """tcp_event_data_recv() (net/ipv4/tcp_input.c): a queued data segment updates the
        receiver's MSS estimate and scaling_ratio (tcp_measure_rcv_mss()), then, if it holds at
        least 128 bytes, opens rcv_ssthresh (tcp_grow_window())."""
        self.tcp_measure_rcv_mss(sk, seg)
        if seg.length >= 128:
            self.tcp_grow_window(sk, seg.length)

    def tcp_measure_rcv_mss(self, sk: Sock, seg: Segment) -> None:
        """tcp_measure_rcv_mss() (net/ipv4/tcp_input.c): a segment at least as long as rcv_mss
        becomes the new rcv_mss; if its length differs, the skb's payload/truesize ratio becomes
        scaling_ratio and the window clamp follows the full space at that ratio. A shorter
        segment of at least 536 bytes with its header (or 88 without PSH/FIN) sets rcv_mss when
        two of the same length arrive in a row (last_seg_size)."""
        n, lss = seg.length, sk.rcv_lss
        sk.rcv_lss = 0
        advmss = tcp_advmss(sk, self.fib.mtu(sk.raddr)) - (12 if sk.used_ts else 0)
        if n >= sk.rcv_mss:
            if n != sk.rcv_mss:
                ratio = max(1, (n << buffers.TCP_RMEM_TO_WIN_SCALE) // (n + LO_SKB_OVERHEAD))
                if ratio != sk.scaling_ratio:
                    sk.scaling_ratio = ratio
                    self.tcp_set_window_clamp_learnt(sk, self.tcp_full_space(sk))
            sk.rcv_mss = min(n, advmss)
            return
        hdr = 32 if sk.used_ts else 20  # the segment's TCP header (tcp_header_len)
        if n + hdr >= 536 + 20 or (n + hdr >= 88 + 20 and not seg.push and not seg.flags & FIN):
            sk.rcv_lss = n
            if n == lss:
                sk.rcv_mss = n

    def tcp_set_window_clamp_learnt(self, sk: Sock, val: int) -> None:
        """tcp_set_window_clamp() (net/ipv4/tcp.c) as tcp_measure_rcv_mss() calls it: a smaller
        clamp pulls rcv_ssthresh down to it (__tcp_adjust_rcv_ssthresh()); a larger one lets
        rcv_ssthresh reach the window last offered."""
        old, new = sk.window_clamp, max(buffers.SOCK_MIN_RCVBUF // 2, val)
        if new == old:
            return
        sk.window_clamp = new
        if new < old:
            sk.rcv_ssthresh = min(sk.rcv_ssthresh, new)
        else:
            sk.rcv_ssthresh = max(min(sk.rcv_wnd, new), sk.rcv_ssthresh)

    def tcp_grow_window(self, sk: Sock, n: int) -> None:
        """tcp_grow_window() (net/ipv4/tcp_input.c): rcv_ssthresh grows towards the smaller of
        the window clamp and the free space (tcp_space()), by at least two advertised MSS.
        truesize_adjust() counts only the page fragments of an skb with nothing in its head --
        on loopback, the payload itself -- so check #2 (tcp_win_from_space(truesize) <= len)
        always passes. Under memory pressure rcv_ssthresh falls to 4 MSS instead
        (tcp_adjust_rcv_ssthresh())."""
        room = min(sk.window_clamp, self.tcp_space(sk)) - sk.rcv_ssthresh
        if room <= 0:
            return
        advmss = tcp_advmss(sk, self.fib.mtu(sk.raddr)) - (12 if sk.used_ts else 0)
        if self.pool.in_pressure:
            sk.rcv_ssthresh = min(sk.rcv_ssthresh, 4 * advmss)
            return
        sk.rcv_ssthresh += min(room, max(2 * advmss, 2 * n))
