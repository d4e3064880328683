"""TIME_WAIT: the small minisock that outlives a closed connection for 2MSL.

``tcp_time_wait()`` replaces the full socket by an ``inet_timewait_sock`` that keeps the
4-tuple, the reuse flags of its socket, and joins the port's bind bucket, so the port stays
occupied. Entries are small (``__slots__``) because a busy client can hold hundreds of
thousands of them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .addr import ip_addr
from .rules import fact, rule

TCP_TIMEWAIT_LEN = 60.0  # include/net/tcp.h: (60*HZ), not a sysctl
TIME_WAIT_STATE = 6
FIN_WAIT2_STATE = 5
LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_SEQ = 0xFFFFFFFF  # sequence numbers are 32-bit on the wire


def _pack_wire(snd_nxt: int, rcv_nxt: int, rcv_wnd: int, rcv_wscale: int) -> int:
    """What a TIME_WAIT entry answers with, in one int: the window scale (4 bits), tw_snd_nxt and
    tw_rcv_nxt (32 bits each, taken modulo 2^32 as the wire carries them), then tw_rcv_wnd."""
    return rcv_wscale | (snd_nxt & _SEQ) << 4 | (rcv_nxt & _SEQ) << 36 | rcv_wnd << 68


def _unpack_wire(w: int) -> tuple[int, int, int, int]:
    return (w >> 4) & _SEQ, (w >> 36) & _SEQ, w >> 68, w & 0xF


def _bind_field(i: int) -> property:
    """One bind-time field of a TIME_WAIT entry, kept in the tuple it shares with alike entries;
    setting it moves the entry to the tuple with the new value."""

    def get(self: TimeWaitSock) -> Any:
        return self.bind[i]

    def put(self: TimeWaitSock, value: Any) -> None:
        b = self.bind[:i] + (value,) + self.bind[i + 1:]
        self.bind = TimeWaitSock._binds.setdefault(b, b)

    return property(get, put)


class TimeWaitSock:
    """``inet_timewait_sock``: what is left of a connection after the active close.

    A busy client holds hundreds of thousands of these, so an entry keeps only what differs from
    one connection to the next: its 4-tuple (the very tuple that keys the connection table), its
    substate, entry time, expiry, timestamp stamp, timer generation and the numbers it answers
    with (one packed int). What the socket was bound with (family, addresses, reuse flags, owner,
    SOCK_CONNECT_BIND) and whether it used timestamps is one tuple shared by every entry left by
    alike sockets, read through properties of the same names.
    """

    # eight slots: 96 bytes an entry with CPython's 16-byte allocation classes (nine would take 112)
    __slots__ = ("key", "bind", "substate", "entry", "expires", "ts_stamp", "gen", "_wire")
    is_tw = True
    tcp_state = TIME_WAIT_STATE
    _binds: dict[tuple, tuple] = {}  # the shared bind-time tuples

    def __init__(self, sk: Any, substate: int, now: float, expires: float, ts: bool, key: tuple | None = None):
        bind = (sk.family, sk.addr6, sk.saddr4, sk.ipv6only, sk.reuse,  # tw_reuse = sk->sk_reuse (inet_twsk_alloc)
                sk.reuseport, sk.uid, sk.connect_bind, bool(ts))
        self.bind = TimeWaitSock._binds.setdefault(bind, bind)
        self.key = key if key is not None else (sk.laddr, sk.lport, sk.raddr, sk.rport)
        self.substate = substate
        self.entry = now  # tw_entry_stamp
        self.expires = expires
        self.ts_stamp = now  # tw_ts_recent_stamp: when its last timestamped segment arrived
        self.gen = 0
        self._wire = 0  # tw_snd_nxt, tw_rcv_nxt, tw_rcv_wnd, tw_rcv_wscale, packed (see ``wire``)

    family = _bind_field(0)
    addr6 = _bind_field(1)
    saddr4 = _bind_field(2)
    ipv6only = _bind_field(3)
    reuse = _bind_field(4)
    reuseport = _bind_field(5)
    uid = _bind_field(6)
    connect_bind = _bind_field(7)
    ts_recent = _bind_field(8)  # tw_ts_recent_stamp != 0: the connection used timestamps
    laddr = property(lambda self: self.key[0])
    lport = property(lambda self: self.key[1])
    raddr = property(lambda self: self.key[2])
    rport = property(lambda self: self.key[3])

    @property
    def wire(self) -> tuple[int, int, int, int]:
        """(tw_snd_nxt, tw_rcv_nxt, tw_rcv_wnd, tw_rcv_wscale): what the entry answers a segment
        with (tcp_v4_timewait_ack()); the sequence numbers modulo 2^32. Kept as one int: a tuple
        of four ints costs about 180 bytes per entry, the int about 48."""
        return _unpack_wire(self._wire)

    @wire.setter
    def wire(self, value: tuple[int, int, int, int]) -> None:
        self._wire = _pack_wire(*value)

    @property
    def shown_state(self) -> str:
        return "FIN_WAIT2" if self.substate == FIN_WAIT2_STATE else "TIME_WAIT"


class TimeWaitTable:
    """``tcp_death_row``: the count of TIME_WAIT (and FIN_WAIT2) minisocks and their cap."""

    def __init__(self, max_buckets: int):
        self.max_buckets = max_buckets
        self.count = 0
        self.overflows = 0  # LINUX_MIB_TCPTIMEWAITOVERFLOW
        self.recycled = 0  # LINUX_MIB_TWRECYCLED
        self.peak = 0

    @rule("tw.max_buckets", "timewait")
    def admit(self) -> bool:
        """inet_twsk_alloc() in net/ipv4/inet_timewait_sock.c: no minisock at tcp_max_tw_buckets (TCPTimeWaitOverflow)."""
        if self.count >= self.max_buckets:
            self.overflows += 1
            fact(f"{self.count} TIME_WAIT entries already, tcp_max_tw_buckets is {self.max_buckets}: "
                 "the socket is destroyed without TIME_WAIT")
            return False
        self.count += 1
        self.peak = max(self.peak, self.count)
        return True

    def release(self) -> None:
        self.count -= 1


@rule("tw.reuse_for_connect", "timewait")
def tcp_clock_ms(clock_start: float, t: float) -> int:
    """tcp_clock_ms() in include/net/tcp.h: CLOCK_MONOTONIC in whole milliseconds (truncated)."""
    return int((clock_start + t) * 1000.0)


def tw_reusable_at(tw: TimeWaitSock, reuse_delay_ms: int, clock_start: float) -> int:
    """tcp_twsk_unique() in net/ipv4/tcp_ipv4.c: the entry may be reused once tcp_clock_ms() is
    past its ts_recent stamp (when its last segment arrived: the peer's FIN for an entry that
    waited in FIN_WAIT2) plus tcp_tw_reuse_delay."""
    return tcp_clock_ms(clock_start, tw.ts_stamp) + reuse_delay_ms


def tw_old_enough(tw: TimeWaitSock, reuse_delay_ms: int, now: float, clock_start: float,
                  late: float | None = None, stamp_late: float | None = None) -> bool | None:
    """tcp_twsk_unique() in net/ipv4/tcp_ipv4.c: is tcp_clock_ms() past the entry's stamp plus
    tcp_tw_reuse_delay? Following a real run, the model knows each clock reading only as the
    window of the real system call that made it (entered at ``now``, returned at ``late``; the
    stamp's call returned at ``stamp_late``): None when those windows straddle the whole
    millisecond the kernel compares, so that the measurement cannot tell what the kernel saw."""
    at = tw_reusable_at(tw, reuse_delay_ms, clock_start)
    point = tcp_clock_ms(clock_start, now) > at
    if late is None and stamp_late is None:
        return point
    least = tcp_clock_ms(clock_start, now) > tcp_clock_ms(clock_start, stamp_late or tw.ts_stamp) + reuse_delay_ms
    most = tcp_clock_ms(clock_start, late or now) > at
    return least if least == most else None


def twsk_unique(tw: TimeWaitSock, explicitly_bound: bool, tw_reuse: int, reuse_delay_ms: int,
                now: float, clock_start: float = 0.0, old_enough: bool | None = None) -> bool:
    """tcp_twsk_unique() in net/ipv4/tcp_ipv4.c: may connect() take over this TIME_WAIT 4-tuple?
    ``old_enough``, when given, is the age test already decided by the caller (see tw_old_enough)."""
    reuse = tw_reuse
    if tw.substate == FIN_WAIT2_STATE:
        reuse = 0
    if reuse == 2:
        loop = False
        for a in (tw.laddr, tw.raddr):
            ip = ip_addr(a)
            if isinstance(ip, ipaddress.IPv6Address):
                ip = ip.ipv4_mapped or ip
                loop = loop or ip.is_loopback
            else:
                loop = loop or ip in LOOPBACK_V4
        if not loop:
            reuse = 0
    if not tw.ts_recent:
        fact("the TIME_WAIT entry saw no timestamps (tcp_timestamps=0): never recycled")
        return False
    if explicitly_bound:
        fact("the socket was bound explicitly: a TIME_WAIT 4-tuple with timestamps is recycled at once")
        return True
    now_ms = tcp_clock_ms(clock_start, now)
    age_ms = now_ms - tcp_clock_ms(clock_start, tw.ts_stamp)
    told = old_enough is not None
    if old_enough is None:
        old_enough = now_ms > tw_reusable_at(tw, reuse_delay_ms, clock_start)
    if reuse and old_enough:
        fact(f"tcp_tw_reuse={tw_reuse} and the entry is {age_ms:.0f} ms old "
             f"({'old enough by the real clock' if told else '> tcp_tw_reuse_delay'} {reuse_delay_ms} ms): recycled")
        return True
    if reuse:
        fact(f"tcp_tw_reuse={tw_reuse} but the entry is only {age_ms:.0f} ms old "
             f"({'too young by the real clock for' if told else 'needs >'} {reuse_delay_ms} ms)")
    else:
        fact(f"tcp_tw_reuse={tw_reuse} does not allow reuse here")
    return False
