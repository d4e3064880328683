"""The fuzzer's port space, its rough picture of the sockets and processes, and the host it draws."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any



# ----------------------------------------------------------------------------- the port space

PORTS = (7001, 7002, 7003)  # explicit ports (weights favour the first: collisions are the point)
PORT_WEIGHTS = (5, 3, 1)
# ip_local_port_range: one port, or two of different parity. connect() scans ports of the low
# end's parity first and bind(0)/listen() autobind the other parity first, so with two ports the
# order is fixed; a single port is trivially fixed. Some ranges overlap the explicit ports.
PORT_RANGES = ((40000, 40000), (40000, 40001), (7001, 7002), (7002, 7003), (7001, 7001))
RANGE_WEIGHTS = (4, 4, 2, 2, 1)
TW_REUSE_DELAY_MS = 60000  # the sysctl's maximum: no recycling by age within a scenario
SEND_SIZES = (1, 10, 100, 500, 999)
RECV_SIZES = (1, 10, 100, 65536)
SLEEPS = (0.05, 0.3, 1.5)
RAW_MAX = (1 << 16) - 1
SEED_MAX = (1 << 32) - 1
MIN_STEPS, MAX_STEPS = 5, 40
UNSTABLE_RETRIES = 3  # examples of a divergence that did not reproduce get this many more tries


class _Choices:
    """Uniform choices from one seed (hypothesis draws the seeds; the choices are spread evenly)."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def _next(self) -> int:
        return self.rng.randrange(RAW_MAX + 1)

    def index(self, n: int) -> int:
        v = self._next()
        return v % n if n > 1 else 0

    def pick(self, options: list[Any] | tuple[Any, ...], weights: Any = None) -> Any:
        options = list(options)
        if weights is None:
            return options[self.index(len(options))]
        weights = [float(w) for w in weights]
        total = sum(weights)
        if total <= 0:
            return options[0]
        x = (self._next() / (RAW_MAX + 1)) * total
        for opt, w in zip(options, weights):
            if x < w:
                return opt
            x -= w
        return options[-1]

    def chance(self, p: float) -> bool:
        return self._next() < p * (RAW_MAX + 1)


# ----------------------------------------------------------------------------- the rough picture


@dataclass
class _Sock:
    """What the generator believes about one open socket (it is only a guide for the choices)."""

    id: int
    family: str
    nonblock: bool
    state: str = "new"  # new, bound, listen, connecting, connected, closed
    port: int | None = None
    addr: str | None = None
    auto: bool = False  # port chosen by connect()
    reuseaddr: bool = False
    reuseport: bool = False
    backlog: int = 128
    queue: list[int] = field(default_factory=list)  # listener: connected, unaccepted clients
    peer: int | None = None
    rx: int = 0  # bytes believed readable
    eof: bool = False
    wr_shut: bool = False
    refs: int = 0
    buf_locked: bool = False


@dataclass
class _Proc:
    name: str
    names: dict[str, int] = field(default_factory=dict)  # socket name -> _Sock id
    alive: bool = True
    forked: bool = False


