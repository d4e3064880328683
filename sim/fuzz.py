"""Differential fuzzing: random valid scenarios on the simulator and on the real kernel.

A scenario is drawn by hypothesis as *raw choices* -- a short list of integers for the host and
one tuple of integers per step -- and :func:`interpret` turns those choices into a scenario
document (plain dicts) while keeping a rough picture of what the sockets are doing, so that most
steps make sense: sockets get options and are bound to a tiny port space, listen, connect to
listening ports, accept, send, receive, shut down and close; processes fork and dup. Because every
step is one element of a list, hypothesis shrinks a scenario by deleting steps, and the
interpretation of the remaining ones adapts.

What legitimately varies between runs is kept out: the ephemeral range is always one or two
ports (so the port an autobind picks is decided by parity, never by the kernel's random offset),
sends are below 1000 bytes with receive buffers large enough that flow control never engages,
``tcp_tw_reuse_delay`` is at its maximum (60 s) so that no TIME_WAIT is recycled because the real
run happened to be slower than the simulated one, and sleeps are rare and short.

Every scenario is emitted as YAML and validated with :func:`sim.scenario.loader.load_text`, so a
divergent one can be written out verbatim and replayed with ``socksim crosscheck``.

The campaign (:func:`campaign`, ``socksim fuzz``) runs each example on both backends and compares
the traces. A divergence is identified by a *signature* (the first disagreeing step's call and the
two outcomes); a new one is confirmed by a second real run (timing-dependent differences are
reported as unstable and not shrunk), shrunk by hypothesis to the smallest example with the same
signature, then reduced further step by step, confirmed again, and written as YAML.
"""

from __future__ import annotations

import argparse
import os
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
STEP_CHOICES = 10  # integers drawn per step
HOST_CHOICES = 24  # integers drawn for the host and processes
MIN_STEPS, MAX_STEPS = 5, 40


class _Choices:
    """Turns a tuple of raw integers into choices; past its end every choice is the first."""

    def __init__(self, raw: tuple[int, ...] | list[int]):
        self.raw = list(raw)
        self.i = 0

    def _next(self) -> int:
        v = self.raw[self.i] if self.i < len(self.raw) else 0
        self.i += 1
        return v

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


def _steps_of(p: _Proc, w: _World, states: tuple[str, ...]) -> list[str]:
    return [n for n, sid in p.names.items() if w.socks[sid].state in states]


# ----------------------------------------------------------------------------- host


