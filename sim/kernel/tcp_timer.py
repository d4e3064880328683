"""net/ipv4/tcp_timer.c (and tw_timer_handler() in net/ipv4/inet_timewait_sock.c): the timers."""

from __future__ import annotations

from typing import Any

from .skbuff import SYN
from .tcp_states import State
from .tracepoints import TimerArmed, TimerCancelled, TimerFired


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
        if sk.syn_tries >= retries:
            self.tcp_transition(sk, "syn_timeout")
            return
        sk.syn_tries += 1
        self.tcp_transmit_skb(sk, SYN)
        self.inet_csk_reset_xmit_timer("syn", float(2 ** sk.syn_tries), sk, gen)
