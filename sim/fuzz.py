"""Differential fuzzing: random valid scenarios on the simulator and on the real kernel.

A scenario is drawn by hypothesis as *raw choices* -- one seed for the host and the processes,
then a number of steps (5 to 40) and one seed per step -- and :func:`interpret` turns them into a
scenario document (plain dicts) while keeping a rough picture of what the sockets are doing, so
that most steps make sense: sockets get options (SO_REUSEADDR, SO_REUSEPORT, SO_LINGER, buffer
sizes...) and are bound to a tiny port space, listen, connect to listening ports, accept, send,
receive, shut down and close; processes fork and dup; some sockets are non-blocking; the host
gets random sysctls (a one- or two-port ``ip_local_port_range``, ``tcp_tw_reuse``,
``tcp_timestamps``, ``somaxconn``, ``tcp_max_tw_buckets``...). Because every step is one element
of a list, hypothesis shrinks a scenario by deleting steps, and the interpretation of the
remaining ones adapts.

What legitimately varies between runs is kept out: the ephemeral range is always one or two
ports (so the port an autobind picks is decided by parity, never by the kernel's random offset),
sends are below 1000 bytes with receive buffers large enough that flow control never engages,
``tcp_tw_reuse_delay`` is at its maximum (60 s) so that no TIME_WAIT is recycled because the real
run happened to be slower than the simulated one, and sleeps are rare and short.

Every scenario is emitted as YAML and validated with :func:`sim.scenario.loader.load_text`, so a
divergent one can be written out verbatim and replayed with ``socksim crosscheck``.

The campaign (:func:`campaign`, ``socksim fuzz``) runs each example on both backends and compares
the traces. A divergence is identified by a *signature* (the first disagreeing step's call and the
two outcome classes, e.g. ``bind: simulator EINVAL, real ok``; see :attr:`Verdict.primary`); a
new one is confirmed by a second real run (timing-dependent differences are reported as unstable
and not shrunk), shrunk by hypothesis to the smallest example with the same signature, then
reduced further step by step, confirmed again, and written as YAML.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

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
        sysctls["ip_unprivileged_port_start"] = 7002
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


# ----------------------------------------------------------------------------- steps


def _interpret_step(c: _Choices, w: _World, port_range: tuple[int, int]) -> dict[str, Any] | None:
    alive = [p for p in w.procs.values() if p.alive]
    if not alive:
        return None
    kind = c.pick(["call", "observe", "sleep"], [90, 8, 2])
    if kind == "sleep":
        return {"sleep": c.pick(SLEEPS, [5, 3, 2])}
    if kind == "observe":
        what = c.pick(["tcp_states", "fds", "sockstat", "queues"], [6, 2, 1, 2])
        if what == "tcp_states":
            ports = list(PORTS) + sorted({port_range[0], port_range[1]} - set(PORTS))
            return {"observe": {"what": "tcp_states", "port": c.pick(ports)}}
        if what == "sockstat":
            return {"observe": {"what": "sockstat"}}
        p = c.pick(alive)
        if what == "fds" or not p.names:
            return {"observe": {"what": "fds", "proc": p.name}}
        return {"observe": {"what": "queues", "proc": p.name, "sock": c.pick(sorted(p.names))}}

    # a call: first the process, favouring those with sockets
    p = c.pick(alive, [0.4 + len(q.names) for q in alive])
    S = lambda *states: _names_in(p, w, states)  # noqa: E731
    new, bound = S("new"), S("bound")
    listening, connected = S("listen"), S("connected", "connecting")
    open_ = S("new", "bound", "listen", "connected", "connecting", "closed")
    with_pending = [n for n in listening if w.socks[p.names[n]].queue]
    idle_listen = [n for n in listening if not w.socks[p.names[n]].queue]
    readable = [n for n in connected if w.socks[p.names[n]].rx > 0 or w.socks[p.names[n]].eof]
    weights = {
        "socket": 3 if len(p.names) < 2 else (0.7 if len(p.names) < 3 else (0.2 if len(p.names) < 6 else 0)),
        "setsockopt": 3 if new else (0.4 if open_ else 0),
        "bind": 4 if new else (0.3 if open_ else 0),
        "listen": 4 if bound else (0.5 if new else (0.2 if open_ else 0)),
        "connect": (4 if (bound or new and any(w.ephemeral_free("127.0.0.1", q, port_range) > 0
                                              for q in w.listening_ports())) and w.listening_ports()
                    else (0.5 if new or bound else 0))
        + (0.2 if connected or listening else 0),
        "accept": 6 if with_pending else (
            (0.6 if any(w.socks[p.names[n]].nonblock for n in idle_listen) else 0.15) if idle_listen
            else (0.1 if open_ else 0)),
        "send": 4 if connected else (0.2 if open_ else 0),
        "recv": (4 if readable else 2) if connected else (0.2 if open_ else 0),
        "shutdown": 1 if connected else (0.3 if listening else (0.1 if open_ else 0)),
        "close": 2 if open_ else 0,
        "dup": 0.4 if open_ else 0,
        "dup2": 0.15 if open_ else 0,
        "fork": 0.5 if w.forks < 2 and len(w.procs) < 5 and p.names else 0,
        "exit": (1 if p.forked else 0.1) if len(alive) > 1 else 0,
        "getsockname": 0.6 if open_ else 0,
        "getsockopt": 0.6 if open_ else 0,
        "set_nonblocking": 0.5 if open_ else 0,
    }
    call = c.pick(list(weights), list(weights.values()))
    step: dict[str, Any] = {"proc": p.name, "call": call}

    def sock_from(*groups: list[str]) -> str:
        for g in groups:
            if g:
                return c.pick(sorted(g))
        return c.pick(sorted(p.names)) if p.names else "missing"

    if call == "socket":
        fam = c.pick(["AF_INET", "AF_INET6"], [92, 8])
        nonblock = c.chance(0.2)
        name = w.new_name("s")
        if fam != "AF_INET":
            step["family"] = fam
        if nonblock:
            step["nonblock"] = True
        step["as"] = name
        s = w.new_sock(fam, nonblock)
        s.refs = 1
        p.names[name] = s.id
        return step

    if not p.names:  # nothing else is meaningful without a socket
        return None

    if call == "setsockopt":
        name = sock_from(new) if c.chance(0.85) else sock_from(open_)
        s = w.socks[p.names[name]]
        opts = ["SO_REUSEADDR", "SO_REUSEPORT", "SO_LINGER", "SO_SNDBUF", "SO_RCVBUF",
                "TCP_NODELAY", "SO_KEEPALIVE", "TCP_LINGER2", "IP_BIND_ADDRESS_NO_PORT"]
        wts = [10, 5, 3, 1.5, 1.5, 0.5, 0.3, 0.7, 0.5]
        if s.family == "AF_INET6":
            opts.append("IPV6_V6ONLY")
            wts.append(4)
        opt = c.pick(opts, wts)
        step.update(sock=name, opt=opt)
        if opt == "SO_REUSEADDR":
            v = c.pick([1, 0], [9, 1])
            s.reuseaddr = bool(v)
        elif opt == "SO_REUSEPORT":
            v = c.pick([1, 0], [9, 1])
            s.reuseport = bool(v)
        elif opt == "SO_LINGER":
            v = c.pick([[1, 0], [0, 0], [1, 1]], [6, 2, 2])
        elif opt == "SO_SNDBUF":
            v = c.pick([4608, 10000, 65536])
            s.buf_locked = True
        elif opt == "SO_RCVBUF":
            v = c.pick([65536, 100000])  # >= 131072 stored: no flow control with small sends
            s.buf_locked = True
        elif opt == "TCP_LINGER2":
            v = c.pick([-1, 0, 5])
        else:
            v = c.pick([1, 0], [9, 1])
        if v != 1:
            step["value"] = v
        return step

    if call == "bind":
        name = sock_from(new) if c.chance(0.9) else sock_from(open_)
        s = w.socks[p.names[name]]
        addrs = ["127.0.0.1", "0.0.0.0", "127.0.0.2", "10.1.2.3"]
        awts = [10, 7, 2, 0.3]
        if s.family == "AF_INET6":
            addrs.append("::1")
            awts.append(3)
        addr = c.pick(addrs, awts)
        port = c.pick(["fixed", 0, "range"], [16, 2, 1])
        if port == "fixed":
            port = c.pick(PORTS, PORT_WEIGHTS)
        elif port == "range":
            port = c.pick(list(port_range))
        step.update(sock=name, addr=addr, port=port)
        if s.state == "new" and addr != "10.1.2.3":
            if port == 0:
                port = w.free_port(port_range)
            if port is not None and not w.bind_conflict(s, addr, port):
                s.state, s.port, s.addr = "bound", port, addr
        return step

    if call == "listen":
        name = sock_from(bound, new) if c.chance(0.92) else sock_from(open_)
        s = w.socks[p.names[name]]
        backlog = c.pick([128, 0, 1, 2, 5, -1], [8, 2, 2, 1, 2, 0.5])
        step["sock"] = name
        if backlog != 128:
            step["backlog"] = backlog
        if s.state == "new":
            port = w.free_port(port_range)
            if port is not None:
                s.state, s.port, s.addr = "bound", port, "0.0.0.0"
        if s.state == "bound" and not any(
                o.state == "listen" and o.port == s.port and _overlap(o.addr or "0.0.0.0", s.addr or "0.0.0.0")
                and not (o.reuseport and s.reuseport) for o in w.socks.values()):
            s.state = "listen"
            s.backlog = backlog if 0 <= backlog <= w.somaxconn else w.somaxconn
        return step

    if call == "connect":
        ports = w.listening_ports()
        if ports and c.chance(0.9):
            port = c.pick(ports)
        else:
            port = c.pick(PORTS, PORT_WEIGHTS)
        if w.ephemeral_free("127.0.0.1", port, port_range) > 0:
            name = sock_from(new + bound) if c.chance(0.9) else sock_from(open_)
        else:  # an explicitly bound client still gets through
            name = sock_from(bound, new) if c.chance(0.9) else sock_from(open_)
        s = w.socks[p.names[name]]
        addrs = ["127.0.0.1", "127.0.0.2", "0.0.0.0"]
        awts = [20, 1, 0.5]
        if s.family == "AF_INET6":
            addrs.append("::1")
            awts.append(3)
        addr = c.pick(addrs, awts)
        step.update(sock=name, addr=addr, port=port)
        dst = "127.0.0.1" if addr == "0.0.0.0" else addr
        if s.state in ("new", "bound"):
            ls = [o for o in w.listeners(port) if _overlap(dst, o.addr or "0.0.0.0")]
            if s.state == "new":  # the ephemeral 4-tuples to this destination run out
                free = w.ephemeral_free(dst, port, port_range)
                if free <= 0:
                    return step
                if ls:
                    w.ephemeral_used[(dst, port)] = w.ephemeral_used.get((dst, port), 0) + 1
                    s.port, s.auto = port_range[0], True
            if ls:
                lst = ls[0]
                if len(lst.queue) <= lst.backlog:
                    lst.queue.append(s.id)
                    s.state = "connected"
                else:
                    s.state = "connecting"
        return step

    if call == "accept":
        name = sock_from(with_pending, idle_listen, open_)
        s = w.socks[p.names[name]]
        new_name = w.new_name("c")
        step.update(sock=name)
        step["as"] = new_name
        if s.state == "listen" and s.queue:
            cid = s.queue.pop(0)
            child = w.new_sock(s.family, False)
            child.state, child.peer, child.refs, child.port = "connected", cid, 1, s.port
            if cid in w.socks:
                w.socks[cid].peer = child.id
            p.names[new_name] = child.id
        return step

    if call == "send":
        name = sock_from(connected, open_)
        s = w.socks[p.names[name]]
        n = c.pick(SEND_SIZES)
        step.update(sock=name, bytes=n)
        if c.chance(0.1):
            step["flags"] = ["MSG_DONTWAIT"]
        if s.peer is not None and s.peer in w.socks and s.state == "connected" and not s.wr_shut:
            w.socks[s.peer].rx += n
        return step

    if call == "recv":
        name = sock_from(readable, connected, open_)
        s = w.socks[p.names[name]]
        n = c.pick(RECV_SIZES, [1, 2, 2, 4])
        step.update(sock=name)
        if n != 65536:
            step["bytes"] = n
        flags = []
        if not s.nonblock and not (s.rx > 0 or s.eof) and c.chance(0.85):
            flags.append("MSG_DONTWAIT")  # blocking calls stay rare
        if c.chance(0.08):
            flags.append("MSG_PEEK")
        if flags:
            step["flags"] = flags
        if "MSG_PEEK" not in flags:
            s.rx = max(0, s.rx - n)
        return step

    if call == "shutdown":
        name = sock_from(connected, listening, open_)
        s = w.socks[p.names[name]]
        how = c.pick(["SHUT_WR", "SHUT_RDWR", "SHUT_RD"], [5, 3, 2])
        step.update(sock=name)
        if how != "SHUT_WR":
            step["how"] = how
        if how != "SHUT_RD" and s.peer is not None and s.peer in w.socks:
            w.socks[s.peer].eof = True
            s.wr_shut = True
        return step

    if call == "close":
        name = sock_from(open_)
        step.update(sock=name)
        w.drop_ref(p, name)
        return step

    if call == "dup":
        name = sock_from(open_)
        new_name = w.new_name("d")
        step.update(sock=name)
        step["as"] = new_name
        sid = p.names[name]
        w.socks[sid].refs += 1
        p.names[new_name] = sid
        return step

    if call == "dup2":
        name = sock_from(open_)
        step.update(sock=name, fd=c.pick([3, 4, 5, 6, 9]))
        return step  # the target fd's name (if any) now means this socket: left to the kernels

    if call == "fork":
        w.forks += 1
        child = f"f{w.forks}"
        step["as"] = child
        q = _Proc(child, dict(p.names), True, True)
        for sid in q.names.values():
            w.socks[sid].refs += 1
        w.procs[child] = q
        return step

    if call == "exit":
        for name in list(p.names):
            w.drop_ref(p, name)
        p.alive = False
        return step

    if call == "getsockname":
        step["sock"] = sock_from(open_)
        return step

    if call == "getsockopt":
        name = sock_from(open_)
        s = w.socks[p.names[name]]
        opts = ["SO_ERROR", "SO_REUSEADDR", "SO_REUSEPORT", "SO_ACCEPTCONN", "SO_TYPE",
                "SO_LINGER", "TCP_NODELAY", "TCP_LINGER2"]
        wts = [6, 2, 1, 2, 0.5, 1, 0.5, 0.5]
        if s.buf_locked or s.state in ("new", "bound"):
            # autotuning moves unlocked buffers once a connection exists
            opts += ["SO_SNDBUF", "SO_RCVBUF"]
            wts += [1, 1]
        step.update(sock=name, opt=c.pick(opts, wts))
        return step

    if call == "set_nonblocking":
        name = sock_from(open_)
        on = c.pick([True, False], [4, 1])
        step["sock"] = name
        if not on:
            step["on"] = False
        w.socks[p.names[name]].nonblock = on
        return step
    return None


def interpret(raw: tuple[int, list[int]], name: str = "fuzz") -> dict[str, Any]:
    """The scenario document (plain data, ready for YAML) that the raw choices describe: one seed
    for the host and the processes, one seed per step."""
    host_raw, steps_raw = raw
    c = _Choices(host_raw)
    host, procs = _host(c)
    w = _World(int(host["sysctls"].get("somaxconn", 4096)))
    for pname in procs:
        w.procs[pname] = _Proc(pname)
    port_range = tuple(host["sysctls"]["ip_local_port_range"])
    steps: list[dict[str, Any]] = []
    sleeps = 0.0
    for r in steps_raw:
        step = _interpret_step(_Choices(r), w, port_range)
        if step is None:
            continue
        if "sleep" in step:
            if sleeps + step["sleep"] > 3.0:
                continue
            sleeps += step["sleep"]
        steps.append(step)
    if not steps:
        steps.append({"proc": next(iter(procs)), "call": "socket", "as": "s1"})
    return {"name": name, "description": "", "host": host, "processes": procs, "steps": steps}


def raw_scenarios(min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS):
    """The hypothesis strategy of raw choices (see :func:`interpret`): a host seed, then a number
    of steps drawn evenly from [min_steps, max_steps] and one seed per step. (A plain list would
    mostly be short: hypothesis favours small collections.)"""
    from hypothesis import strategies as st

    seeds = st.integers(0, SEED_MAX)

    @st.composite
    def raw(draw: Any) -> tuple[int, list[int]]:
        host = draw(seeds)
        n = draw(st.integers(min_steps, max_steps))
        return host, draw(st.lists(seeds, min_size=n, max_size=n))

    return raw()


def scenario_documents(min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS):
    """A hypothesis strategy of valid scenario documents (plain dicts)."""
    return raw_scenarios(min_steps, max_steps).map(interpret)


# ----------------------------------------------------------------------------- YAML


def _flow(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=1 << 20).strip()


def to_yaml(doc: dict[str, Any]) -> str:
    """The document as a scenario file in the house style: one flow mapping per step."""
    out = [f"name: {doc['name']}"]
    desc = (doc.get("description") or "").rstrip()
    if desc:
        out.append("description: |")
        out.extend(("  " + line).rstrip() for line in desc.splitlines())
    if doc.get("tags"):
        out.append(f"tags: {_flow(list(doc['tags']))}")
    host = doc.get("host") or {}
    if host:
        out.append("host:")
        for k, v in host.items():
            out.append(f"  {k}: {_flow(v)}")
    out.append("processes:")
    for pname, spec in doc["processes"].items():
        out.append(f"  {pname}: {_flow(spec or {})}")
    out.append("steps:")
    for st in doc["steps"]:
        out.append(f"  - {_flow(st)}")
    return "\n".join(out) + "\n"


def load_document(doc: dict[str, Any], name: str = "<fuzz>"):
    """Validate the document the way a scenario file is validated; returns the Scenario."""
    from .scenario.loader import load_text

    return load_text(to_yaml(doc), name)


# ----------------------------------------------------------------------------- one example


@dataclass
class Verdict:
    """One example on both backends: agreement, and for each disagreeing step its signature."""

    agree: bool
    signatures: dict[int, str] = field(default_factory=dict)  # step index -> kind of divergence
    details: dict[int, list[str]] = field(default_factory=dict)  # step index -> readable lines
    real_outcomes: dict[int, Any] = field(default_factory=dict)  # step -> what the real kernel did
    unchecked: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str | None:
        """The first disagreeing step's signature."""
        return self.signatures[min(self.signatures)] if self.signatures else None

    @property
    def primary(self) -> str | None:
        """What this example is counted as: the first disagreeing step's signature, passing over
        PROCESS_BUSY/PROCESS_GONE differences (harness conventions that ride along with others)
        when something else disagrees too. Later disagreements are usually consequences of the
        first one, so they do not make an example new."""
        order = [self.signatures[i] for i in sorted(self.signatures)]
        real = [sig for sig in order if not sig.startswith("PROCESS_")]
        return (real or order or [None])[0]

    def has(self, sig: str) -> bool:
        return self.primary == sig

    def steps_with(self, sig: str) -> list[int]:
        return sorted(i for i, s in self.signatures.items() if s == sig)


