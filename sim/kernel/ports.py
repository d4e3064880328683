"""The port-occupancy table: bind buckets, conflict rules, ephemeral port allocation.

One :class:`BindBucket` per port (``inet_bind_bucket``) lists its owners: bound sockets,
listeners, accepted children (which inherit the listener's bucket), connect()-autobound sockets
and TIME_WAIT entries. A port is free again when its last owner leaves.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Callable, Iterable

from .addr import ip_addr
from .errors import SysError
from .rules import fact, rule

V4_ANY = ipaddress.IPv4Address("0.0.0.0")
V6_ANY = ipaddress.IPv6Address("::")
LOOPBACK4_IPV6 = ipaddress.IPv4Address("127.0.0.6")  # inet6_bind(): rcv_saddr of a pure-IPv6 bind
TIME_WAIT_STATE = 6
LISTEN_STATE = 10


class Endpoint:
    """The addressing part of a socket or TIME_WAIT entry as the bind rules see it."""

    __slots__ = ()

    # Implementers provide: family (4 or 6), addr6 (IPv6Address | None), saddr4 (IPv4Address),
    # ipv6only (bool), reuse, reuseport (bool), uid (int), tcp_state (int)


@functools.lru_cache(maxsize=4096)
def split_addr(family: int, addr: str, v6only: bool) -> tuple[ipaddress.IPv6Address | None, ipaddress.IPv4Address, bool]:
    """(addr6, rcv_saddr, ipv6only) as inet_bind()/inet6_bind() store them."""
    ip = ip_addr(addr)
    if family == 4:
        return None, ip, False  # type: ignore[return-value]
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip, ip.ipv4_mapped, v6only
    if ip == V6_ANY:
        return ip, V4_ANY, v6only
    return ip, LOOPBACK4_IPV6, True  # inet6_bind(): a specific IPv6 address makes the socket v6-only


def _v6_type(a: ipaddress.IPv6Address | None) -> str:
    if a is None or a.ipv4_mapped is not None:
        return "mapped"
    if a == V6_ANY:
        return "any"
    return "unicast"


@rule("bind.addr_overlap", "ports", "minor")
def rcv_saddr_equal(sk: Any, sk2: Any) -> bool:
    """inet_rcv_saddr_equal() in net/ipv4/inet_connection_sock.c: do two bound addresses overlap (wildcards match)?"""
    if sk.family == 4:
        # ipv4_rcv_saddr_equal(sk1, sk2, ipv6_only_sock(sk2), true, true)
        if sk2.ipv6only:
            return False
        return sk.saddr4 == sk2.saddr4 or sk.saddr4 == V4_ANY or sk2.saddr4 == V4_ANY
    # ipv6_rcv_saddr_equal()
    t1 = _v6_type(sk.addr6)
    t2 = _v6_type(sk2.addr6 if sk2.family == 6 else None)
    if t1 == "mapped" and t2 == "mapped":
        if sk2.ipv6only:
            return False
        return sk.saddr4 == sk2.saddr4 or sk.saddr4 == V4_ANY or sk2.saddr4 == V4_ANY
    if t1 == "any" and t2 == "any":
        return True
    if t2 == "any" and not (sk2.ipv6only and t1 == "mapped"):
        return True
    if t1 == "any" and not (sk.ipv6only and t2 == "mapped"):
        return True
    return sk2.family == 6 and sk.addr6 == sk2.addr6


@rule("bind.conflict", "ports", "minor")
def bind_conflict(sk: Any, sk2: Any, relax: bool, reuseport_ok: bool) -> bool:
    """inet_bind_conflict() via inet_csk_bind_conflict() in net/ipv4/inet_connection_sock.c."""
    if sk2 is sk:
        return False
    if not rcv_saddr_equal(sk, sk2):
        return False
    if sk.reuse and sk2.reuse and sk2.tcp_state != LISTEN_STATE:
        # SO_REUSEADDR on both and the existing one not listening: shared when relaxed
        if not relax:
            return True
        # relaxed (bind(0) with ip_autobind_reuse): two SO_REUSEPORT sockets that could both
        # listen (same uid, or the other in TIME_WAIT) still conflict
        return (not reuseport_ok and sk.reuseport and sk2.reuseport
                and (sk2.tcp_state == TIME_WAIT_STATE or sk.uid == sk2.uid))
    if (reuseport_ok and sk.reuseport and sk2.reuseport
            and (sk2.tcp_state == TIME_WAIT_STATE or sk.uid == sk2.uid)):
        return False
    return True


def describe_owner(o: Any) -> str:
    """One line a learner can read: who holds the port, in which state, with which flags."""
    flags = [n for n, v in (("SO_REUSEADDR", o.reuse), ("SO_REUSEPORT", o.reuseport)) if v]
    flag_text = "with " + " and ".join(flags) if flags else "without SO_REUSEADDR"
    if getattr(o, "is_tw", False):
        return (f"{o.shown_state} entry {o.laddr}:{o.lport} -> {o.raddr}:{o.rport} of a socket "
                f"{flag_text}, expiring at t={o.expires:.1f} s")
    from .tcp_states import State  # local: avoid a cycle at import time

    addr = str(o.addr6) if o.family == 6 else str(o.saddr4)
    st = State(o.tcp_state).name if o.tcp_state in State._value2member_map_ else str(o.tcp_state)
    if st == "CLOSE":
        st = "bound, not listening"
    peer = f" -> {o.raddr}:{o.rport}" if getattr(o, "raddr", None) else ""
    return f"socket {addr}:{o.lport}{peer} ({st}) {flag_text}"


def bind2_key(owner: Any) -> tuple:
    """The (family, local address) of ``owner``'s ``inet_bind2_bucket`` within its port."""
    return (owner.family, owner.addr6 if owner.family == 6 else owner.saddr4)