class _World:
    def __init__(self, somaxconn: int) -> None:
        self.socks: dict[int, _Sock] = {}
        self.procs: dict[str, _Proc] = {}
        self.somaxconn = somaxconn
        self.counter = 0
        self.forks = 0
        self.ephemeral_used: dict[tuple[str, int], int] = {}  # (daddr, dport) -> 4-tuples taken

    def new_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def new_sock(self, family: str, nonblock: bool) -> _Sock:
        sid = len(self.socks) + 1
        s = _Sock(sid, family, nonblock)
        self.socks[sid] = s
        return s

    def listeners(self, port: int) -> list[_Sock]:
        return [s for s in self.socks.values() if s.state == "listen" and s.port == port]

    def bind_conflict(self, s: _Sock, addr: str, port: int) -> bool:
        """Roughly inet_bind_conflict(): an overlapping owner of the port, unless both have
        SO_REUSEADDR and it is not listening, or both have SO_REUSEPORT."""
        for o in self.socks.values():
            if o is s or o.state in ("new", "closed") or o.port != port:
                continue
            if not _overlap(addr, o.addr or "0.0.0.0"):
                continue
            if s.reuseaddr and o.reuseaddr and o.state != "listen":
                continue
            if s.reuseport and o.reuseport:
                continue
            return True
        return False

    def free_port(self, port_range: tuple[int, int]) -> int | None:
        used = {o.port for o in self.socks.values() if o.state != "closed"}
        for port in (port_range[1], port_range[0]):  # an odd offset first: low + 1
            if port not in used:
                return port
        return None

    def ephemeral_free(self, daddr: str, dport: int, port_range: tuple[int, int]) -> int:
        """How many more autobound connects to daddr:dport should find a port: the range less
        the ports bind() owners hold, less the 4-tuples already used (never given back: a
        closed connection may leave TIME_WAIT behind)."""
        held = {o.port for o in self.socks.values() if o.state != "closed" and not o.auto}
        free = [q for q in range(port_range[0], port_range[1] + 1) if q not in held]
        return len(free) - self.ephemeral_used.get((daddr, dport), 0)

    def listening_ports(self) -> list[int]:
        return sorted({s.port for s in self.socks.values() if s.state == "listen" and s.port})

    def drop_ref(self, proc: _Proc, name: str) -> None:
        sid = proc.names.pop(name, None)
        if sid is None:
            return
        s = self.socks[sid]
        s.refs -= 1
        if s.refs <= 0:
            self._release(s)

    def _release(self, s: _Sock) -> None:
        if s.state == "listen":
            for cid in s.queue:
                c = self.socks.get(cid)
                if c is not None:
                    c.eof = True
            s.queue.clear()
        if s.peer is not None and s.peer in self.socks:
            self.socks[s.peer].eof = True
        s.state = "closed"


def _overlap(a: str, b: str) -> bool:
    wild = ("0.0.0.0", "::")
    return a == b or a in wild or b in wild


def _names_in(p: _Proc, w: _World, states: tuple[str, ...]) -> list[str]:
    return [n for n, sid in p.names.items() if w.socks[sid].state in states]


# ----------------------------------------------------------------------------- host


def _host(c: _Choices) -> tuple[dict[str, Any], dict[str, Any]]:
    """The host section and the processes, from the host choices. The first option is the default."""
    sysctls: dict[str, Any] = {}
    lo, hi = c.pick(PORT_RANGES, RANGE_WEIGHTS)
    sysctls["ip_local_port_range"] = [lo, hi]
    sysctls["tcp_tw_reuse_delay"] = TW_REUSE_DELAY_MS
    tw_reuse = c.pick([None, 0, 1], [6, 2, 2])
    if tw_reuse is not None:
        sysctls["tcp_tw_reuse"] = tw_reuse
    if c.chance(0.15):
        sysctls["tcp_timestamps"] = 0
    somax = c.pick([None, 1, 2], [17, 2, 1])
    if somax is not None:
        sysctls["somaxconn"] = somax
    tw_max = c.pick([None, 0, 1, 2], [17, 1, 1, 1])
    if tw_max is not None:
        sysctls["tcp_max_tw_buckets"] = tw_max
    if c.chance(0.1):
        sysctls["ip_autobind_reuse"] = 1
    if c.chance(0.07) and hi > lo:
        sysctls["ip_local_reserved_ports"] = [c.pick([lo, hi])]
    unpriv = c.chance(0.08)
    if unpriv:
        # the kernel refuses a port range that starts below the unprivileged ports
        # (ipv4_privileged_ports() in net/ipv4/sysctl_net_ipv4.c), so the start follows the range
        sysctls["ip_unprivileged_port_start"] = min(7002, lo)
    n = c.pick([2, 3], [3, 2])
    procs: dict[str, Any] = {}
    for i, name in enumerate(["a", "b", "c"][:n]):
        spec: dict[str, Any] = {}
        if c.chance(0.08):
            spec["nofile"] = c.pick([5, 6])  # fds 3-4 or 3-5 for sockets
        if (unpriv and i == n - 1) or c.chance(0.04):
            spec["uid"] = 65534
        procs[name] = spec
    host: dict[str, Any] = {"sysctls": sysctls}
    return host, procs