def _outcome_class(rec: Any) -> str:
    if rec.blocked and rec.completed_after is None:
        return "BLOCKED"
    if rec.err:
        word = rec.err
    elif rec.ret is None or rec.ret == 0 or rec.ret is True:
        word = "ok"
    else:
        word = "value"
    return f"BLOCKED then {word}" if rec.blocked else word


_VALUE_CALLS = ("getsockopt", "getsockname", "recv", "send", "socket", "accept", "dup", "dup2")


def _real_value(rec: Any) -> Any:
    """The real kernel's result of a step, as an ``expect:`` value."""
    if rec.kind == "observe":
        return rec.obs
    if rec.blocked and rec.completed_after is None:
        return "BLOCKED"
    if rec.err:
        return rec.err
    if rec.ret in (None, 0) and rec.call not in _VALUE_CALLS:
        return "ok"
    return rec.ret


def signature_of(a: Any, b: Any, fields: list[str]) -> str:
    """What kind of divergence this is, independent of where in the scenario it happens."""
    if a.kind == "call":
        ca, cb = _outcome_class(a), _outcome_class(b)
        if ca == cb and ca.startswith("PROCESS_"):  # the same whatever the call
            return f"{ca}: {'/'.join(fields)} differ"
        if ca != cb:
            return f"{a.call}: simulator {ca}, real {cb}"
        return f"{a.call}: {'/'.join(fields)} differ ({ca})"
    what = (a.args or {}).get("what", a.kind)
    if isinstance(a.obs, dict) and isinstance(b.obs, dict):
        keys = sorted(k for k in set(a.obs) | set(b.obs) if a.obs.get(k) != b.obs.get(k))
        return f"observe {what}: {'/'.join(keys)} differ"
    return f"observe {what}: {'/'.join(fields)} differ"