class BindBucket:
    """``inet_bind_bucket``: every owner of one port, and whether connect() may take the port.

    ``blocked`` is the bucket's ``fastreuse >= 0 || fastreuseport >= 0``: __inet_hash_connect()
    skips such a port. Since Linux 6.18 (d57f4b874946, "tcp: Update bind bucket state on port
    release") the state is kept per (port, address) ``inet_bind2_bucket`` too and recomputed
    lazily: a bind() (inet_csk_update_fastreuse()) blocks the port and its address's bucket; a
    connect() autobind creates unblocked ones; a socket moved to another address (connect() of a
    wildcard-bound socket, inet_bhash2_update_saddr()) joins that address's bucket as it is, or
    creates it blocked unless the socket is connect()-bound; only a socket leaving an address's
    bucket (__inet_put_port(), inet_bind2_bucket_destroy()) unblocks it when every owner left is
    connect()-bound, and then the port's bucket when all its address buckets are unblocked
    (inet_bind_bucket_destroy()). So a bound socket that moved into a connect()-made address
    bucket leaves the port open to connect() once another owner leaves (measured: Linux 6.18,
    scenarios/regressions/connect-port-of-moved-bind-owner.yaml).
    """

    __slots__ = ("port", "owners", "blocked", "tb2")

    def __init__(self, port: int):
        self.port = port
        self.owners: list[Any] = []
        self.blocked = False
        self.tb2: dict[tuple, list] = {}  # (family, address) -> [blocked, owners]

    def leave_tb2(self, key: tuple, owner: Any) -> None:
        """inet_bind2_bucket_destroy(): ``owner`` left; the address's bucket goes when empty, or
        is unblocked when every owner left got the port from connect()."""
        tb2 = self.tb2.get(key)
        if tb2 is None or owner not in tb2[1]:
            # (an address changed without inet_bhash2_update_saddr(): find the owner's bucket)
            key, tb2 = next(((k, t) for k, t in self.tb2.items() if owner in t[1]), (key, None))
            if tb2 is None:
                return
        tb2[1].remove(owner)
        if not tb2[1]:
            del self.tb2[key]
        elif tb2[0] and all(o.connect_bind for o in tb2[1]):
            tb2[0] = False


