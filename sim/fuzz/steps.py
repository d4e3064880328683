"""Raw choices -> scenario steps that mostly make sense, and the scenario as YAML."""

from __future__ import annotations

from typing import Any

import yaml

from .world import (
    MAX_STEPS, MIN_STEPS, PORTS, PORT_WEIGHTS, RECV_SIZES, SEED_MAX, SEND_SIZES, SLEEPS, _Choices,
    _Proc, _World, _host, _names_in, _overlap,
)


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
    from ..scenario.loader import load_text

    return load_text(to_yaml(doc), name)
