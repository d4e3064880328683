"""A load step's connection lifecycle on loopback, taken in one call (the engine's fast path).

On ``lo`` a whole lifecycle -- socket(), connect() (SYN, SYN-ACK, ACK), accept(), close() by the
client (FIN), the server's EOF and close() (FIN-ACK), the client's last ACK -- runs within one
instant (``loopback_xmit()`` hands every segment to the receiver at once), and when nothing else
is going on it leaves exactly one lasting trace: a TIME_WAIT entry on the port that
__inet_hash_connect() (net/ipv4/inet_hashtables.c) chose, and counters moved. Everything else --
two file descriptors, three sockets, six segments -- is made and freed within that instant.

The general path computes that outcome through every call, segment and rule. This part of the
kernel takes it in one call, :meth:`LoopbackLifecycle.tcp_loopback_lifecycle`, from a
:class:`LifecycleShape` *learnt from the general path of the same load step*: what depends on
the connection (the port, through the real port search and its random step; the initial
sequence numbers, through secure_tcp_seq(); the time) is computed anew, and what does not (the
TIME_WAIT entry's bind-time fields and its wire numbers relative to the initial sequence numbers,
the counters' increments, the timers armed) is the shape's. A shape is used only once two
consecutive lifecycles through the general path gave the same one, and only while the kernel is
in the state the shape was taken in (the same free file descriptors, open-file count, listener
with an empty accept queue, no delayed ACK pending, room for a TIME_WAIT entry); one shape per
outcome of the port search's check of the 4-tuple (a free one, or a TIME_WAIT entry recycled by
tcp_twsk_unique()). The engine's differential test (tests/test_engine_fast.py) runs random load
steps both ways and requires identical traces, tables and counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SysError
from .rules import activate
from .sockets import Sock
from .tcp_states import State
from .timers import wheel_expiry
from .timewait import TimeWaitSock, twsk_unique

_ISN_MASK = 0xFFFFFFFF


class _SynTimerGone:
    """What the SYN retransmission timer of a finished connect() finds when it fires: a socket
    whose timer generation moved on when the SYN-ACK arrived (inet_csk_clear_xmit_timer()), so
    the timer is a no-op, as the general path's entry for the freed socket is."""

    __slots__ = ("syn_gen", "__weakref__")  # (the engine may queue it weakly, as a socket)
    tcp_state = int(State.CLOSE)  # the freed socket's (not read: the generation differs)

    def __init__(self, syn_gen: int):
        self.syn_gen = syn_gen


class _BindFields:
    """The bind-time fields a TIME_WAIT entry copies from its socket (inet_twsk_alloc())."""

    __slots__ = ("family", "addr6", "saddr4", "ipv6only", "reuse", "reuseport", "uid", "connect_bind",
                 "port_range")

    def __init__(self, sk: Any):
        for a in self.__slots__[:-1]:
            setattr(self, a, getattr(sk, a))
        self.port_range = 0  # a fresh socket: no IP_LOCAL_PORT_RANGE


@dataclass(frozen=True)
class LifecycleShape:
    """What a load step's lifecycle does that does not depend on the connection."""

    where: tuple  # ((client's, server's lowest free fd), open files, listener, daddr, dport, saddr)
    recycled: bool  # the chosen 4-tuple held a TIME_WAIT entry that connect() took over
    bind: _BindFields | None  # compared by the tuple below
    bind_key: tuple
    substate: int
    ts_recent: bool
    timeo: float
    wire: tuple[int, int, int, int]  # tw_snd_nxt - client ISN, tw_rcv_nxt - server ISN, window, scale
    syn_timer: tuple[float, int, int, int]  # delay, generation armed, generation and state at the end
    counters: tuple  # (socket ids, ehash removals, bind-table removals, TIME_WAIT count, recycled)
    mib: tuple  # (name, increment) sorted
    engine: tuple = ()  # the engine's: segments delivered, wire segments not recorded, the wire's shape

    def same(self, other: LifecycleShape) -> bool:
        return (self.where, self.recycled, self.bind_key, self.substate, self.ts_recent, self.timeo, self.wire,
                self.syn_timer, self.counters, self.mib, self.engine) == (
                other.where, other.recycled, other.bind_key, other.substate, other.ts_recent, other.timeo,
                other.wire, other.syn_timer, other.counters, other.mib, other.engine)