def _host(c: _Choices, nprocs_hint: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
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
    n = nprocs_hint or c.pick([2, 3], [3, 2])
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
    kind = c.pick(["call", "observe", "sleep"], [88, 10, 2])
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
    p = c.pick(alive, [1 + len(q.names) for q in alive])
    S = lambda *states: _steps_of(p, w, states)  # noqa: E731
    new, bound = S("new"), S("bound")
    listening, connected = S("listen"), S("connected", "connecting")
    open_ = S("new", "bound", "listen", "connected", "connecting", "closed")
    with_pending = [n for n in listening if w.socks[p.names[n]].queue]
    idle_listen = [n for n in listening if not w.socks[p.names[n]].queue]
    readable = [n for n in connected if w.socks[p.names[n]].rx > 0 or w.socks[p.names[n]].eof]
    weights = {
        "socket": 4 if len(p.names) < 2 else (1.2 if len(p.names) < 3 else (0.3 if len(p.names) < 6 else 0)),
        "setsockopt": 3 if new else (0.4 if open_ else 0),
        "bind": 4 if new else (0.3 if open_ else 0),
        "listen": 4 if bound else (0.5 if new else (0.2 if open_ else 0)),
        "connect": (4 if (new or bound) and w.listening_ports() else (1 if new or bound else 0))
        + (0.2 if connected or listening else 0),
        "accept": 6 if with_pending else (0.6 if idle_listen else (0.1 if open_ else 0)),
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
        port = c.pick(["fixed", 0, "range"], [14, 4, 2])
        if port == "fixed":
            port = c.pick(PORTS, PORT_WEIGHTS)
        elif port == "range":
            port = c.pick(list(port_range))
        step.update(sock=name, addr=addr, port=port)
        if s.state == "new":
            s.state, s.port = "bound", port or None
        return step

    if call == "listen":
        name = sock_from(bound, new) if c.chance(0.92) else sock_from(open_)
        s = w.socks[p.names[name]]
        backlog = c.pick([128, 0, 1, 2, 5, -1], [8, 2, 2, 1, 2, 0.5])
        step["sock"] = name
        if backlog != 128:
            step["backlog"] = backlog
        if s.state in ("new", "bound"):
            s.state = "listen"
            if s.port is None:
                s.port = port_range[1] if port_range[1] != port_range[0] else port_range[0]
            eff = backlog if 0 <= backlog <= w.somaxconn else w.somaxconn
            s.backlog = eff
        return step

    if call == "connect":
        name = sock_from(new + bound) if c.chance(0.9) else sock_from(open_)
        s = w.socks[p.names[name]]
        ports = w.listening_ports()
        if ports and c.chance(0.85):
            port = c.pick(ports)
        else:
            port = c.pick(PORTS, PORT_WEIGHTS)
        addrs = ["127.0.0.1", "127.0.0.2", "0.0.0.0"]
        awts = [20, 1, 0.5]
        if s.family == "AF_INET6":
            addrs.append("::1")
            awts.append(3)
        addr = c.pick(addrs, awts)
        step.update(sock=name, addr=addr, port=port)
        if s.state in ("new", "bound"):
            ls = w.listeners(port)
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


def interpret(raw: tuple[list[int], list[tuple[int, ...]]], name: str = "fuzz") -> dict[str, Any]:
    """The scenario document (plain data, ready for YAML) that the raw choices describe."""
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
        step = _interpret_step(_Choices(r), w, port_range)  # type: ignore[arg-type]
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
    """The hypothesis strategy of raw choices (see :func:`interpret`)."""
    from hypothesis import strategies as st

    ints = st.integers(0, RAW_MAX)
    host = st.lists(ints, min_size=HOST_CHOICES, max_size=HOST_CHOICES)
    step = st.tuples(*([ints] * STEP_CHOICES))
    return st.tuples(host, st.lists(step, min_size=min_steps, max_size=max_steps))


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
    agree: bool
    signature: str | None = None
    details: list[str] = field(default_factory=list)  # the first disagreeing step, readable
    step: int | None = None  # index of the first disagreeing step
    real_outcomes: dict[int, Any] = field(default_factory=dict)  # step -> real result (ret/err/obs)
    unchecked: list[str] = field(default_factory=list)


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


def _real_value(rec: Any) -> Any:
    if rec.kind == "observe":
        return rec.obs
    if rec.blocked and rec.completed_after is None:
        return "BLOCKED"
    if rec.err:
        return rec.err
    return "ok" if rec.ret in (None, 0) and rec.call not in ("getsockopt", "getsockname", "recv", "send") else rec.ret


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
    return f"observe {what}: {'/'.join(fields)} differ"


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
        return Verdict(False, f"simulator raised {type(exc).__name__} in {where}",
                       [f"{type(exc).__name__}: {exc}"])
    real = run(sc, RealBackend())
    result = compare_traces(sc, sim, real)
    if result.agree:
        return Verdict(True, unchecked=list(result.unchecked))
    d = result.first_divergence()
    a, b = sim.steps[d.index], real.steps[d.index]
    fields = [t.split(":", 1)[0] for t in d.disagree]
    sig = signature_of(a, b, fields)
    label = (f"{a.proc} {a.call}({', '.join(f'{k}={v}' for k, v in a.args.items())})"
             if a.kind == "call" else f"observe {a.args}")
    details = [f"step {d.index}: {label}"] + [f"  {t}" for t in d.disagree]
    if a.rule:
        details.append(f"  simulator's rule: {a.rule}: {a.cite}")
    outs = {i: _real_value(real.steps[i]) for i in result.disagreeing if i < len(real.steps)}
    return Verdict(False, sig, details, d.index, outs, list(result.unchecked))


# ----------------------------------------------------------------------------- reduction


def _size(doc: dict[str, Any]) -> tuple[int, int]:
    return (len(doc["steps"]), len(to_yaml(doc)))


def _candidates(doc: dict[str, Any]):
    """Smaller variants of a document: without one step, one sysctl, one process option."""
    steps = doc["steps"]
    for i in range(len(steps) - 1, -1, -1):
        yield {**doc, "steps": steps[:i] + steps[i + 1:]}
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
    for i, st in enumerate(steps):  # simpler arguments
        for k in ("flags", "nonblock", "backlog", "family", "value", "how", "bytes"):
            if k in st and not (k == "family" and any(o.get("opt") == "IPV6_V6ONLY" for o in steps)):
                yield {**doc, "steps": steps[:i] + [{x: v for x, v in st.items() if x != k}] + steps[i + 1:]}


def reduce(doc: dict[str, Any], still_fails: Callable[[dict[str, Any]], bool],
           deadline: float) -> dict[str, Any]:
    """Greedy one-step-at-a-time reduction (what hypothesis's shrinking left in), until no smaller
    valid variant still fails or the deadline (time.monotonic()) passes."""
    from .scenario.loader import ScenarioError

    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for cand in _candidates(doc):
            if time.monotonic() >= deadline:
                break
            if not cand["steps"]:
                continue
            try:
                load_document(cand)
            except ScenarioError:
                continue
            if still_fails(cand):
                doc = cand
                changed = True
                break
    return doc


# ----------------------------------------------------------------------------- the campaign


class _Found(Exception):
    """Raised inside the hypothesis test to make it shrink (never escapes the campaign)."""


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


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s.replace("simulator-", "sim-")
    return s[:limit].strip("-") or "divergence"


def describe(doc: dict[str, Any], verdict: Verdict, seed: int | None, index: int) -> str:
    lines = [f"Divergence found by socksim fuzz (seed {seed}, example {index}): {verdict.signature}."]
    lines += verdict.details
    return "\n".join(lines)


def write_scenario(doc: dict[str, Any], path: Path, verdict: Verdict | None = None,
                   expectations: bool = True) -> Path:
    """Write a (divergent) document as a scenario file; with ``expectations`` the disagreeing steps
    get ``expect:`` set to what the real kernel did. The file is validated before it is written."""
    doc = dict(doc)
    doc["steps"] = [dict(s) for s in doc["steps"]]
    if verdict is not None and expectations:
        for i, value in verdict.real_outcomes.items():
            if i < len(doc["steps"]) and value is not None and not (
                    isinstance(value, str) and value.startswith("PROCESS_")):
                doc["steps"][i]["expect"] = value
    text = to_yaml(doc)
    from .scenario.loader import load_text

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

    ``confirm``: how many runs a divergence must reproduce in (1 = no re-run) before it is shrunk
    and written; one that does not is recorded as unstable. ``evaluator`` runs one validated
    Scenario (the default runs both backends).
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    say = log or (lambda s: None)
    res = CampaignResult()
    t0 = time.monotonic()
    run_no = 0
    strategy = raw_scenarios(min_steps, max_steps)

    while res.examples < examples:
        run_no += 1
        state: dict[str, Any] = {"target": None, "best": None, "generated": 0, "deadline": None,
                                 "first_index": None, "verdict": None}

        def check(raw: Any) -> None:
            doc = interpret(raw, name="fuzz")
            sc = load_document(doc)
            target = state["target"]
            if target is not None:  # shrinking: fail only with the same kind of divergence
                if time.monotonic() > state["deadline"]:
                    return
                v = evaluator(sc)
                if not v.agree and v.signature == target:
                    if state["best"] is None or _size(doc) < _size(state["best"][0]):
                        state["best"] = (doc, v)
                    raise _Found(target)
                return
            state["generated"] += 1
            res.examples += 1
            n = res.examples
            v = evaluator(sc)
            if v.agree:
                res.agreed += 1
            else:
                res.diverged += 1
                known = res.divergences.get(v.signature)
                if known is not None:
                    known.count += 1
                else:
                    stable = all(not (w := evaluator(sc)).agree and w.signature == v.signature
                                 for _ in range(max(0, confirm - 1)))
                    div = Divergence(v.signature, 1, stable, details=v.details, first_seen=n)
                    res.divergences[v.signature] = div
                    say(f"example {n}: divergence {v.signature}"
                        + ("" if stable else " (did not reproduce: unstable, not shrunk)"))
                    if not stable:
                        if out is not None:
                            p = out / f"unstable-seed{seed}-{n}-{_slug(v.signature)}.yaml"
                            d = {**doc, "name": f"unstable-{n}",
                                 "description": describe(doc, v, seed, n)}
                            div.path = str(write_scenario(d, p, v, expectations=False))
                    else:
                        state.update(target=v.signature, best=(doc, v), first_index=n,
                                     deadline=time.monotonic() + shrink_seconds, verdict=v)
                        raise _Found(v.signature)
            if progress_every and n % progress_every == 0:
                say(f"[{n}/{examples}] {res.agreed} agreed, {res.diverged} diverged "
                    f"({len(res.divergences)} distinct), {time.monotonic() - t0:.0f} s")

        prop = settings(
            max_examples=examples - res.examples, deadline=None, database=None,
            derandomize=False, phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
            print_blob=False,
        )(hseed(seed * 1000 + run_no)(given(strategy)(check)))
        try:
            prop()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # _Found, or hypothesis' report about it (flaky replays)
            if state["target"] is None:
                raise
            del exc
        if state["target"] is not None:
            sig = state["target"]
            div = res.divergences[sig]
            doc, v = state["best"]
            say(f"  shrunk by hypothesis to {len(doc['steps'])} steps; reducing further")

            def still_fails(d: dict[str, Any]) -> bool:
                w = evaluator(load_document(d))
                return not w.agree and w.signature == sig

            doc = reduce(doc, still_fails, state["deadline"] + 60.0)
            # confirm the result; keep the first document that reproduces every time
            final_v = None
            for _ in range(max(1, confirm)):
                w = evaluator(load_document(doc))
                if w.agree or w.signature != sig:
                    final_v = None
                    break
                final_v = w
            if final_v is None:
                doc, final_v = state["best"]
                say("  the reduced scenario did not reproduce every time; keeping hypothesis' result")
            div.steps = len(doc["steps"])
            div.details = final_v.details
            if out is not None:
                name = f"fuzz-{_slug(sig, 50)}"
                d = {**doc, "name": name, "description": describe(doc, final_v, seed, state["first_index"])}
                path = out / f"seed{seed}-{_slug(sig)}.yaml"
                div.path = str(write_scenario(d, path, final_v))
                say(f"  minimal scenario ({div.steps} steps): {div.path}")
        if state["generated"] == 0 and state["target"] is None:
            break  # hypothesis generated nothing more (should not happen)
    res.seconds = time.monotonic() - t0
    return res


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RealBackendError as exc:
        return bad(f"the real backend failed: {exc}")
    for div in res.divergences.values():
        tag = "" if div.stable else " [unstable]"
        where = f" -> {div.path}" if div.path else ""
        print(f"diverged x{div.count}{tag}: {div.signature}{where}")
    print(f"{res.examples} examples, {res.agreed} agreed, {res.diverged} diverged")
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
                   help="time spent shrinking each new divergence (default 240)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    f.set_defaults(func=cmd_fuzz)
