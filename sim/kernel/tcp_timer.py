"""net/ipv4/tcp_timer.c (and tw_timer_handler() in net/ipv4/inet_timewait_sock.c): the timers."""

from __future__ import annotations

from typing import Any

from .skbuff import ACK, SYN
from .tcp_states import State
from .tracepoints import TimerArmed, TimerCancelled, TimerFired


TCP_RTO_MAX = 120.0  # include/net/tcp.h
SYN_TIMER_SLACK = 0.05  # the timer wheel may fire a timer this much before its nominal time


def tcp_model_timeout(boundary: int, rto_base: float = 1.0) -> float:
    """tcp_model_timeout() (net/ipv4/tcp_timer.c): how long ``boundary`` retransmissions take
    when the timeout doubles from ``rto_base`` up to TCP_RTO_MAX; retransmits_timed_out()
    gives up once that much time has passed since the first transmission."""
    thresh = int(TCP_RTO_MAX / rto_base).bit_length() - 1  # ilog2(TCP_RTO_MAX / rto_base)
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * TCP_RTO_MAX


class TcpTimer:
    """Kernel functions of net/ipv4/tcp_timer.c (a part of :class:`~.stack.Kernel`)."""

    def inet_csk_reset_xmit_timer(self, kind: str, delay: float, obj: Any, gen: int) -> None:
        """inet_csk_reset_xmit_timer() / inet_twsk_schedule(): ask the engine for a timer."""
        self.timer_requests.append((kind, delay, obj, gen))
        if self.probes:
            self.emit(TimerArmed(kind, obj, delay, gen))

    def inet_csk_clear_xmit_timer(self, kind: str, obj: Any) -> None:
        """inet_csk_clear_xmit_timer() / inet_twsk_deschedule(): a pending timer of ``obj`` no longer
        fires (its generation moves on, so the engine's entry is skipped)."""
        if kind == "tw":
            obj.gen += 1
        else:
            obj.syn_gen += 1
        if self.probes:
            self.emit(TimerCancelled(kind, obj))

    def tcp_delack_timer_handler(self) -> bool:
        """tcp_delack_timer_handler(): a delayed ACK still pending goes out (its timeout -- ato,
        40 ms to 200 ms, or the next tick while nothing was received -- is shorter than the time
        between two steps of a scenario)."""
        pending, self.delack = list(self.delack.values()), {}
        sent = False
        for sk in pending:
            if sk.raddr is not None and sk.tcp_state not in (State.CLOSE, State.LISTEN, State.SYN_SENT):
                self.tcp_transmit_skb(sk, ACK)
                sent = True
        return sent

    def tw_timer_handler(self, tw: Any, gen: int) -> None:
        """tw_timer_handler(): the TIME_WAIT (or orphaned FIN_WAIT2) minisock's time is up."""
        live = tw.gen == gen and self.ehash.get((tw.laddr, tw.lport, tw.raddr, tw.rport)) is tw
        if self.probes:
            self.emit(TimerFired("tw", tw, gen, live))
        if not live:
            return
        self.inet_twsk_kill(tw, "timer")

    def tcp_retransmit_syn(self, sk: Any, gen: int) -> None:
        """tcp_retransmit_timer() for a SYN_SENT socket: resend the SYN with exponential backoff,
        give up after TCP_SYNCNT / tcp_syn_retries retransmissions (tcp_write_timeout())."""
        live = sk.syn_gen == gen and sk.tcp_state == State.SYN_SENT
        if self.probes:
            self.emit(TimerFired("syn", sk, gen, live))
        if not live:
            return
        retries = sk.syn_retries or self.sysctls["tcp_syn_retries"]
        if sk.syn_tries and self.now - sk.syn_start >= tcp_model_timeout(retries) - SYN_TIMER_SLACK:
            self.tcp_transition(sk, "syn_timeout")
            return
        sk.syn_tries += 1
        self.tcp_transmit_skb(sk, SYN)
        # tcp_syn_linear_timeouts (4): the first retransmissions keep the initial 1 s timeout,
        # then it doubles (tcp_retransmit_timer(), up to TCP_RTO_MAX)
        lin = self.sysctls.get("tcp_syn_linear_timeouts", 4)
        delay = 1.0 if sk.syn_tries <= lin else min(2.0 ** (sk.syn_tries - lin), TCP_RTO_MAX)
        self.inet_csk_reset_xmit_timer("syn", delay, sk, gen)