def _wait_orphans_gone(limit: float = 2.0) -> None:
    """Wait (bounded) until no orphaned TCP socket is left on the host.

    sockstat's ``orphan`` is host-wide and the real backend reports it as a delta from the start
    of the run. The namespace of the previous example is dismantled asynchronously, and an orphan
    it left (FIN_WAIT1 waiting for its retransmit timer) can vanish in the middle of the next run,
    which then sees a change it did not cause.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open("/proc/net/sockstat") as f:
                text = f.read()
        except OSError:
            return
        m = re.search(r"^TCP:.*\borphan (\d+)", text, re.M)
        if not m or int(m.group(1)) == 0:
            return
        time.sleep(0.02)


def evaluate(sc: Any) -> Verdict:
    """Run one scenario on both backends and compare (the real backend's errors propagate)."""
    from .compare import compare_traces
    from .engine import SimBackend
    from .real.backend import RealBackend
    from .scenario.runner import run

    try:
        sim = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    except Exception as exc:  # a crash of the model on a valid scenario is a divergence too
        tb = traceback.extract_tb(exc.__traceback__)
        where = tb[-1].name if tb else "?"
        sig = f"simulator raised {type(exc).__name__} in {where}"
        return Verdict(False, {0: sig}, {0: [f"{type(exc).__name__}: {exc}"]})
    if any(getattr(getattr(st, "observe", None), "what", None) == "sockstat" for st in sc.steps):
        _wait_orphans_gone()
    real = run(sc, RealBackend())
    result = compare_traces(sc, sim, real)
    v = Verdict(result.agree, unchecked=list(result.unchecked))
    for d in result.steps:
        if not d.disagree:
            continue
        a, b = sim.steps[d.index], real.steps[d.index]
        fields = [t.split(":", 1)[0] for t in d.disagree]
        v.signatures[d.index] = signature_of(a, b, fields)
        label = (f"{a.proc} {a.call}({', '.join(f'{k}={x}' for k, x in a.args.items())})"
                 if a.kind == "call" else f"observe {a.args}")
        lines = [f"step {d.index}: {label}"] + [f"  {t}" for t in d.disagree]
        if a.rule:
            lines.append(f"  simulator's rule: {a.rule}: {a.cite}")
        v.details[d.index] = lines
        v.real_outcomes[d.index] = _real_value(b)
    return v


# ----------------------------------------------------------------------------- reduction


def _size(doc: dict[str, Any]) -> tuple[int, int]:
    return (len(doc["steps"]), len(to_yaml(doc)))


def _other_candidates(doc: dict[str, Any]):
    """Simpler variants other than a removed step: without one sysctl, one process or process
    option, one optional argument."""
    steps = doc["steps"]
    sysctls = doc["host"].get("sysctls", {})
    for k in list(sysctls):
        if k in ("ip_local_port_range", "tcp_tw_reuse_delay"):
            continue
        yield {**doc, "host": {**doc["host"], "sysctls": {x: v for x, v in sysctls.items() if x != k}}}
    used = {s.get("proc") for s in steps} | {s["observe"].get("proc") for s in steps if "observe" in s}
    for pname, spec in doc["processes"].items():
        if pname not in used and len(doc["processes"]) > 1:
            yield {**doc, "processes": {q: v for q, v in doc["processes"].items() if q != pname}}
        for k in list(spec or {}):
            yield {**doc, "processes": {**doc["processes"], pname: {x: v for x, v in spec.items() if x != k}}}
    for i, st in enumerate(steps):
        for k in ("flags", "nonblock", "backlog", "value", "how", "bytes", "family"):
            if k in st:
                yield {**doc, "steps": steps[:i] + [{x: v for x, v in st.items() if x != k}] + steps[i + 1:]}


def reduce(doc: dict[str, Any], still_fails: Callable[[dict[str, Any]], bool],
           deadline: float) -> dict[str, Any]:
    """Greedy reduction of what hypothesis' shrinking left in: remove each step in turn (last to
    first), then try the simpler variants of :func:`_other_candidates`; repeat while something
    was removed and the deadline (``time.monotonic()``) has not passed."""
    from .scenario.loader import ScenarioError

    def ok(cand: dict[str, Any]) -> bool:
        if not cand["steps"]:
            return False
        try:
            load_document(cand)
        except ScenarioError:
            return False
        return still_fails(cand)

    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        i = len(doc["steps"]) - 1
        while i >= 0 and time.monotonic() < deadline:
            cand = {**doc, "steps": doc["steps"][:i] + doc["steps"][i + 1:]}
            if ok(cand):
                doc, changed = cand, True
            i -= 1
        progress = True
        while progress and time.monotonic() < deadline:
            progress = False
            for cand in _other_candidates(doc):
                if time.monotonic() >= deadline:
                    break
                if ok(cand):
                    doc, changed, progress = cand, True, True
                    break
    return doc


# ----------------------------------------------------------------------------- the campaign


class _Found(Exception):
    """Raised inside the hypothesis test to make it shrink (never escapes the campaign)."""


def _fail(sig: str) -> None:
    # One raise site: hypothesis tells failures apart by where they were raised, and shrinks
    # only towards the same one.
    raise _Found(sig)


@dataclass
class Divergence:
    signature: str
    count: int = 1
    stable: bool = True
    path: str | None = None
    steps: int | None = None
    details: list[str] = field(default_factory=list)
    first_seen: int = 0


@dataclass
class CampaignResult:
    examples: int = 0
    agreed: int = 0
    diverged: int = 0
    divergences: dict[str, Divergence] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s.replace("simulator-", "sim-")
    return s[:limit].strip("-") or "divergence"


def describe(verdict: Verdict, sig: str, seed: int | None, index: int | None) -> str:
    where = f" (seed {seed}, example {index})" if index is not None else ""
    lines = [f"Divergence found by socksim fuzz{where}: {sig}."]
    for i in verdict.steps_with(sig):
        lines += verdict.details.get(i, [])
    return "\n".join(lines)


def write_scenario(doc: dict[str, Any], path: Path, verdict: Verdict | None = None,
                   sig: str | None = None) -> Path:
    """Write a document as a scenario file. With a verdict, the steps that diverge (with signature
    ``sig``, or all of them) get ``expect:`` set to what the real kernel did. The text is
    validated by the scenario loader before it is written."""
    from .scenario.loader import load_text

    doc = dict(doc)
    doc["steps"] = [dict(s) for s in doc["steps"]]
    if verdict is not None:
        for i, value in verdict.real_outcomes.items():
            if sig is not None and verdict.signatures.get(i) != sig:
                continue
            if i < len(doc["steps"]) and value is not None and not (
                    isinstance(value, str) and value.startswith("PROCESS_")):
                doc["steps"][i]["expect"] = value
    text = to_yaml(doc)
    load_text(text, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def campaign(examples: int, seed: int, out: Path | None, *, shrink_seconds: float = 240.0,
             evaluator: Callable[[Any], Verdict] = evaluate, confirm: int = 2,
             log: Callable[[str], None] | None = None, progress_every: int = 10,
             min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS) -> CampaignResult:
    """Run ``examples`` generated scenarios; shrink and write each new kind of divergence.

    An example diverges when any step disagrees; it is counted under its :attr:`Verdict.primary`
    signature. A signature not seen before must reproduce in ``confirm`` runs (else it is recorded
    as unstable, its full scenario written as is, and a later example with it gets another try),
    then hypothesis shrinks the example -- a candidate fails while its primary signature is the
    same -- for at most ``shrink_seconds``, :func:`reduce` removes what is left to remove, and the
    result is confirmed again and written to ``out``. ``evaluator`` runs one validated Scenario
    (by default on both backends); the generation is reproducible from ``seed``.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    say = log or (lambda s: None)
    res = CampaignResult()
    t0 = time.monotonic()
    run_no = 0
    strategy = raw_scenarios(min_steps, max_steps)

    def reproduces(sc: Any, sig: str, times: int) -> Verdict | None:
        last = None
        for _ in range(times):
            w = evaluator(sc)
            if not w.has(sig):
                return None
            last = w
        return last

    while res.examples < examples:
        run_no += 1
        state: dict[str, Any] = {"target": None, "best": None, "generated": 0, "deadline": 0.0,
                                 "index": None}

        def check(raw: Any) -> None:
            doc = interpret(raw, name="fuzz")
            sc = load_document(doc)
            target = state["target"]
            if target is not None:  # shrinking: fail while the same kind of divergence remains
                if time.monotonic() > state["deadline"]:
                    return
                v = evaluator(sc)
                if v.has(target):
                    if _size(doc) < _size(state["best"][0]):
                        state["best"] = (doc, v)
                    _fail(target)
                return
            state["generated"] += 1
            n = res.examples + 1
            v = evaluator(sc)
            res.examples = n  # counted once both runs are done (an interrupt leaves it out)
            if v.agree:
                res.agreed += 1
            else:
                res.diverged += 1
                sig = v.primary
                div = res.divergences.get(sig)
                if div is not None:
                    div.count += 1
                if div is None or (not div.stable and div.count <= UNSTABLE_RETRIES):
                    again = reproduces(sc, sig, max(0, confirm - 1)) if confirm > 1 else v
                    if div is None:
                        div = res.divergences[sig] = Divergence(
                            sig, 1, again is not None, first_seen=n,
                            details=[x for i in v.steps_with(sig) for x in v.details[i]])
                    div.stable = again is not None
                    if again is None:
                        say(f"example {n}: divergence {sig} (did not reproduce: unstable, not shrunk)")
                        if out is not None and div.path is None:
                            p = out / f"unstable-seed{seed}-{n}-{_slug(sig)}.yaml"
                            d = {**doc, "name": f"unstable-{_slug(sig, 40)}",
                                 "description": describe(v, sig, seed, n)}
                            div.path = str(write_scenario(d, p))
                    else:
                        say(f"example {n}: divergence {sig}")
                        state.update(target=sig, best=(doc, v), index=n, found=time.monotonic(),
                                     deadline=time.monotonic() + shrink_seconds)
                        _fail(sig)
            if progress_every and n % progress_every == 0:
                say(f"[{n}/{examples}] {res.agreed} agreed, {res.diverged} diverged "
                    f"({len(res.divergences)} distinct), {time.monotonic() - t0:.0f} s")

        prop = settings(
            max_examples=examples - res.examples, deadline=None, database=None,
            phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=False,
        )(hseed(seed * 1000 + run_no)(given(strategy)(check)))
        try:
            try:
                prop()
            except KeyboardInterrupt:
                raise
            except BaseException:  # _Found, or hypothesis' report about it (e.g. a flaky replay)
                if state["target"] is None:
                    raise
            if state["target"] is not None:
                _finish(state, res, out, seed, evaluator, reproduces, confirm, say)
            elif state["generated"] == 0:
                break  # hypothesis generated nothing more (should not happen)
        except KeyboardInterrupt:
            res.interrupted = True
            break
    res.seconds = time.monotonic() - t0
    return res


def _finish(state: dict[str, Any], res: CampaignResult, out: Path | None, seed: int,
            evaluator: Callable[[Any], Verdict], reproduces: Callable[..., Verdict | None],
            confirm: int, say: Callable[[str], None]) -> None:
    """After hypothesis has shrunk a new divergence: reduce, confirm and write it."""
    sig = state["target"]
    div = res.divergences[sig]
    doc, v = state["best"]
    t = time.monotonic()
    say(f"  shrunk by hypothesis to {len(doc['steps'])} steps in {t - state['found']:.0f} s; "
        "reducing further")
    doc = reduce(doc, lambda d: evaluator(load_document(d)).has(sig), t + 120.0)
    final = reproduces(load_document(doc), sig, max(1, confirm))
    if final is None:
        doc, _ = state["best"]
        final = reproduces(load_document(doc), sig, 1) or v
        say("  the reduced scenario did not reproduce every time; keeping hypothesis' result")
    div.steps = len(doc["steps"])
    div.details = [x for i in final.steps_with(sig) for x in final.details[i]]
    if out is not None:
        d = {**doc, "name": f"fuzz-{_slug(sig, 50)}",
             "description": describe(final, sig, seed, state["index"])}
        div.path = str(write_scenario(d, out / f"seed{seed}-{_slug(sig)}.yaml", final, sig))
        say(f"  minimal scenario ({div.steps} steps, {time.monotonic() - t:.0f} s more): {div.path}")


# ----------------------------------------------------------------------------- the command


def cmd_fuzz(args: argparse.Namespace) -> int:
    def bad(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if args.examples < 1:
        return bad(f"--examples must be at least 1, got {args.examples}")
    if args.shrink_seconds < 0:
        return bad(f"--shrink-seconds must not be negative, got {args.shrink_seconds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return bad(f"--out {args.out}: exists and is not a directory")
    if not out.exists() and not out.parent.exists():
        return bad(f"--out {args.out}: the folder {out.parent} does not exist")
    from .real.backend import RealBackend, RealBackendError

    ok, why = RealBackend.available()
    if not ok:
        return bad(f"cannot run on the real kernel here: {why}")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big") % 1_000_000
    quiet = args.quiet

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    log(f"fuzzing {args.examples} examples, seed {seed} (replay with --seed {seed}); "
        f"divergences go to {out}/")
    try:
        res = campaign(args.examples, seed, out, shrink_seconds=args.shrink_seconds, log=log)
    except RealBackendError as exc:
        return bad(f"the real backend failed: {exc}")
    except OSError as exc:
        return bad(f"{exc.filename or args.out}: cannot write: {exc.strerror}")
    for div in res.divergences.values():
        tag = "" if div.stable else " [unstable]"
        where = f" -> {div.path}" if div.path else ""
        print(f"diverged x{div.count}{tag}: {div.signature}{where}")
    if res.interrupted:
        print("interrupted: the figures cover the examples run so far", file=sys.stderr)
    print(f"{res.examples} examples, {res.agreed} agreed, {res.diverged} diverged")
    if res.interrupted:
        return 130
    return 1 if res.diverged else 0


def register(sub: Any) -> None:
    f = sub.add_parser(
        "fuzz", help="run random scenarios on the simulator and the real kernel, compare",
        description="Differential fuzzing: draw random valid scenarios (2-3 processes, 5-40 calls "
                    "over a tiny port space, random options and sysctls), run each on the simulator "
                    "and on this host's kernel, and compare. Each new kind of divergence is shrunk "
                    "to a minimal scenario and written as YAML. Exit 0 when every example agreed, "
                    "1 when one diverged, 2 for bad input.")
    f.add_argument("--examples", type=int, default=100, metavar="N",
                   help="how many scenarios to generate (default 100)")
    f.add_argument("--seed", type=int, help="seed of the generator (default: random, printed)")
    f.add_argument("--out", default="fuzz-divergences", metavar="DIR",
                   help="where minimal divergent scenarios are written (default ./fuzz-divergences)")
    f.add_argument("--shrink-seconds", type=float, default=240.0, metavar="S",
                   help="time hypothesis spends shrinking each new divergence (default 240); "
                        "a step-by-step reduction of at most 120 s follows")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    f.set_defaults(func=cmd_fuzz)