class BindTable:
    """``inet_hashinfo.bhash`` for one network namespace: port -> BindBucket."""

    def __init__(self) -> None:
        self.buckets: dict[int, BindBucket] = {}
        self.frees = 0  # owners removed so far (a port may have become free)
        self.bound: set[int] = set()  # ports connect() does not take (blocked buckets)

    def owners(self, port: int) -> list[Any]:
        b = self.buckets.get(port)
        return b.owners if b else []

    def _set_blocked(self, b: BindBucket, blocked: bool) -> None:
        b.blocked = blocked
        if blocked:
            self.bound.add(b.port)
        else:
            self.bound.discard(b.port)

    def add(self, port: int, owner: Any) -> None:
        """inet_bind_hash() after inet_csk_get_port() (bind: both buckets blocked),
        __inet_hash_connect() (new buckets unblocked), __inet_inherit_port() (an accepted child:
        a new address bucket is blocked) or inet_twsk_hashdance() (a TIME_WAIT entry takes its
        socket's place: nothing changes, a new bucket is as connect() would have made it)."""
        b = self.buckets.get(port)
        new = b is None
        if new:
            b = self.buckets[port] = BindBucket(port)
        b.owners.append(owner)
        key = bind2_key(owner)
        tb2 = b.tb2.get(key)
        by_bind = not owner.connect_bind and not getattr(owner, "is_request", False) \
            and getattr(owner, "tcp_state", 0) != TIME_WAIT_STATE
        if by_bind:
            self._set_blocked(b, True)
        elif new:
            self._set_blocked(b, not owner.connect_bind)
        if tb2 is None:
            b.tb2[key] = [by_bind or not owner.connect_bind, [owner]]
        else:
            tb2[1].append(owner)
            if by_bind:
                tb2[0] = True

    def move(self, port: int, owner: Any, old_key: tuple) -> None:
        """inet_bhash2_update_saddr() / inet_bhash2_reset_saddr(): ``owner`` (whose address
        changed) leaves its old address's bucket for the new one's."""
        b = self.buckets.get(port)
        key = bind2_key(owner)
        if b is None or key == old_key:
            return
        b.leave_tb2(old_key, owner)
        tb2 = b.tb2.get(key)
        if tb2 is None:
            b.tb2[key] = [not owner.connect_bind, [owner]]
        else:
            tb2[1].append(owner)

    def remove(self, port: int, owner: Any) -> None:
        """__inet_put_port(): leave the bucket; the bucket goes when its last owner leaves, and
        is unblocked when all its address buckets are (inet_bind_bucket_destroy())."""
        b = self.buckets.get(port)
        if b is None:
            return
        try:
            b.owners.remove(owner)
        except ValueError:
            return
        self.frees += 1
        b.leave_tb2(bind2_key(owner), owner)
        if not b.owners:
            del self.buckets[port]
            self.bound.discard(port)
        elif b.blocked and not any(tb2[0] for tb2 in b.tb2.values()):
            self._set_blocked(b, False)

    def blocked_in(self, low: int, high: int) -> bool:
        """Whether connect() skips some port of ``low``-``high`` (a blocked bucket)."""
        return any(low <= p <= high for p in self.bound)

    def conflicts(self, sk: Any, port: int, relax: bool, reuseport_ok: bool) -> list[Any]:
        return [o for o in self.owners(port) if bind_conflict(sk, o, relax, reuseport_ok)]

    @rule("bind.explicit_port", "ports")
    def check_explicit(self, sk: Any, port: int) -> None:
        """inet_csk_get_port() in net/ipv4/inet_connection_sock.c: a taken port gives EADDRINUSE (__inet_bind)."""
        bad = self.conflicts(sk, port, relax=True, reuseport_ok=True)
        if bad:
            for o in bad[:3]:
                fact(f"port {port} is held by a {describe_owner(o)}")
            fact("sharing needs SO_REUSEADDR on both sockets with the existing one not listening, "
                 "or SO_REUSEPORT on both with the same owner uid")
            raise SysError("EADDRINUSE", "bind.explicit_port")
        owners = self.owners(port)
        if owners:
            fact(f"port {port} is shared with {len(owners)} existing owner(s): no conflict")
        else:
            fact(f"port {port} has no owner")

    @rule("bind.find_open_port", "ports", "ephemeral")
    def find_open_port(self, sk: Any, low: int, high: int, reserved: Iterable[int],
                       rand_below: Callable[[int], int], autobind_reuse: bool) -> int:
        """inet_csk_find_open_port() in net/ipv4/inet_connection_sock.c: bind(0)/listen() autobind, odd offsets first."""
        reserved = set(reserved)
        relax = False
        attempt_half = 1 if sk.reuse else 0
        while True:
            lo, hi = low, high + 1
            if hi - lo < 4:
                attempt_half = 0
            if attempt_half:
                half = lo + (((hi - lo) >> 2) << 1)
                if attempt_half == 1:
                    hi = half
                else:
                    lo = half
            remaining = hi - lo
            if remaining > 1:
                remaining &= ~1
            offset = rand_below(remaining) if remaining > 0 else 0
            offset |= 1
            for _parity in range(2):
                port = lo + offset
                for _ in range(0, remaining, 2):
                    if port >= hi:
                        port -= remaining
                    if port not in reserved and not self.conflicts(sk, port, relax, False):
                        fact(f"port {port} is free for bind (range {low}-{high}, searched from offset {offset})")
                        return port
                    port += 2
                offset -= 1
                if offset & 1:
                    break
            if attempt_half == 1:
                attempt_half = 2
                continue
            if autobind_reuse and not relax:
                relax = True
                attempt_half = 0
                continue
            fact(f"every port in {low}-{high} conflicts with an existing owner")
            raise SysError("EADDRINUSE", "bind.find_open_port")

    @rule("connect.hash_connect", "ports", "ephemeral")
    def hash_connect(self, low: int, high: int, reserved: Iterable[int], start: int,
                     established_ok: Callable[[int], bool],
                     skip_pass: Callable[[int], bool] | None = None, step: int = 2) -> tuple[int, int]:
        """__inet_hash_connect() in net/ipv4/inet_hashtables.c: connect() autobind, ports of low's parity first (every port in turn under IP_LOCAL_PORT_RANGE)."""
        reserved = set(reserved)
        hi = high + 1
        remaining = hi - low
        if step == 1:
            offset = start % remaining if remaining > 0 else 0
            port = low + offset
            for i in range(remaining):
                if port >= hi:
                    port -= remaining
                if port not in reserved:
                    b = self.buckets.get(port)
                    if b is None or (not b.blocked and established_ok(port)):
                        fact(f"port {port} chosen for connect() (4-tuple free; socket range {low}-{high})")
                        return (port if b is None else b.port), i
                port += 1
            fact(f"no port in {low}-{high} has a free 4-tuple to this destination")
            raise SysError("EADDRNOTAVAIL", "connect.hash_connect")
        if remaining > 1:
            remaining &= ~1
        offset = (start % remaining) & ~1 if remaining > 0 else 0
        i = 0
        while True:
            port = low + offset
            # a pass that cannot succeed is skipped without probing: same result, less work
            scan = range(0) if skip_pass is not None and skip_pass(port & 1) else range(0, remaining, 2)
            for i in scan:
                if port >= hi:
                    port -= remaining
                if port not in reserved:
                    b = self.buckets.get(port)
                    if b is None or (not b.blocked and established_ok(port)):
                        fact(f"port {port} chosen for connect() (4-tuple free; range {low}-{high})")
                        # the bucket's own number: the 4-tuples of every owner share one int object
                        return (port if b is None else b.port), i
                port += 2
            offset += 1
            if (offset & 1) and remaining > 1:
                continue
            break
        fact(f"no port in {low}-{high} has a free 4-tuple to this destination")
        raise SysError("EADDRNOTAVAIL", "connect.hash_connect")
