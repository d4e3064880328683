"""net/ipv4/tcp_minisocks.c (and net/ipv4/inet_timewait_sock.c): TIME_WAIT and request sockets."""

from __future__ import annotations

from . import buffers
from .rules import fact, rule
from .skbuff import ACK, DATA, FIN, RST, SYN, Segment
from .sockets import RCV_SHUTDOWN, SEND_SHUTDOWN, SS_CONNECTED, Sock
from .tcp_states import State
from .timewait import TimeWaitSock
from .tracepoints import InetTwskEntered, InetTwskKilled, RequestQueued

# (why a minisock is killed, its substate) -> the event of its transition-table row to CLOSE
_TW_EVENTS = {("timer", int(State.TIME_WAIT)): "time_wait_timeout",
              ("timer", int(State.FIN_WAIT2)): "fin_wait2_timeout"}


class TcpMinisocks:
    """Kernel functions of net/ipv4/tcp_minisocks.c (and net/ipv4/inet_timewait_sock.c) (a part of :class:`~.stack.Kernel`)."""

    @rule("tw.enter", "timewait")
    def tcp_time_wait(self, sk: Sock, substate: State, timeo: float) -> None:
        """tcp_time_wait() in net/ipv4/tcp_minisocks.c: a TIME_WAIT minisock replaces the socket for 2MSL."""
        admitted = self.tw.admit()
        key = sk.key()
        if admitted:
            tw = TimeWaitSock(sk, int(substate), self.now, self.timer_expiry(self.now, timeo), sk.used_ts, key)
            if self.followed is not None:  # a real call's window (see tw_old_enough)
                self.stamp_late[tw] = self.followed[0]
            # tcp_time_wait(): tw_snd_nxt, tw_rcv_nxt, tw_rcv_wnd = tcp_receive_window(), wscale
            tw.wire = ((sk.isn or 0) + 1 + sk.snd_nxt + (1 if sk.fin_sent else 0),
                       sk.peer_isn + 1 + sk.rcv_nxt + (1 if sk.done else 0),
                       self.tcp_receive_window(sk), sk.rcv_wscale)
            self.inet_unhash(sk)
            self.ehash_put(key, tw)
            self.inet_bind_hash(sk.lport, tw)
            self.inet_csk_reset_xmit_timer("tw", timeo, tw, tw.gen)
            if self.probes:
                self.emit(InetTwskEntered(sk, tw, int(substate), timeo))
            fact(f"{sk.laddr}:{sk.lport} -> {sk.raddr}:{sk.rport} enters "
                 f"{'TIME_WAIT' if substate == State.TIME_WAIT else 'FIN_WAIT2 (orphan)'} for {timeo:g} s")
        else:
            self._mib("TCPTimeWaitOverflow")
        # tcp_done(): the full socket goes to CLOSE (its port and hash entries are handled below)
        self.tcp_set_state(sk, State.CLOSE, "tw_hashdance", unhash=False)
        self.inet_unhash(sk)
        if sk.dead or not sk.bindport_lock:
            if sk.in_bhash:
                self.inet_put_port(sk.lport, sk)
                sk.in_bhash = False
        sk.shutdown = RCV_SHUTDOWN | SEND_SHUTDOWN
        if sk.dead:
            self.inet_csk_destroy_sock(sk)

    def inet_twsk_kill(self, tw: TimeWaitSock, why: str) -> None:
        """inet_twsk_kill(): the entry leaves ehash and the bind bucket; the port may become free.

        ``why`` is the event of the minisock's last transition-table row (TIME_WAIT or FIN_WAIT2
        to CLOSE): a timeout, an RST, a SYN, data, or "tw_recycle" (connect() takes the 4-tuple).
        """
        if self.probes:
            self.emit(InetTwskKilled(tw, why))
        self.tcp_set_state(tw, State.CLOSE, _TW_EVENTS.get((why, tw.substate), why))
        key = (tw.laddr, tw.lport, tw.raddr, tw.rport)
        if self.ehash.get(key) is tw:
            self.ehash_pop(key)
        self.inet_put_port(tw.lport, tw)
        self.inet_csk_clear_xmit_timer("tw", tw)
        self.tw.release()

    def tcp_timewait_state_process(self, tw: TimeWaitSock, seg: Segment) -> None:
        """tcp_timewait_state_process() in net/ipv4/tcp_minisocks.c."""
        if seg.flags & RST:
            self.inet_twsk_kill(tw, "rcv_rst")  # TIME_WAIT assassination (tcp_rfc1337 = 0)
            return
        if seg.flags & SYN and not seg.flags & ACK:
            self.inet_twsk_kill(tw, "rcv_syn")
            lsk = self.inet_lookup_listener(seg.dst[0], seg.dst[1], seg)
            if lsk is not None:
                self.tcp_conn_request(lsk, seg)
            else:
                self.tcp_v4_send_reset(seg)
            return
        if tw.substate == State.FIN_WAIT2:
            if seg.flags & DATA and seg.length:
                self.inet_twsk_kill(tw, "rcv_data_after_close")
                self.tcp_v4_send_reset(seg)
                return
            if seg.flags & FIN:
                self.tcp_set_state(tw, State.TIME_WAIT, "rcv_fin")
                if tw.ts_recent and seg.ts:  # tcp_timewait_state_process(): tw_ts_recent_stamp renewed
                    tw.ts_stamp = self.now
                    if self.followed is not None:
                        self.stamp_late[tw] = self.followed[0]
                self.inet_twsk_reschedule(tw)
                snd_nxt, rcv_nxt, wnd, wscale = tw.wire
                tw.wire = (snd_nxt, rcv_nxt + 1, wnd, wscale)  # tw_rcv_nxt: the FIN is acknowledged
                self.tcp_v4_timewait_ack(tw, seg)
            return
        if seg.flags & FIN:
            self.tcp_set_state(tw, State.TIME_WAIT, "rcv_fin")  # TIME_WAIT -> TIME_WAIT: the timer restarts
            self.inet_twsk_reschedule(tw)
            self.tcp_v4_timewait_ack(tw, seg)

    def tcp_v4_timewait_ack(self, tw: TimeWaitSock, seg: Segment) -> None:
        """tcp_v4_timewait_ack() in net/ipv4/tcp_ipv4.c: the minisock acknowledges from what it
        kept of the connection: tw_snd_nxt, tw_rcv_nxt, tw_rcv_wnd scaled down, timestamps."""
        snd_nxt, rcv_nxt, wnd, wscale = tw.wire
        self.ip_queue_xmit(Segment(seg.dst, seg.src, ACK, acks_fin=True, seq=snd_nxt & 0xFFFFFFFF,
                                   ack_seq=rcv_nxt & 0xFFFFFFFF,
                                   win=min(wnd, 65535 << wscale) >> wscale,
                                   opts={"ts": True} if tw.ts_recent else {}), tw)

    def inet_twsk_reschedule(self, tw: TimeWaitSock) -> None:
        """inet_twsk_reschedule(): back to a full TCP_TIMEWAIT_LEN."""
        self.inet_csk_clear_xmit_timer("tw", tw)
        tw.expires = self.timer_expiry(self.now, self.TIME_WAIT_LEN)
        self.inet_csk_reset_xmit_timer("tw", self.TIME_WAIT_LEN, tw, tw.gen)

    def tcp_check_req(self, req: Sock, seg: Segment) -> None:
        """tcp_check_req() -> tcp_v4_syn_recv_sock(): the final ACK turns a request into a queued child."""
        lsk = req.parent
        if lsk is None or lsk.tcp_state != State.LISTEN:
            self.inet_csk_destroy_sock(req)
            self.tcp_v4_send_reset(seg)
            return
        if self.sk_acceptq_is_full(lsk):
            self._mib("ListenOverflows")
            if self.sysctls["tcp_abort_on_overflow"]:
                self.inet_csk_destroy_sock(req)
                self.tcp_v4_send_reset(seg)
            return  # the request stays (shown SYN_RECV); the client believes it is connected
        req.is_request = False
        self.tcp_set_state(req, State.ESTABLISHED, "rcv_ack")
        req.snd_edge = seg.ack + seg.wnd
        req.sock_state = SS_CONNECTED
        if not req.snd_lock:
            req.sndbuf = buffers.expand_sndbuf(req.sndbuf, self.sysctls["tcp_wmem"][2])
        # __inet_inherit_port(): the child joins the listener's bind bucket
        self.inet_bind_hash(req.lport, req)
        req.in_bhash = True
        lsk.accept_q.append(req)  # inet_csk_reqsk_queue_add()
        if self.probes:
            self.emit(RequestQueued(lsk, req, "accept_queue"))
        self.woken.add(lsk)
        if seg.flags & DATA and seg.length:
            self.tcp_queue_rcv(req, seg)
            req.rcv_nxt += seg.length
            self.sk_mem_charge(seg.length)
            self.tcp_event_data_recv(req, seg)
        self.tcp_synrecv_shut_wr(req)