class LoopbackLifecycle:
    """The loopback lifecycle of a load step in one call (a part of :class:`~.stack.Kernel`)."""

    lifecycles_in_one_call = 0  # lifecycles taken by tcp_loopback_lifecycle() (the engine's statistics)

    def lifecycle_snapshot(self, client: str, server: str) -> dict[str, Any]:
        """The counters a lifecycle moves, before it (taken by the engine around a general one)."""
        return {"ids": Sock._ids, "isn": self.isn_next, "ehash_frees": self.ehash_frees,
                "bhash_frees": self.bhash.frees, "tw": (self.tw.count, self.tw.recycled), "mib": dict(self.mib),
                "pool": (self.pool.bytes, self.pool.peak), "socks": len(self.socks),
                "fds": (self._lowest_fd(client), self._lowest_fd(server)), "files": self.files.nr_files,
                "fd_sets": (frozenset(self.procs[client].files.fds), frozenset(self.procs[server].files.fds))}

    def _lowest_fd(self, proc: str) -> int:
        fds = self.procs[proc].files.fds
        fd = 0
        while fd in fds:
            fd += 1
        return fd

    def lifecycle_sock(self, proc: str, fd: int) -> Any:
        """The socket behind ``proc``'s ``fd`` (the engine names the lifecycle's two sockets)."""
        f = self.procs[proc].files.fds.get(fd)
        return f.sock if f is not None else None

    def lifecycle_shape(self, before: dict[str, Any], client: str, server: str, csk: Any, ssk: Any, lsk: Any,
                        timers: tuple[tuple, tuple]) -> LifecycleShape | None:
        """The shape of the lifecycle just made through the general path (``csk`` the client's
        socket, ``ssk`` the accepted one, ``lsk`` the listener, ``timers`` the last two timer entries the engine queued,
        as (delay, kind, object, generation)), or None when it was not a plain one: it must have
        left one new TIME_WAIT entry (the last one hashed) for the client's 4-tuple with its
        timer, the client's SYN timer as the only other one, no socket, file or buffer byte, an
        empty accept queue, no delayed ACK."""
        key = (csk.laddr, csk.lport, csk.raddr, csk.rport)
        tw = self.ehash.get(key)
        step = 0x01000193  # secure_tcp_seq()'s increment
        isn0 = before["isn"]
        if (tw is None or tw.__class__ is not TimeWaitSock or next(reversed(self.ehash)) != key
                or lsk.accept_q or lsk.tcp_state != State.LISTEN or self.delack
                or len(self.socks) != before["socks"] or (self.pool.bytes, self.pool.peak) != before["pool"]
                or self.files.nr_files != before["files"]
                or (frozenset(self.procs[client].files.fds), frozenset(self.procs[server].files.fds)) != before["fd_sets"]
                or csk.isn != (isn0 + step) & _ISN_MASK or ssk.isn != (isn0 + 2 * step) & _ISN_MASK
                or self.isn_next != (isn0 + 2 * step) & _ISN_MASK
                or tw.entry != self.now or tw.ts_stamp != self.now or tw.gen != 0
                or tw.substate != State.TIME_WAIT
                or tw.expires != wheel_expiry(self.now, self.TIME_WAIT_LEN)):
            return None
        (syn_delay, syn_kind, syn_obj, syn_gen), (tw_delay, tw_kind, tw_obj, tw_gen) = timers
        if ((syn_kind, syn_obj, tw_kind, tw_obj, tw_gen, tw_delay) != ("syn", csk, "tw", tw, 0, self.TIME_WAIT_LEN)
                or csk.syn_gen == syn_gen):
            return None  # the SYN timer must fire as a no-op (tcp_retransmit_syn())
        count0, recycled0 = before["tw"]
        recycled = self.tw.recycled - recycled0
        if recycled not in (0, 1):
            return None
        mib = tuple(sorted((m, v - before["mib"].get(m, 0)) for m, v in self.mib.items()
                           if v != before["mib"].get(m, 0)))
        bind = _BindFields(tw)
        return LifecycleShape(
            where=(before["fds"], before["files"], lsk, csk.raddr, csk.rport, csk.laddr),
            recycled=bool(recycled), bind=bind, bind_key=tuple(getattr(bind, a) for a in _BindFields.__slots__),
            substate=tw.substate, ts_recent=tw.ts_recent, timeo=self.TIME_WAIT_LEN,
            wire=(tw.wire[0] - csk.isn, tw.wire[1] - ssk.isn, tw.wire[2], tw.wire[3]),
            syn_timer=(syn_delay, syn_gen, csk.syn_gen, csk.tcp_state),
            counters=(Sock._ids - before["ids"], self.ehash_frees - before["ehash_frees"],
                      self.bhash.frees - before["bhash_frees"], self.tw.count - count0, recycled),
            mib=mib)

    def tcp_loopback_lifecycle(self, shapes: dict[bool, LifecycleShape], client: str, server: str,
                               now: float) -> tuple[LifecycleShape, tuple, int, int] | None:
        """A load step's whole loopback lifecycle in one call, from the shapes learnt for it (see
        the module's docstring): the port search of __inet_hash_connect() and its random step, the
        takeover of a TIME_WAIT entry by tcp_twsk_unique(), two secure_tcp_seq() numbers, the
        TIME_WAIT entry of tcp_time_wait() with its timer, the SYN timer's entry, the counters.
        Returns the shape taken, the connection's 4-tuple and the client's and the server's
        initial sequence numbers, or None (nothing changed) when the kernel is not in the state the
        shape was learnt in or the search's outcome has no shape yet: the engine then makes the
        calls."""
        any_shape = next(iter(shapes.values()))
        fds, files, lsk, daddr, dport, saddr = any_shape.where
        if (self.delack or lsk.accept_q or lsk.tcp_state != State.LISTEN or self.files.nr_files != files
                or self.tw.count >= self.tw.max_buckets
                or (self._lowest_fd(client), self._lowest_fd(server)) != fds):
            return None
        self.now = now
        t = self.trail
        t.clear()
        activate(t)
        try:
            port, i, index = self.inet_hash_connect_search(any_shape.bind, saddr, daddr, dport)
        except SysError:
            return None  # the calls will find the same (and remember the fruitless search)
        key = (saddr, port, daddr, dport)
        other = self.ehash.get(key)
        if other is not None:
            s = self.sysctls
            if other.__class__ is not TimeWaitSock or not twsk_unique(
                    other, False, s["tcp_tw_reuse"], s["tcp_tw_reuse_delay"], now, self.clock_start):
                return None
        shape = shapes.get(other is not None)
        if shape is None:
            return None
        return self._lifecycle_commit(shape, index, i, key, other)

    def _lifecycle_commit(self, shape: LifecycleShape, index: int, i: int, key: tuple,
                          other: Any) -> tuple[LifecycleShape, tuple, int, int]:
        ids0, frees0, bfrees0, count0, recycled0 = (Sock._ids, self.ehash_frees, self.bhash.frees,
                                                    self.tw.count, self.tw.recycled)
        self.inet_hash_connect_advance(index, i)
        if other is not None:
            self.inet_twsk_kill(other, "tw_recycle")
        delay, armed, gen_end, _state_end = shape.syn_timer
        self.timer_requests.append(("syn", delay, _SynTimerGone(gen_end), armed))
        isn_c = self.secure_tcp_seq()
        isn_s = self.secure_tcp_seq()
        now = self.now
        tw = TimeWaitSock(shape.bind, shape.substate, now, self.timer_expiry(now, shape.timeo), shape.ts_recent, key)
        a, b, wnd, wscale = shape.wire
        tw.wire = (isn_c + a, isn_s + b, wnd, wscale)
        self.ehash_put(key, tw)
        self.inet_bind_hash(key[1], tw)
        self.timer_requests.append(("tw", shape.timeo, tw, tw.gen))
        d_ids, d_frees, d_bfrees, d_count, d_recycled = shape.counters
        Sock._ids = ids0 + d_ids
        self.ehash_frees, self.bhash.frees = frees0 + d_frees, bfrees0 + d_bfrees
        self.tw.count, self.tw.recycled = count0 + d_count, recycled0 + d_recycled
        self.tw.peak = max(self.tw.peak, self.tw.count)
        mib = self.mib
        for m, n in shape.mib:
            mib[m] = mib.get(m, 0) + n
        self.lifecycles_in_one_call += 1
        return shape, key, isn_c, isn_s
