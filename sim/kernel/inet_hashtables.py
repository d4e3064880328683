"""net/ipv4/inet_hashtables.c: the established hash (ehash), connect()'s port search, listener lookup."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from .addr import ip_addr
from .errors import SysError
from .ports import bind2_key
from .rules import fact, rule
from .skbuff import Segment
from .sockets import Sock
from .tcp_states import State
from .timewait import TimeWaitSock, tcp_clock_ms, tw_old_enough, tw_reusable_at, twsk_unique
from .tracepoints import PortBound, PortReleased


@functools.lru_cache(maxsize=4096)
def inet_port_offset(saddr: str, daddr: str, dport: int, secret: int) -> int:
    """secure_ipv4_port_ephemeral() (net/core/secure_seq.c): a keyed hash of the destination, where
    connect()'s port search starts (the same destination always gets the same offset)."""
    h = hashlib.blake2b(f"{saddr}|{daddr}|{dport}|{secret}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


class InetHashtables:
    """Kernel functions of net/ipv4/inet_hashtables.c (a part of :class:`~.stack.Kernel`)."""

    def inet_bind_hash(self, port: int, owner: Any) -> None:
        """inet_bind_hash(): ``owner`` (a socket or a TIME_WAIT minisock) joins the TCP bind bucket of ``port``."""
        self.bhash.add(port, owner)
        if self.probes:
            self.emit(PortBound(port, owner))

    def inet_put_port(self, port: int, owner: Any) -> None:
        """__inet_put_port(): ``owner`` leaves the TCP bind bucket of ``port``."""
        self.bhash.remove(port, owner)
        if self.probes:
            self.emit(PortReleased(port, owner))

    def _established_probe(self, saddr: str, daddr: str, dport: int, reuse_by_age: bool) -> tuple:
        """The probe of __inet_check_established() for one candidate port of a connect() port
        search, without the bookkeeping of a rule call (the chosen port is checked again as a
        rule), and ``ripe``: with reuse by age, the earliest time (ms) at which a TIME_WAIT entry
        found too young becomes reusable (-1: an entry may change without anything freed)."""
        ehash, clock = self.ehash, self.clock_start
        now_ms = tcp_clock_ms(clock, self.now)
        delay_ms = self.sysctls["tcp_tw_reuse_delay"]
        ripe = [float("inf")]

        def established_ok(port: int) -> bool:
            other = ehash.get((saddr, port, daddr, dport))
            if other is None:
                return True
            if other.__class__ is not TimeWaitSock or not reuse_by_age or not other.ts_recent:
                return False
            if other.substate == State.FIN_WAIT2:
                ripe[0] = -1.0  # may turn TIME_WAIT without anything being freed: no shortcut
                return False
            if followed:
                ripe[0] = -1.0  # the real run's outcome may decide: no shortcut
                return self.tw_old_enough_followed(other)
            at = tw_reusable_at(other, delay_ms, clock)
            if now_ms > at:
                return True
            ripe[0] = min(ripe[0], at)
            return False

        followed = self.followed is not None
        return established_ok, ripe

    def tw_old_enough_followed(self, tw: TimeWaitSock, say: bool = True) -> bool:
        """tcp_twsk_unique()'s age test while following a real run (see tw_old_enough): where the
        real calls' windows straddle the millisecond the kernel compares, the measurement cannot
        tell what the real kernel's clock read, and the followed call's outcome decides."""
        late, succeeded = self.followed
        delay_ms = self.sysctls["tcp_tw_reuse_delay"]
        verdict = tw_old_enough(tw, delay_ms, self.now, self.clock_start, late, self.stamp_late.get(tw))
        if verdict is not None:
            return verdict
        if succeeded is None:
            return tcp_clock_ms(self.clock_start, self.now) > tw_reusable_at(tw, delay_ms, self.clock_start)
        if say:
            fact(f"the entry's age is {delay_ms} ms (tcp_tw_reuse_delay) within the real calls' durations: "
                 f"the real kernel's clock decided, and it {'recycled' if succeeded else 'kept'} the entry")
        return succeeded

    def port_search_fruitless(self, dest: tuple, now_ms: float) -> bool:
        """Whether connect()'s port search towards ``dest`` (saddr, daddr, dport) is known to find
        nothing: the last full search failed, and since then nothing was removed from ehash or the
        bind table and no TIME_WAIT entry it found too young grew old enough (__inet_hash_connect()
        in net/ipv4/inet_hashtables.c would walk the range again and find no port)."""
        failed = self.exhausted.get(dest)
        return (failed is not None and failed[0] == (self.ehash_frees, self.bhash.frees)
                and now_ms <= failed[1])

    def inet_hash_connect(self, sk: Sock, saddr: str, daddr: str, dport: int) -> None:
        if sk.lport:
            # explicitly bound: only the 4-tuple is checked (check_established with twp == NULL)
            key = (saddr, sk.lport, daddr, dport)
            self.inet_check_established(sk, key, explicitly_bound=True)
            sk.raddr, sk.rport = daddr, dport
            if sk.laddr in ("0.0.0.0", "::"):
                # inet_bhash2_update_saddr(): a wildcard-bound socket now owns its source address only
                fact(f"bound to the wildcard: connect() narrows the port's owner to {saddr}")
                old_key = bind2_key(sk)
                sk.set_local(saddr, sk.lport)
                if sk.in_bhash:
                    self.bhash.move(sk.lport, sk, old_key)
            sk.laddr = saddr
            self.inet_ehash_insert(sk)
            return
        port, i, index = self.inet_hash_connect_search(sk, saddr, daddr, dport)
        self.inet_hash_connect_advance(index, i)
        key = (saddr, port, daddr, dport)
        self.inet_check_established(sk, key, False)  # recycles a TIME_WAIT entry if allowed
        sk.set_local(saddr if sk.laddr in ("0.0.0.0", "::") else sk.laddr, port)
        sk.laddr = saddr
        sk.connect_bind = True
        sk.raddr, sk.rport = daddr, dport
        self.inet_bind_hash(port, sk)
        sk.in_bhash = True
        self.inet_ehash_insert(sk)

    def inet_hash_connect_search(self, sk: Any, saddr: str, daddr: str, dport: int) -> tuple[int, int, int]:
        """The port search of __inet_hash_connect() for an unbound socket: (port, its position in
        the walk, the perturbation slot); SysError EADDRNOTAVAIL when no port is free. The search
        itself changes nothing but the memory of a fruitless search (see port_search_fruitless)."""
        sysctl = self.sysctls
        lo, hi, local_range = self.inet_sk_get_local_port_range(sk)
        port_offset = inet_port_offset(saddr, daddr, dport, self.secret)
        index = port_offset & 255
        start = (self.perturb[index] + (port_offset >> 32)) & 0xFFFFFFFF

        # tcp_twsk_unique(): at tcp_tw_reuse 2 only entries with a loopback address are reused
        reuse_by_age = (bool(sysctl["tcp_timestamps"]) and (sysctl["tcp_tw_reuse"] == 1 or (
            sysctl["tcp_tw_reuse"] == 2 and (self.fib.is_loopback(saddr) or self.fib.is_loopback(daddr)))))
        now_ms = tcp_clock_ms(self.clock_start, self.now)
        established_ok, ripe = self._established_probe(saddr, daddr, dport, reuse_by_age)

        # Nothing frees a port for this destination but a hash or bind-table removal, or, with
        # reuse by age, a TIME_WAIT entry growing old enough: until then a scan that found
        # nothing stays valid (the same answer without walking the range again; a failed search
        # changes no state, so the trace is identical).
        dest = (saddr, daddr, dport)
        gens = (self.ehash_frees, self.bhash.frees)
        if not local_range and self.port_search_fruitless(dest, now_ms):
            self.port_searches_spared += 1
            fact(f"no port in {lo}-{hi} has a free 4-tuple to this destination (nothing was freed "
                 "or grew old enough since the last full search)")
            raise SysError("EADDRNOTAVAIL", "connect.hash_connect")
        counts = self.dest_ports.get(dest)
        per_pass = (self._eph[1] - self._eph[0] + 1) // 2  # ports one parity pass visits
        skip = None
        if (counts is not None and not reuse_by_age and not sysctl["ip_local_reserved_ports"]
                and not local_range and not self.bhash.blocked_in(lo, hi)):
            def skip(parity: int) -> bool:
                # every port of this parity already carries a 4-tuple to this destination
                return counts[parity] >= per_pass
        try:
            port, i = self.bhash.hash_connect(lo, hi, sysctl["ip_local_reserved_ports"], start,
                                              established_ok, skip, step=1 if local_range else 2)
        except SysError:
            if not local_range:
                self.exhausted[dest] = (gens, ripe[0] if reuse_by_age else float("inf"))
            raise
        return port, i, index

    def inet_hash_connect_advance(self, index: int, i: int) -> None:
        """__inet_hash_connect(): after a successful search the perturbation slot moves past the
        port taken, by at least a random even step below 16 (so that the next search from this
        slot starts elsewhere)."""
        i = max(i, self.rng.randrange(8) * 2)
        self.perturb[index] = (self.perturb[index] + i + 2) & 0xFFFFFFFF

    @rule("connect.check_established", "ports")
    def inet_check_established(self, sk: Sock, key: tuple, explicitly_bound: bool, probe: bool = False) -> bool:
        """__inet_check_established() in net/ipv4/inet_hashtables.c: the 4-tuple must be unused or a reusable TIME_WAIT."""
        other = self.ehash.get(key)
        if other is None:
            return True
        if isinstance(other, TimeWaitSock):
            s = self.sysctls
            # (the port search said so already, if the real clock decided)
            old_enough = self.tw_old_enough_followed(other, say=False) if self.followed is not None else None
            if twsk_unique(other, explicitly_bound, s["tcp_tw_reuse"], s["tcp_tw_reuse_delay"], self.now,
                           self.clock_start, old_enough):
                if not probe:
                    sk.ts_recent = other.ts_recent  # tcp_twsk_unique(): ts_recent carried over
                    self._mib("TWRecycled")
                    self.tw.recycled += 1
                    self.inet_twsk_kill(other, "tw_recycle")
                return True
            if explicitly_bound and not probe:
                fact(f"the 4-tuple {key[0]}:{key[1]} -> {key[2]}:{key[3]} is held by a TIME_WAIT entry")
                raise SysError("EADDRNOTAVAIL", "connect.check_established")
            return False
        if explicitly_bound and not probe:
            fact(f"the 4-tuple {key[0]}:{key[1]} -> {key[2]}:{key[3]} is in use")
            raise SysError("EADDRNOTAVAIL", "connect.check_established")
        return False

    def inet_ehash_insert(self, sk: Sock) -> None:
        self.ehash_put(sk.key(), sk)
        sk.in_ehash = True

    def inet_unhash(self, sk: Sock) -> None:
        if sk.in_ehash:
            key = sk.key()
            if self.ehash.get(key) is sk:
                self.ehash_pop(key)
            sk.in_ehash = False

    def ehash_put(self, key: tuple, obj: Any) -> None:
        if key not in self.ehash:
            lo, top = self._eph
            if lo <= key[1] < top:
                d = (key[0], key[2], key[3])
                c = self.dest_ports.get(d)
                if c is None:
                    c = self.dest_ports[d] = [0, 0]
                c[key[1] & 1] += 1
        self.ehash[key] = obj

    def ehash_pop(self, key: tuple) -> None:
        del self.ehash[key]
        self.ehash_frees += 1
        lo, top = self._eph
        if lo <= key[1] < top:
            d = (key[0], key[2], key[3])
            c = self.dest_ports[d]
            c[key[1] & 1] -= 1
            if not (c[0] or c[1]):
                del self.dest_ports[d]  # a destination with no entry left counts as never seen

    @rule("tcp.lookup_listener", "tcp", "minor")
    def inet_lookup_listener(self, daddr: str, dport: int, seg: Segment) -> Sock | None:
        """__inet_lookup_listener() in net/ipv4/inet_hashtables.c: best address match; SO_REUSEPORT groups by hash."""
        best = self.best_listeners(daddr, dport, family_bonus=True)
        if not best:
            return None
        group = [s for s in best if s.reuseport]
        if len(group) > 1:
            h = hashlib.blake2b(f"{seg.src}|{seg.dst}|{self.secret}".encode(), digest_size=4)
            return group[int.from_bytes(h.digest(), "little") % len(group)]
        return best[0]

    def best_listeners(self, daddr: str, dport: int, family_bonus: bool) -> list[Sock]:
        """The listeners on ``dport`` that accept ``daddr`` with the best address score: a specific
        address beats any wildcard (the exact-address lhash2 bucket is searched first, a v6 socket
        bound to the v4-mapped address included); within one bucket, with ``family_bonus``, an IPv4
        listener beats an IPv6 one for an IPv4 destination (compute_score())."""
        best: list[Sock] = []
        score = -1
        dip = ip_addr(daddr)
        for sk in self.listeners.get(dport, []):
            if sk.family == 4 and dip.version == 6:
                continue
            if sk.family == 6 and dip.version == 4 and sk.ipv6only:
                continue
            if sk.laddr == daddr:
                s = 3  # found in the first pass: no wildcard listener is looked at
            elif sk.laddr in ("0.0.0.0", "::"):
                s = 1
            else:
                continue
            if family_bonus and sk.family == 4 and dip.version == 4:
                s += 1
            if s > score:
                best, score = [sk], s
            elif s == score:
                best.append(sk)
        return best
