"""net/ipv4/tcp_input.c: segment processing by state, connection requests."""

from __future__ import annotations

from . import buffers
from .rules import fact
from .skbuff import ACK, DATA, FIN, RST, SYN, Segment
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, Sock
from .tcp_states import STATES, State, has_transition
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
                sk.rcv_q += seg.length
                sk.rcv_nxt += seg.length
                sk.rcv_ratio = buffers.scaling_ratio(seg.length, sk.rcv_ratio)
                self.sk_mem_charge(seg.length)
                self.tcp_event_data_recv(sk, seg.length)
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
