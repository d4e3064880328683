"""networkx views of the model: the kernel object graph at any step, and the TCP state diagram.

The **object graph** shows what the kernel holds after a step, the way a learner should picture
it::

    process --fd table--> fd 3 --> open file (struct file, refcount) --> TCB (struct sock)
                                                                         |--> send buffer
                                                                         |--> receive buffer
                                                                         |--> accept queue --> queued TCBs
    TCB / TIME_WAIT entry --owns--> port (bind bucket)        buffers --charged to--> TCP memory

so that, for example, fd 3 in a parent and in its forked child point to one open file, and a
TIME_WAIT entry keeps owning port 8080 after the process that made it has exited.

The graph is taken from the live kernel of a simulator run: :func:`record` re-runs a scenario on
a :class:`~sim.engine.SimBackend` and snapshots ``backend.kernel`` before and after every trace
record (through its public tables), and subscribes to the kernel's events
(sim/kernel/tracepoints.py) to note every TCP state transition with the record during which it
happened. No kernel function is wrapped or replaced.

The **state diagram** is generated from :data:`sim.kernel.tcp_states.TRANSITIONS` -- never drawn by
hand -- and can highlight the path one connection took.

Both export as DOT, and as SVG: rendered by Graphviz's ``dot`` when it is installed, else by a
small pure-Python layered layout (:func:`layout_svg`), so an SVG is always available offline.

Command line (regenerates the documentation figure)::

    python -m sim.graph state-diagram docs/state-diagram     # writes .dot and .svg
"""

from __future__ import annotations

import functools
import html
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx

from .engine import SimBackend
from .kernel import tracepoints as tp
from .kernel.tcp_states import TRANSITIONS, State
from .kernel.timewait import TimeWaitSock

# Kernel state writes the object graph does not draw on a connection's track: the full socket's
# hand-over to its TIME_WAIT minisock (the minisock carries the track on), and the creation of a
# request (drawn from the listener, see _on_request).
_UNSHOWN_EVENTS = ("tw_hashdance", "conn_request")
from .trace import StepRecord, Trace

# Past this many objects of one kind, a snapshot shows the first ones and one summary node (a
# load step can leave thousands of TIME_WAIT entries).
MAX_OBJECTS = 40

STATE_FILL = {
    "LISTEN": "#d8f0d8", "ESTABLISHED": "#d6e6ff", "SYN_SENT": "#fff0c2", "SYN_RECV": "#fff0c2",
    "FIN_WAIT1": "#ffe2c8", "FIN_WAIT2": "#ffe2c8", "CLOSING": "#ffe2c8", "CLOSE_WAIT": "#f3e0ff",
    "LAST_ACK": "#f3e0ff", "TIME_WAIT": "#ffd3d3", "CLOSE": "#ececec",
}


# =============================================================================== recording a run


@dataclass
class Transition:
    """One TCP state change of one connection, and the trace record during which it happened."""

    step: int
    time: float
    track: str  # node id of the connection's TCB ("tcb3")
    src: str
    event: str
    dst: str
    note: str = ""
    seq: int = 0  # order among the transitions and events of one run


@dataclass
class Recording:
    """A scenario re-run with the kernel snapshotted around every trace record.

    ``graphs[i]`` is the object graph *before* record ``i``; ``graphs[i + 1]`` the graph after it
    (just before the next record starts: for a ``sleep`` that includes the time that passed).
    """

    trace: Trace
    graphs: list[nx.DiGraph] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)  # tcb id -> description
    step_sock: dict[int, str] = field(default_factory=dict)  # record -> tcb id of its socket argument
    effects: dict[int, str] = field(default_factory=dict)  # record -> visible side effect
    step_of: list[tuple[int, int | None]] = field(default_factory=list)  # record -> (scenario step, via ordinal)
    events: list[tuple[int, float, str]] = field(default_factory=list)  # (record, time, text)
    event_seq: list[int] = field(default_factory=list)  # order of each event among transitions
    load_rules: dict[int, dict[str, str]] = field(default_factory=dict)  # load record -> error -> rule

    def before(self, i: int) -> nx.DiGraph:
        return self.graphs[i] if 0 <= i < len(self.graphs) else nx.DiGraph()

    def after(self, i: int) -> nx.DiGraph:
        return self.before(i + 1)

    def path(self, track: str, upto: int | None = None) -> list[Transition]:
        return [t for t in self.transitions if t.track == track and (upto is None or t.step <= upto)]


class _Probe(SimBackend):
    """A SimBackend that lets a :class:`_Recorder` watch its kernel (nothing else changes)."""

    def __init__(self, recorder: _Recorder, seed: int = 0, personality: str | None = None):
        try:
            super().__init__(seed=seed, personality=personality)
        except TypeError:  # an engine without personalities
            super().__init__(seed=seed)
        self.recorder = recorder

    def start(self, scenario: dict[str, Any]) -> None:
        super().start(scenario)
        self.recorder.attach(self)

    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> Any:
        self.recorder.begin(index, proc, args.get("sock"))
        return super().call(index, proc, call, args)

    def observe(self, obs: dict[str, Any]) -> Any:
        self.recorder.begin(None, obs.get("proc"), obs.get("sock"))
        return super().observe(obs)

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        self.recorder.begin(index, None, None)
        self.recorder.load_index = index
        try:
            return super().load(index, spec)
        finally:
            self.recorder.load_index = None

    def close(self) -> dict[str, Any]:
        self.recorder.finish()
        return super().close()


class _Recorder:
    """Watches one run: snapshots, transitions, the socket each record used, its effect."""

    def __init__(self, scenario: Any, graphs: bool = True):
        self.sc = scenario
        self.want_graphs = graphs
        self.rec = Recording(trace=Trace(scenario=scenario.name, backend="sim"))
        self.recs: list[StepRecord] = []
        self.backend: _Probe | None = None
        self.k: Any = None
        self.ids: dict[int, tuple[Any, str]] = {}
        self.counters: dict[str, int] = {}
        self.in_record = False
        self.captured = -1  # the last record whose "before" snapshot exists
        self.step_objs: dict[int, Any] = {}
        self.step_fds: dict[int, tuple[str, int]] = {}
        self.known: dict[str, Any] = {}  # tcb id -> Sock (kept alive, so ids stay unique)
        self.tw_from: dict[str, str] = {}  # tw id -> tcb id
        self.last_state: dict[str, str] = {}
        self.load_index: int | None = None
        self.scenario_pos = -1
        self.via_count = 0
        self.seq = 0

    # ------------------------------------------------------------------ identity
    def oid(self, obj: Any, prefix: str) -> str:
        hit = self.ids.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        n = self.counters[prefix] = self.counters.get(prefix, 0) + 1
        label = f"{prefix}{n}"
        self.ids[id(obj)] = (obj, label)
        if prefix == "tcb":
            self.known[label] = obj
        return label

    # ------------------------------------------------------------------ events
    def attach(self, backend: _Probe) -> None:
        """Subscribe to the kernel's events (sim/kernel/tracepoints.py): nothing of it is patched."""
        self.backend, self.k = backend, backend.kernel
        self.k.subscribe(self.on_event)

    def on_event(self, ev: Any) -> None:
        handler = self._handlers.get(ev.__class__)
        if handler is not None:
            handler(self, ev)

    def _trans(self, t: Transition) -> None:
        self.seq += 1
        t.seq = self.seq
        self.rec.transitions.append(t)

    def _event(self, e: tuple[int, float, str]) -> None:
        self.seq += 1
        self.rec.events.append(e)
        self.rec.event_seq.append(self.seq)

    def _step_now(self) -> int:
        n = len(self.recs)
        return n if self.in_record else max(0, n - 1)

    def _now(self) -> float:
        return float(self.backend.now()) if self.backend else 0.0

    def _track(self, sk: Any) -> str:
        return self.oid(sk, "tcb")

    def _add(self, sk: Any, src: Any, event: str, dst: Any, note: str = "") -> None:
        s, d = _state_name(src), _state_name(dst)
        tid = self._track(sk)
        self._trans(Transition(self._step_now(), round(self._now(), 9), tid, s, event, d, note))
        self.last_state[tid] = d

    def _on_set_state(self, ev: tp.InetSockSetState) -> None:
        sk, event = ev.sk, ev.event
        if isinstance(sk, TimeWaitSock):
            self._on_minisock_state(ev)
            return
        if event in _UNSHOWN_EVENTS:
            return
        self._add(sk, ev.old, event, ev.new)

    def _on_minisock_state(self, ev: tp.InetSockSetState) -> None:
        tw = ev.sk
        tid = self.tw_from.get(self.oid(tw, "tw"))
        sk = self.known.get(tid) if tid is not None else None
        if sk is None:
            return
        if ev.event == "tw_recycle":
            self._add(sk, ev.old, "recycled", ev.new, "recycled by connect() (tcp_twsk_unique)")
        elif ev.new == ev.old:
            self._add(sk, ev.old, ev.event, ev.new, "the TIME_WAIT timer restarts")
        else:
            self._add(sk, ev.old, ev.event, ev.new)
        if ev.event in ("time_wait_timeout", "fin_wait2_timeout"):
            self._event((self._step_now(), self._now(),
                         f"TIME_WAIT {tw.laddr}:{tw.lport} -> {tw.raddr}:{tw.rport} expired"))

    def _on_request(self, ev: tp.RequestQueued) -> None:
        if ev.stage != "request":
            return
        req = ev.req
        tid = self._track(req)
        self._trans(Transition(
            self._step_now(), round(self._now(), 9), tid, "LISTEN", "rcv_syn",
            _state_name(req.tcp_state), note="the listener creates a request for the SYN"))
        self.last_state[tid] = _state_name(req.tcp_state)
        self.rec.tracks.setdefault(tid, {})["parent"] = self._track(ev.listener)

    def _on_time_wait(self, ev: tp.InetTwskEntered) -> None:
        self.tw_from[self.oid(ev.tw, "tw")] = self._track(ev.sk)
        if _state_name(ev.substate) == "FIN_WAIT2":
            key = ev.sk.key()
            self._event((self._step_now(), self._now(),
                         f"orphaned FIN_WAIT2 {key[0]}:{key[1]} becomes a timewait minisock"))

    def _on_timer(self, ev: tp.TimerFired) -> None:
        obj = ev.obj
        if ev.kind != "syn" or not ev.live:
            return
        who = self.rec.tracks.get(self._track(obj), {}).get("label") or "a connection"
        retries = obj.syn_retries or self.k.sysctls.get("tcp_syn_retries", 6)
        what = (f"no answer yet, the SYN is retransmitted (retry {obj.syn_tries + 1} of {retries})"
                if obj.syn_tries < retries else f"no answer after {retries} retries: the connection attempt gives up")
        self._event((self._step_now(), self._now(), f"{who}: {what}"))

    def _on_syscall_exit(self, ev: tp.SyscallExit) -> None:
        if self.load_index is not None and ev.err:
            self.rec.load_rules.setdefault(self.load_index, {}).setdefault(ev.err, ev.rule or "")

    _handlers: dict[type, Any] = {
        tp.InetSockSetState: _on_set_state, tp.RequestQueued: _on_request, tp.InetTwskEntered: _on_time_wait,
        tp.TimerFired: _on_timer, tp.SyscallExit: _on_syscall_exit,
    }

    # ------------------------------------------------------------------ around records
    def begin(self, index: int | None, proc: str | None, fd: Any) -> None:
        """A record starts using the backend: snapshot the state before it (once)."""
        i = len(self.recs)
        if self.captured < i:
            self._capture(i)
        self.in_record = True
        if proc is not None and isinstance(fd, int) and fd >= 0 and self.k is not None:
            p = self.k.procs.get(proc)
            f = p.files.fds.get(fd) if p is not None else None
            sk = getattr(f, "sock", None)
            if sk is not None and i not in self.step_objs:
                self.step_objs[i] = sk
                self.step_fds[i] = (proc, fd)
                self.rec.step_sock[i] = self._track(sk)

    def on_step(self, rec: StepRecord) -> None:
        i = rec.index
        if self.captured < i:
            self._capture(i)  # a record that never touched the backend changed nothing in it
        self.recs.append(rec)
        self.in_record = False
        if rec.via:
            self.via_count += 1
            self.rec.step_of.append((max(self.scenario_pos, 0), self.via_count))
        else:
            self.scenario_pos += 1
            self.via_count = 0
            self.rec.step_of.append((self.scenario_pos, None))
        if rec.kind == "call" and rec.call in ("socket", "accept", "dup", "dup2") and rec.err is None \
                and isinstance(rec.ret, int) and rec.ret >= 0:
            p = self.k.procs.get(rec.proc)
            f = p.files.fds.get(rec.ret) if p is not None else None
            if getattr(f, "sock", None) is not None:
                self.step_objs.setdefault(i, f.sock)
                self.rec.step_sock.setdefault(i, self._track(f.sock))
                self.step_fds.setdefault(i, (rec.proc, rec.ret))

    def finish(self) -> None:
        n = len(self.recs)
        if self.captured < n:
            self._capture(n)

    def _capture(self, i: int) -> None:
        """The state before record ``i`` (= after record ``i - 1``)."""
        self.captured = i
        if self.want_graphs:
            self._note_origins(i)
        if i > 0:
            self.rec.effects[i - 1] = self._effect(i - 1)
        if self.want_graphs:
            self.rec.graphs.append(self.snapshot())

    # ------------------------------------------------------------------ names and origins
    def names(self) -> dict[str, dict[int, str]]:
        """fd -> scenario name, per process, as the runner bound them so far."""
        names: dict[str, dict[str, int]] = {p: {} for p in self.sc.processes}
        for r in self.recs:
            if r.kind != "call":
                continue
            nm = r.args.get("as")
            if r.call == "fork":
                if r.err is None and nm:
                    names[nm] = dict(names.get(r.proc, {}))
            elif nm and r.err is None and isinstance(r.ret, int) and r.ret >= 0 and not (
                    r.blocked and r.completed_after is None):
                names.setdefault(r.proc, {})[nm] = r.ret
        rev: dict[str, dict[int, str]] = {}
        for p, m in names.items():
            for nm, fd in m.items():
                rev.setdefault(p, {})[fd] = nm
        return rev

    def _note_origins(self, i: int) -> None:
        """Remember, for every TCB in an fd table, which process and name first held it."""
        if self.k is None:
            return
        rev = self.names()
        last = self.recs[-1] if self.recs else None
        for pname, p in self.k.procs.items():
            for fd, f in sorted(p.files.fds.items()):
                sk = getattr(f, "sock", None)
                if sk is None:
                    continue
                tid = self._track(sk)
                info = self.rec.tracks.setdefault(tid, {})
                if "proc" in info:
                    continue
                name = rev.get(pname, {}).get(fd)
                info.update(proc=pname, fd=fd, name=name, step=(last.index if last else 0),
                            call=(last.call if last else None))
                if "parent" in info:
                    info["role"] = "accepted"
        for tid, sk in self.known.items():
            info = self.rec.tracks.setdefault(tid, {})
            role = info.get("role")
            if sk.tcp_state == State.LISTEN:
                role = "listener"
            elif role in (None, "socket", "request"):
                if "parent" in info:
                    role = "accepted" if "proc" in info else "request"
                elif sk.raddr is not None:
                    role = "client"
                else:
                    role = role or "socket"
            info["role"] = role
            if "parent" in info and "proc" not in info:
                info["parent_label"] = self.rec.tracks.get(info["parent"], {}).get("label")
            info["label"] = track_label(info, tid)

    # ------------------------------------------------------------------ effects
    def _effect(self, i: int) -> str:
        """What a call visibly did beyond its return value (compared by the what-if engine)."""
        r = self.recs[i] if i < len(self.recs) else None
        if r is None or r.kind != "call" or self.k is None:
            return ""
        sk = self.step_objs.get(i)
        if r.call == "socket" and sk is not None and r.err is None:
            fam = "an IPv6" if getattr(sk, "family", 4) == 6 else "an IPv4"
            return f"{fam} {sk.kind.upper()} socket"
        if sk is None or getattr(sk, "kind", "") != "tcp":
            return ""
        if r.call in ("close", "closesocket", "shutdown", "exit", "connect", "dup2"):
            return self._fate(sk)
        return ""

    def _fate(self, sk: Any) -> str:
        k = self.k
        if sk in getattr(k, "socks", ()):
            st = _state_name(sk.tcp_state)
            return "connection " + st if sk.raddr else ("listening" if st == "LISTEN" else "socket " + st)
        tw = k.ehash.get(sk.key()) if sk.raddr else None
        if isinstance(tw, TimeWaitSock):
            return f"connection {tw.shown_state}"
        return "socket released"

    # ------------------------------------------------------------------ the object graph
    def snapshot(self) -> nx.DiGraph:
        return kernel_graph(self.k, self._now(), self.names(), self)


def _state_name(st: Any) -> str:
    try:
        return State(int(st)).name
    except (ValueError, TypeError):
        return str(st)


def track_label(info: dict[str, Any], tid: str) -> str:
    """'listener srv of server (fd 3)', 'accepted connection conn of server (fd 4)', 'socket c of client (fd 3)'."""
    proc, name, fd = info.get("proc"), info.get("name"), info.get("fd")
    role = info.get("role", "socket")
    noun = {"listener": "listener", "accepted": "accepted connection", "client": "connection",
            "request": "connection request"}.get(role, "socket")
    if proc is None:
        parent = info.get("parent_label")
        return f"connection queued on the {parent} (not accepted yet)" if parent else f"{noun} {tid} (no fd yet)"
    return f"{noun} {name} of {proc} (fd {fd})" if name else f"{noun} fd {fd} of {proc}"


def record(scenario: Any, seed: int = 0, graphs: bool = True, personality: str | None = None) -> Recording:
    """Run ``scenario`` on the simulator and record the kernel around every trace record."""
    from .scenario.runner import run

    rec = _Recorder(scenario, graphs=graphs)
    backend = _Probe(rec, seed=seed, personality=personality)
    kw: dict[str, Any] = {"on_step": rec.on_step}
    if personality is not None:
        kw["personality"] = personality
    rec.rec.trace = run(scenario, backend, seed=seed, **kw)
    rec.finish()
    for tid, info in rec.rec.tracks.items():
        info["label"] = track_label(info, tid)
    return rec.rec


# ------------------------------------------------------------------------------- graph builder


def addr_text(a: Any, p: Any) -> str:
    if a is None:
        return "*"
    a = str(a)
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def kernel_graph(k: Any, now: float, names: dict[str, dict[int, str]] | None = None,
                 rec: _Recorder | None = None) -> nx.DiGraph:
    """The kernel's object graph as it is now (plain data in node and edge attributes)."""
    g = nx.DiGraph(time=round(now, 9))
    names = names or {}
    oid = rec.oid if rec is not None else _fallback_ids()
    tracks = rec.rec.tracks if rec is not None else {}

    def tcb_id(sk: Any) -> str:
        return oid(sk, "tcb")

    socks: dict[str, Any] = {}
    holders: dict[str, list[str]] = {}
    for pname, p in k.procs.items():
        alive = getattr(p, "alive", True)
        pid = f"proc:{pname}"
        fds = getattr(p.files, "fds", {})
        std = sorted(fd for fd, f in fds.items() if getattr(f, "sock", None) is None)
        g.add_node(pid, kind="process", name=pname, pid=getattr(p, "pid", 0), uid=getattr(p, "uid", 0),
                   alive=alive, nofile=getattr(p.files, "nofile", 0), nfds=len(fds),
                   std=std, cluster=pname)
        if std:
            sid = f"std:{pname}"
            g.add_node(sid, kind="std", proc=pname, fds=std, cluster=pname)
            g.add_edge(pid, sid, rel="fd table")
        for fd, f in sorted(fds.items()):
            sk = getattr(f, "sock", None)
            if sk is None:
                continue
            fid = f"fd:{pname}:{fd}"
            g.add_node(fid, kind="fd", proc=pname, fd=fd, name=names.get(pname, {}).get(fd), cluster=pname)
            g.add_edge(pid, fid, rel="fd table")
            file_id = oid(f, "file")
            holders.setdefault(file_id, []).append(f"{pname}:{fd}")
            if file_id not in g:
                g.add_node(file_id, kind="file", refs=getattr(f, "f_count", 1),
                           nonblock=bool(getattr(f, "nonblock", False)))
            g.add_edge(fid, file_id, rel="refers to")
            t = tcb_id(sk)
            socks[t] = sk
            g.add_edge(file_id, t, rel="socket")
    for file_id, hs in holders.items():
        g.nodes[file_id]["holders"] = hs
    extra = list(getattr(k, "socks", ()))
    for lst in getattr(k, "listeners", {}).values():
        extra.extend(lst)
    for o in getattr(k, "ehash", {}).values():
        if not isinstance(o, TimeWaitSock):
            extra.append(o)
    for b in list(getattr(k, "bhash", None).buckets.values()) if getattr(k, "bhash", None) else []:
        extra.extend(o for o in b.owners if not isinstance(o, TimeWaitSock))
    for sk in sorted(extra, key=lambda s: getattr(s, "id", 0)):
        socks.setdefault(tcb_id(sk), sk)
    shown = 0
    hidden = 0
    for t, sk in socks.items():
        if t not in g and shown >= MAX_OBJECTS:
            hidden += 1
            continue
        shown += 1
        _add_tcb(g, t, sk, tracks.get(t, {}))
    if hidden:
        g.add_node("more:tcb", kind="more", what="TCBs", count=hidden)
    # listeners: accept queues and pending requests
    for t, sk in socks.items():
        if t not in g:
            continue
        if getattr(sk, "tcp_state", None) == State.LISTEN:
            q = list(getattr(sk, "accept_q", ()))
            qid = f"acceptq:{t}"
            g.add_node(qid, kind="acceptq", queued=len(q), backlog=getattr(sk, "backlog", 0),
                       limit=getattr(sk, "backlog", 0) + 1, overflows=getattr(sk, "listen_overflows", 0))
            g.add_edge(t, qid, rel="accept queue")
            for child in q:
                c = tcb_id(child)
                if c in g:
                    g.add_edge(qid, c, rel="queued")
        parent = getattr(sk, "parent", None)
        if getattr(sk, "is_request", False) and parent is not None and tcb_id(parent) in g:
            g.add_edge(tcb_id(parent), t, rel="SYN_RECV request")
    # TIME_WAIT (and FIN_WAIT2) minisocks
    tws = [o for o in getattr(k, "ehash", {}).values() if isinstance(o, TimeWaitSock)]
    fires = _timer_dues(rec.backend if rec is not None else None) if tws else {}
    for n, tw in enumerate(tws):
        if n >= MAX_OBJECTS:
            g.add_node("more:tw", kind="more", what="TIME_WAIT entries", count=len(tws) - MAX_OBJECTS)
            break
        w = oid(tw, "tw")
        src = rec.tw_from.get(w) if rec is not None else None
        info = tracks.get(src, {}) if src else {}
        proc = info.get("proc")
        pobj = k.procs.get(proc) if proc else None
        g.add_node(w, kind="timewait", state=tw.shown_state, laddr=tw.laddr, lport=tw.lport,
                   raddr=tw.raddr, rport=tw.rport, reuse=bool(tw.reuse), reuseport=bool(tw.reuseport),
                   entry=round(tw.entry, 6), expires=round(fires.get(id(tw), tw.expires), 6),
                   nominal=round(tw.expires, 6), remaining=round(fires.get(id(tw), tw.expires) - now, 6), track=src,
                   origin=info.get("label"), origin_proc=proc,
                   origin_alive=(getattr(pobj, "alive", True) if pobj is not None else None))
    # port tables
    for proto, table in (("tcp", getattr(k, "bhash", None)), ("udp", getattr(k, "udp_ports", None))):
        if table is None:
            continue
        for n, (port, b) in enumerate(sorted(table.buckets.items())):
            if n >= MAX_OBJECTS:
                g.add_node(f"more:{proto}port", kind="more", what=f"{proto.upper()} ports",
                           count=len(table.buckets) - MAX_OBJECTS)
                break
            pid = f"port:{proto}:{port}"
            g.add_node(pid, kind="port", proto=proto, port=port, owners=len(b.owners),
                       bind_owner=bool(getattr(b, "has_bind_owner", lambda: True)()))
            for o in b.owners:
                oid_ = oid(o, "tw") if isinstance(o, TimeWaitSock) else tcb_id(o)
                if oid_ in g:
                    g.add_edge(oid_, pid, rel="owns")
    # memory
    pool = getattr(k, "pool", None)
    if pool is not None:
        limits = ([pool.low, pool.pressure, pool.high] if hasattr(pool, "high")
                  else [getattr(pool, "limit", 0)])
        g.add_node("pool", kind="pool", bytes=pool.bytes, pages=getattr(pool, "pages", (pool.bytes + 4095) // 4096),
                   tcp_mem=limits, peak=getattr(pool, "peak", 0), pressure=bool(getattr(pool, "in_pressure", False)),
                   name=("nonpaged pool" if not hasattr(pool, "high") else "TCP memory"))
        for n, d in list(g.nodes(data=True)):
            if d["kind"] == "buffer" and d["bytes"] > 0:
                g.add_edge(n, "pool", rel="charged to")
    tw_table = getattr(k, "tw", None)
    g.graph.update(
        sockstat=k.sockstat() if hasattr(k, "sockstat") else {},
        tw_count=getattr(tw_table, "count", 0), tw_max=getattr(tw_table, "max_buckets", 0),
        mib=dict(getattr(k, "mib", {})),
        sysctls={key: k.sysctls.get(key) for key in (
            "ip_local_port_range", "tcp_tw_reuse", "tcp_max_tw_buckets", "somaxconn", "tcp_mem",
            "tcp_fin_timeout", "tcp_timestamps")} if hasattr(k, "sysctls") else {},
        tw_len=getattr(k, "TIME_WAIT_LEN", 60.0),
        personality=getattr(k, "personality", "linux"),
    )
    return g


def _timer_dues(backend: Any) -> dict[int, float]:
    """When each pending kernel timer really fires (the engine rounds expiries as the timer wheel
    does), by id of the timer's object; only entries of the object's current generation count."""
    out: dict[int, float] = {}
    queues = getattr(getattr(backend, "timers", None), "queues", None)
    if not isinstance(queues, dict):
        return out
    for q in queues.values():
        for entry in list(q):
            try:
                due, (kind, obj, gen) = entry
            except (TypeError, ValueError):
                continue
            if getattr(obj, "gen", gen) == gen:
                out[id(obj)] = max(float(due), out.get(id(obj), 0.0))
    return out


def _fallback_ids() -> Any:
    table: dict[int, tuple[Any, str]] = {}
    counters: dict[str, int] = {}

    def oid(obj: Any, prefix: str) -> str:
        hit = table.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        counters[prefix] = counters.get(prefix, 0) + 1
        table[id(obj)] = (obj, f"{prefix}{counters[prefix]}")
        return table[id(obj)][1]

    return oid


def _add_tcb(g: nx.DiGraph, t: str, sk: Any, info: dict[str, Any]) -> None:
    kind = getattr(sk, "kind", "tcp")
    st = _state_name(sk.tcp_state) if kind == "tcp" else kind.upper()
    g.add_node(t, kind="tcb", proto=kind, family=getattr(sk, "family", 4), state=st,
               laddr=sk.laddr, lport=sk.lport, raddr=sk.raddr, rport=sk.rport,
               reuse=bool(getattr(sk, "reuse", False)), reuseport=bool(getattr(sk, "reuseport", False)),
               linger=list(getattr(sk, "linger", (0, 0))), orphan=bool(getattr(sk, "dead", False)),
               request=bool(getattr(sk, "is_request", False)), backlog=getattr(sk, "backlog", 0),
               sndbuf=getattr(sk, "sndbuf", 0), rcvbuf=getattr(sk, "rcvbuf", 0),
               snd_q=getattr(sk, "snd_q", 0), rcv_q=getattr(sk, "rcv_q", 0),
               unsent=getattr(sk, "unsent", 0), err=getattr(sk, "err", None),
               fin_rcvd=bool(getattr(sk, "done", False)), shutdown=getattr(sk, "shutdown", 0),
               uid=getattr(sk, "uid", 0), label=info.get("label"), origin_step=info.get("step"),
               role=info.get("role"))
    if kind == "tcp" and st != "LISTEN" and not getattr(sk, "is_request", False):
        from .kernel.buffers import payload_capacity

        for d, size, used in (("send", sk.sndbuf, sk.snd_q), ("receive", sk.rcvbuf, sk.rcv_q)):
            bid = f"{'snd' if d == 'send' else 'rcv'}:{t}"
            g.add_node(bid, kind="buffer", dir=d, bytes=used, size=size, capacity=payload_capacity(size),
                       unsent=sk.unsent if d == "send" else 0)
            g.add_edge(t, bid, rel=f"{d} buffer")


def changed_nodes(before: nx.DiGraph, after: nx.DiGraph) -> set[str]:
    """Nodes created or changed between two snapshots (what a step did)."""
    out = set()
    for n, d in after.nodes(data=True):
        if n not in before:
            out.add(n)
            continue
        b = before.nodes[n]
        if {k: v for k, v in d.items() if k != "remaining"} != {k: v for k, v in b.items() if k != "remaining"}:
            out.add(n)
        elif set(after.successors(n)) != set(before.successors(n)):
            out.add(n)
    return out


def port_owners(g: nx.DiGraph, port: int, proto: str = "tcp") -> list[tuple[str, dict[str, Any]]]:
    pid = f"port:{proto}:{port}"
    if pid not in g:
        return []
    return [(n, g.nodes[n]) for n in g.predecessors(pid)]


def holders_of(g: nx.DiGraph, tcb: str) -> list[str]:
    """'client:3' for every fd that reaches this TCB."""
    out: list[str] = []
    for f in g.predecessors(tcb) if tcb in g else ():
        if g.nodes[f].get("kind") == "file":
            out.extend(g.nodes[f].get("holders", []))
    return out


# =============================================================================== drawings


@dataclass
class DNode:
    id: str
    lines: list[str]
    fill: str = "#ffffff"
    color: str = "#444444"
    shape: str = "box"  # box | ellipse | note | plain
    style: str = ""  # "dashed"
    penwidth: float = 1.0
    rank: int = 0
    cluster: str | None = None
    tooltip: str = ""
    cls: str = ""


@dataclass
class DEdge:
    src: str
    dst: str
    label: str = ""
    color: str = "#666666"
    style: str = ""
    penwidth: float = 1.0
    id: str = ""
    cls: str = ""


@dataclass
class Drawing:
    name: str
    nodes: list[DNode] = field(default_factory=list)
    edges: list[DEdge] = field(default_factory=list)
    clusters: dict[str, str] = field(default_factory=dict)  # id -> label
    rankdir: str = "LR"
    title: str = ""
    ranked: bool = False  # DOT: keep nodes of one rank in one column (invisible anchors)

    def node(self, nid: str) -> DNode | None:
        for n in self.nodes:
            if n.id == nid:
                return n
        return None


RANK = {"process": 0, "std": 1, "fd": 1, "file": 2, "tcb": 3, "timewait": 3, "more": 3, "buffer": 4,
        "acceptq": 4, "port": 5, "pool": 5}


def _flags(d: dict[str, Any]) -> str:
    f = [n for n, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
    return ", ".join(f) if f else "no SO_REUSEADDR"


def node_lines(n: str, d: dict[str, Any], now: float = 0.0) -> list[str]:
    """The text a learner reads on a node (also used by the HTML tables)."""
    k = d.get("kind")
    if k == "process":
        head = f"process {d['name']}"
        return [head, f"pid {d['pid']}" + (", exited" if not d["alive"] else f", RLIMIT_NOFILE {d['nofile']}")]
    if k == "std":
        fds = d["fds"]
        span = f"fd {fds[0]}-{fds[-1]}" if len(fds) > 1 else f"fd {fds[0]}"
        return [span, "stdin/stdout/stderr"]
    if k == "fd":
        return [f"fd {d['fd']}" + (f" ({d['name']})" if d.get("name") else "")]
    if k == "file":
        refs = d.get("refs", 1)
        lines = ["open file", f"{refs} reference{'s' if refs != 1 else ''}"]
        if d.get("nonblock"):
            lines.append("O_NONBLOCK")
        return lines
    if k == "tcb":
        proto = d["proto"].upper()
        head = f"{proto} {d['state']}" if d["proto"] == "tcp" else f"{proto} socket"
        if d.get("request"):
            head = "request " + d["state"]
        lines = [head]
        if d["raddr"]:
            lines.append(f"{addr_text(d['laddr'], d['lport'])} ↔ {addr_text(d['raddr'], d['rport'])}")
        elif d["lport"]:
            lines.append(f"bound {addr_text(d['laddr'], d['lport'])}")
        else:
            lines.append("not bound")
        if d["state"] == "LISTEN":
            lines.append(f"backlog {d['backlog']}")
        lines.append(_flags(d))
        if d.get("orphan"):
            lines.append("orphan: no fd refers to it")
        if d.get("err"):
            lines.append(f"pending error {d['err']}")
        return lines
    if k == "buffer":
        return [f"{d['dir']} buffer", f"{d['bytes']} B queued", f"SO_{'SND' if d['dir'] == 'send' else 'RCV'}BUF {d['size']}"]
    if k == "acceptq":
        return ["accept queue", f"{d['queued']} queued, full above {d['backlog']}"]
    if k == "port":
        return [f"{d['proto'].upper()} port {d['port']}", f"{d['owners']} owner{'s' if d['owners'] != 1 else ''}"]
    if k == "timewait":
        lines = [f"{d['state']} entry", f"{addr_text(d['laddr'], d['lport'])} → {addr_text(d['raddr'], d['rport'])}",
                 f"expires t={d['expires']:.1f} s", _flags(d)]
        if d.get("origin"):
            lines.append(f"left by {d['origin']}")
        return lines
    if k == "pool":
        lines = [f"{d.get('name', 'TCP memory')} (never paged out)",
                 f"{d['bytes']} B = {d['pages']} page{'s' if d['pages'] != 1 else ''}"]
        if d.get("pressure"):
            lines.append("MEMORY PRESSURE")
        return lines
    if k == "more":
        return [f"... {d['count']} more {d['what']}"]
    return [n]


def object_drawing(g: nx.DiGraph, changed: Iterable[str] = (), title: str = "") -> Drawing:
    """The drawing of an object graph; nodes in ``changed`` get a thick red border."""
    changed = set(changed)
    dr = Drawing("kernel", rankdir="LR", title=title, ranked=True)
    for n, d in g.nodes(data=True):
        k = d.get("kind")
        fill, color, style, shape = "#ffffff", "#555555", "", "box"
        if k == "process":
            fill = "#cfe3f7" if d["alive"] else "#e6e6e6"
            style = "" if d["alive"] else "dashed"
            dr.clusters[d["cluster"]] = f"process {d['name']}" + ("" if d["alive"] else " (exited)")
        elif k in ("fd", "std"):
            fill = "#eef5fc" if k == "fd" else "#f6f6f6"
        elif k == "file":
            fill = "#fdf6e3"
        elif k == "tcb":
            fill = STATE_FILL.get(d["state"], "#eeeeee")
            if d.get("orphan"):
                style = "dashed"
        elif k == "buffer":
            fill = "#ede7f6" if d["bytes"] else "#f7f5fb"
            shape = "note"
        elif k == "acceptq":
            fill = "#e8f5e9"
            shape = "note"
        elif k == "port":
            fill = "#fff7c0"
            shape = "ellipse"
        elif k == "timewait":
            fill = STATE_FILL["TIME_WAIT"] if d["state"] == "TIME_WAIT" else STATE_FILL["FIN_WAIT2"]
            style = "dashed"
        elif k == "pool":
            fill = "#e1d5f5"
        node = DNode(n, node_lines(n, d, g.graph.get("time", 0.0)), fill=fill, color=color, shape=shape,
                     style=style, rank=RANK.get(k, 3), cluster=d.get("cluster"), cls=f"k-{k}")
        if n in changed:
            node.color, node.penwidth, node.cls = "#d62728", 3.0, node.cls + " changed"
        dr.nodes.append(node)
    for a, b, d in g.edges(data=True):
        rel = d.get("rel", "")
        color = {"owns": "#b8860b", "charged to": "#7e57c2", "queued": "#2e7d32"}.get(rel, "#666666")
        style = "dashed" if rel in ("charged to", "SYN_RECV request") else ""
        label = "" if rel in ("fd table", "refers to") else rel
        dr.edges.append(DEdge(a, b, label=label, color=color, style=style))
    return dr


# ------------------------------------------------------------------------------- state diagram


@functools.lru_cache(maxsize=1)
def state_depths() -> dict[str, int]:
    """Breadth-first distance of every state from CLOSE over the transition table."""
    adj: dict[str, list[str]] = {}
    for (s, _e), (d, _a) in TRANSITIONS.items():
        adj.setdefault(s.name, []).append(d.name)
    depth = {"CLOSE": 0}
    todo = ["CLOSE"]
    while todo:
        s = todo.pop(0)
        for d in adj.get(s, []):
            if d not in depth:
                depth[d] = depth[s] + 1
                todo.append(d)
    for s in State:
        depth.setdefault(s.name, max(depth.values()) + 1)
    return depth


END = "CLOSE_end"  # CLOSE drawn a second time at the bottom, as in RFC 793's figure 6


def state_node_id(name: str) -> str:
    return f"st-{name}"


def _edge_dst(src: str, dst: str, depth: dict[str, int]) -> str:
    return END if dst == "CLOSE" and depth.get(src, 0) >= 2 else dst


def state_edge_id(src: str, dst: str) -> str:
    depth = state_depths()
    return f"tr-{src}-{_edge_dst(src, dst, depth)}"


def transition_edge_id(t: Transition) -> str | None:
    """The diagram edge a recorded transition took (None when the table has no such edge)."""
    try:
        key = (State[t.src], t.event)
    except KeyError:
        return None
    if key not in TRANSITIONS:
        return None
    return state_edge_id(t.src, TRANSITIONS[key][0].name)


def transition_node_ids(t: Transition) -> list[str]:
    """The diagram nodes a recorded transition touches (source, and destination as drawn)."""
    depth = state_depths()
    out = [state_node_id(t.src)]
    if t.dst in State.__members__:
        dst = t.dst
        eid = transition_edge_id(t)
        out.append(state_node_id(eid.split("-", 2)[2] if eid else _edge_dst(t.src, dst, depth)))
    return out


def state_graph() -> nx.MultiDiGraph:
    """The TCP state machine as a networkx graph: one edge per (state, event) of the table."""
    g = nx.MultiDiGraph()
    for s in State:
        g.add_node(s.name)
    for (s, event), (d, actions) in TRANSITIONS.items():
        g.add_edge(s.name, d.name, key=event, event=event, actions=list(actions))
    return g


def state_drawing(path: Iterable[Transition] | None = None, title: str = "") -> Drawing:
    """The state diagram, generated from TRANSITIONS; the transitions of ``path`` highlighted."""
    depth = state_depths()
    g = state_graph()
    path = list(path or [])
    hl_edges = {e for e in (transition_edge_id(t) for t in path) if e}
    hl_nodes = set()
    for t in path:
        hl_nodes.update(transition_node_ids(t))
    dr = Drawing("tcp_states", rankdir="TB", title=title)
    order = sorted(State, key=lambda s: (depth[s.name], s.value))
    for s in order:
        nid = state_node_id(s.name)
        dr.nodes.append(DNode(nid, [s.name], fill=STATE_FILL.get(s.name, "#fff"), shape="ellipse",
                              rank=depth[s.name], cls="state" + (" hl" if nid in hl_nodes else ""),
                              color="#d62728" if nid in hl_nodes else "#444444",
                              penwidth=3.0 if nid in hl_nodes else 1.2))
    end_rank = max(depth.values()) + 1
    nid = state_node_id(END)
    dr.nodes.append(DNode(nid, ["CLOSE"], fill=STATE_FILL["CLOSE"], shape="ellipse", rank=end_rank,
                          cls="state" + (" hl" if nid in hl_nodes else ""),
                          color="#d62728" if nid in hl_nodes else "#444444",
                          penwidth=3.0 if nid in hl_nodes else 1.2))
    pairs: dict[tuple[str, str], list[str]] = {}
    for s, d, data in g.edges(data=True):
        dst = _edge_dst(s, d, depth)
        acts = data["actions"]
        pairs.setdefault((s, dst), []).append(data["event"] + (f" / {', '.join(acts)}" if acts and s != d else ""))
    for (s, d), labels in pairs.items():
        eid = f"tr-{s}-{d}"
        on = eid in hl_edges
        dr.edges.append(DEdge(state_node_id(s), state_node_id(d), label="\n".join(labels), id=eid,
                              color="#d62728" if on else "#777777", penwidth=3.0 if on else 1.0,
                              cls="tr" + (" hl" if on else "")))
    return dr


# ------------------------------------------------------------------------------- DOT


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(dr: Drawing) -> str:
    """DOT text of a drawing (deterministic: same drawing, same text)."""
    out = [f"digraph {_q(dr.name)} {{"]
    out.append(f'  graph [rankdir={dr.rankdir}, fontname="Helvetica", fontsize=11, nodesep=0.25, '
               f'ranksep={0.45 if dr.rankdir == "TB" else 0.6}, bgcolor="white"'
               + (f", label={_q(dr.title)}, labelloc=t" if dr.title else "") + "];")
    out.append('  node [fontname="Helvetica", fontsize=10, style="filled"];')
    out.append('  edge [fontname="Helvetica", fontsize=8, arrowsize=0.7];')

    def node_stmt(n: DNode) -> str:
        shape = {"box": "box", "ellipse": "ellipse", "note": "note", "plain": "plaintext"}[n.shape]
        style = "filled" + (",rounded" if n.shape == "box" else "") + (f",{n.style}" if n.style else "")
        attrs = [f"label={_q(chr(10).join(n.lines))}", f"shape={shape}", f'style="{style}"',
                 f'fillcolor="{n.fill}"', f'color="{n.color}"', f"penwidth={n.penwidth:g}",
                 f"id={_q(n.id)}"]
        if n.cls:
            attrs.append(f"class={_q(n.cls)}")
        if n.tooltip:
            attrs.append(f"tooltip={_q(n.tooltip)}")
        return f"  {_q(n.id)} [{', '.join(attrs)}];"

    by_cluster: dict[str, list[DNode]] = {}
    for n in dr.nodes:
        if n.cluster:
            by_cluster.setdefault(n.cluster, []).append(n)
    for ci, (cid, members) in enumerate(by_cluster.items()):
        out.append(f"  subgraph {_q('cluster_' + cid)} {{")
        out.append(f'    label={_q(dr.clusters.get(cid, cid))}; style="rounded,dashed"; color="#7aa6d6"; '
                   f'fontsize=10; fontname="Helvetica";')
        for n in members:
            out.append("  " + node_stmt(n))
        out.append("  }")
    for n in dr.nodes:
        if not n.cluster:
            out.append(node_stmt(n))
    if dr.ranked:
        ranks = sorted({n.rank for n in dr.nodes})
        if ranks:
            chain = list(range(0, max(ranks) + 1))
            for r in chain:
                out.append(f'  "_rank{r}" [label="", shape=point, width=0, height=0, style=invis];')
            out.append("  " + " -> ".join(f'"_rank{r}"' for r in chain) + " [style=invis];"
                       if len(chain) > 1 else "")
            for r in ranks:
                members = [n for n in dr.nodes if n.rank == r and not n.cluster]
                if members:
                    out.append("  { rank=same; " + " ".join(_q(x) for x in [f"_rank{r}"] + [m.id for m in members]) + " }")
    for e in dr.edges:
        attrs = [f'color="{e.color}"', f"penwidth={e.penwidth:g}", f'fontcolor="{e.color}"']
        if e.label:
            attrs.append(f"label={_q(e.label)}")
        if e.style:
            attrs.append(f"style={e.style}")
        if e.id:
            attrs.append(f"id={_q(e.id)}")
        if e.cls:
            attrs.append(f"class={_q(e.cls)}")
        out.append(f"  {_q(e.src)} -> {_q(e.dst)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- SVG


def have_dot() -> bool:
    return os.environ.get("SOCKSIM_NO_DOT") != "1" and shutil.which("dot") is not None


_SVG_CACHE: dict[str, str] = {}


def to_svg(dr: Drawing, engine: str | None = None) -> str:
    """An inline ``<svg>`` element: Graphviz's rendering when ``dot`` exists, else :func:`layout_svg`.

    ``engine`` forces one: ``"dot"`` or ``"python"``.
    """
    use_dot = have_dot() if engine is None else engine == "dot"
    if use_dot:
        text = to_dot(dr)
        hit = _SVG_CACHE.get(text)
        if hit is not None:
            return hit
        try:
            p = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            p = None
        if p is not None and p.returncode == 0:
            svg = p.stdout.decode("utf-8", "replace")
            svg = svg[svg.find("<svg"):]
            # comments carry node names; drop them so the inline SVG stays small and clean
            while "<!--" in svg:
                a = svg.find("<!--")
                b = svg.find("-->", a)
                if b < 0:
                    break
                svg = svg[:a] + svg[b + 3:]
            svg = svg.replace("<svg ", '<svg class="graph" data-engine="dot" ', 1)
            if len(_SVG_CACHE) < 2000:
                _SVG_CACHE[text] = svg
            return svg
    return layout_svg(dr)


# ---- the pure-Python fallback: a small layered layout (ranks, barycenter ordering, curved edges)

CHAR_W, LINE_H, PAD = 6.4, 14.0, 8.0


def _size(n: DNode) -> tuple[float, float]:
    w = max(len(s) for s in n.lines) * CHAR_W + 2 * PAD + (10 if n.shape == "ellipse" else 0)
    h = len(n.lines) * LINE_H + 2 * PAD - 4
    return max(w, 40.0), max(h, 24.0)


def _order(dr: Drawing) -> dict[int, list[DNode]]:
    ranks: dict[int, list[DNode]] = {}
    for n in dr.nodes:
        ranks.setdefault(n.rank, []).append(n)
    nbrs: dict[str, list[str]] = {n.id: [] for n in dr.nodes}
    for e in dr.edges:
        if e.src in nbrs and e.dst in nbrs and e.src != e.dst:
            nbrs[e.src].append(e.dst)
            nbrs[e.dst].append(e.src)
    rank_of = {n.id: n.rank for n in dr.nodes}
    clusters = list(dict.fromkeys(n.cluster for n in dr.nodes if n.cluster))
    pos = {n.id: float(i) for r in ranks.values() for i, n in enumerate(r)}
    keys = sorted(ranks)
    for sweep in range(8):
        seq = keys if sweep % 2 == 0 else list(reversed(keys))
        for r in seq:
            def bary(n: DNode) -> float:
                adj = [pos[m] for m in nbrs[n.id] if rank_of[m] != r]
                return sum(adj) / len(adj) if adj else pos[n.id]
            ranks[r].sort(key=lambda n: (clusters.index(n.cluster) if n.cluster else len(clusters), bary(n)))
            for i, n in enumerate(ranks[r]):
                pos[n.id] = float(i)
    return ranks


def layout_svg(dr: Drawing) -> str:
    """Lay out and draw ``dr`` without Graphviz: deterministic, self-contained SVG."""
    ranks = _order(dr)
    size = {n.id: _size(n) for n in dr.nodes}
    lr = dr.rankdir == "LR"
    gap_rank, gap_node = (70.0, 16.0) if lr else (58.0, 30.0)
    keys = sorted(ranks)
    # extent of every rank along the rank axis
    thick = {r: max((size[n.id][0] if lr else size[n.id][1]) for n in ranks[r]) for r in keys}
    along: dict[int, float] = {}
    cur = 20.0 + (18.0 if dr.title else 0.0)
    for r in keys:
        along[r] = cur
        cur += thick[r] + gap_rank
    # positions across the ranks: clusters in bands (so a cluster's box never overlaps another's)
    across: dict[str, float] = {}
    multi = {c for c in dr.clusters if len({n.rank for n in dr.nodes if n.cluster == c}) > 1}
    band_end = 20.0
    for c in dr.clusters:
        if c not in multi:
            continue
        top = band_end + 18.0
        ext = 0.0
        for r in keys:
            y = top
            for n in ranks[r]:
                if n.cluster == c:
                    across[n.id] = y
                    y += (size[n.id][1] if lr else size[n.id][0]) + gap_node
            ext = max(ext, y - top)
        band_end = top + ext + 10.0
    spans = {}
    for r in keys:
        free = [n for n in ranks[r] if n.id not in across]
        total = sum((size[n.id][1] if lr else size[n.id][0]) for n in free) + gap_node * max(0, len(free) - 1)
        spans[r] = (free, total)
    width_across = max([band_end] + [t + 40 for _, t in spans.values()])
    for r in keys:
        free, total = spans[r]
        banded = any(n.id in across for n in ranks[r])
        y = band_end + 10.0 if banded else max(20.0, (width_across - total) / 2)
        for n in free:
            across[n.id] = y
            y += (size[n.id][1] if lr else size[n.id][0]) + gap_node
    box: dict[str, tuple[float, float, float, float]] = {}
    for r in keys:
        for n in ranks[r]:
            w, h = size[n.id]
            if lr:
                x = along[r] + (thick[r] - w) / 2
                y = across[n.id]
            else:
                x = across[n.id]
                y = along[r] + (thick[r] - h) / 2
            box[n.id] = (x, y, w, h)
    W = max(x + w for x, y, w, h in box.values()) + 40
    H = max(y + h for x, y, w, h in box.values()) + 40
    parts: list[str] = []
    # clusters
    for c, label in dr.clusters.items():
        members = [box[n.id] for n in dr.nodes if n.cluster == c]
        if not members:
            continue
        x0 = min(b[0] for b in members) - 8
        y0 = min(b[1] for b in members) - 18
        x1 = max(b[0] + b[2] for b in members) + 8
        y1 = max(b[1] + b[3] for b in members) + 8
        parts.append(f'<g class="cluster"><rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                     f'height="{y1 - y0:.1f}" rx="6" fill="none" stroke="#7aa6d6" stroke-dasharray="4 3"/>'
                     f'<text x="{x0 + 6:.1f}" y="{y0 + 12:.1f}" font-size="10" fill="#335">{html.escape(label)}</text></g>')
    # edges
    for e in dr.edges:
        if e.src not in box or e.dst not in box:
            continue
        parts.append(_svg_edge(e, box[e.src], box[e.dst], lr))
    # nodes
    for n in dr.nodes:
        x, y, w, h = box[n.id]
        dash = ' stroke-dasharray="5 3"' if "dashed" in n.style else ""
        if n.shape == "ellipse":
            shape = (f'<ellipse cx="{x + w / 2:.1f}" cy="{y + h / 2:.1f}" rx="{w / 2:.1f}" ry="{h / 2:.1f}" '
                     f'fill="{n.fill}" stroke="{n.color}" stroke-width="{n.penwidth:g}"{dash}/>')
        else:
            rx = 6 if n.shape == "box" else 1
            shape = (f'<polygon points="{x:.1f},{y:.1f} {x + w:.1f},{y:.1f} {x + w:.1f},{y + h:.1f} {x:.1f},{y + h:.1f}" '
                     f'fill="{n.fill}" stroke="{n.color}" stroke-width="{n.penwidth:g}"{dash} rx="{rx}"/>')
        texts = []
        ty = y + (h - len(n.lines) * LINE_H) / 2 + LINE_H - 3
        for i, line in enumerate(n.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            texts.append(f'<text x="{x + w / 2:.1f}" y="{ty:.1f}" text-anchor="middle" font-size="10"{weight}>'
                         f'{html.escape(line)}</text>')
            ty += LINE_H
        parts.append(f'<g id="{html.escape(n.id)}" class="node {html.escape(n.cls)}"><title>{html.escape(n.id)}</title>'
                     + shape + "".join(texts) + "</g>")
    title = (f'<text x="{W / 2:.1f}" y="16" text-anchor="middle" font-size="12" font-weight="bold">'
             f'{html.escape(dr.title)}</text>') if dr.title else ""
    return (f'<svg class="graph" data-engine="python" xmlns="http://www.w3.org/2000/svg" '
            f'width="{W:.0f}pt" height="{H:.0f}pt" viewBox="0 0 {W:.0f} {H:.0f}" '
            f'font-family="Helvetica,Arial,sans-serif"><rect width="100%" height="100%" fill="white"/>'
            + title + "".join(parts) + "</svg>")


def _svg_edge(e: DEdge, a: tuple[float, float, float, float], b: tuple[float, float, float, float], lr: bool) -> str:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    dash = ' stroke-dasharray="5 3"' if e.style == "dashed" else ""
    if e.src == e.dst:  # self loop
        if lr:
            sx, sy = ax + aw * 0.35, ay
            tx, ty = ax + aw * 0.65, ay
            c1, c2 = (sx - 10, sy - 34), (tx + 10, ty - 34)
        else:
            sx, sy = ax + aw, ay + ah * 0.3
            tx, ty = ax + aw, ay + ah * 0.7
            c1, c2 = (sx + 40, sy - 14), (tx + 40, ty + 14)
    else:
        acx, acy, bcx, bcy = ax + aw / 2, ay + ah / 2, bx + bw / 2, by + bh / 2
        if lr:
            fwd = bcx > acx + 1
            if abs(bcx - acx) < 1:  # same rank: bulge to the right
                sx, sy, tx, ty = ax + aw, acy, bx + bw, bcy
                c1, c2 = (sx + 50, sy), (tx + 50, ty)
            else:
                sx, sy = (ax + aw, acy) if fwd else (ax, acy)
                tx, ty = (bx, bcy) if fwd else (bx + bw, bcy)
                d = max(30.0, abs(tx - sx) * 0.4)
                c1, c2 = (sx + (d if fwd else -d), sy), (tx - (d if fwd else -d), ty)
        else:
            fwd = bcy > acy + 1
            if abs(bcy - acy) < 1:
                sx, sy, tx, ty = acx, ay + ah, bcx, by + bh
                c1, c2 = (sx, sy + 40), (tx, ty + 40)
            else:
                sx, sy = (acx, ay + ah) if fwd else (acx + aw * 0.25, ay)
                tx, ty = (bcx, by) if fwd else (bcx + bw * 0.25, by + bh)
                d = max(24.0, abs(ty - sy) * 0.35)
                bend = 0.0 if fwd else 60.0
                c1, c2 = (sx + bend, sy + (d if fwd else -d)), (tx + bend, ty - (d if fwd else -d))
    path = f"M{sx:.1f},{sy:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {tx:.1f},{ty:.1f}"
    # arrow head along the last tangent
    dx, dy = tx - c2[0], ty - c2[1]
    ln = math.hypot(dx, dy) or 1.0
    ux, uy = dx / ln, dy / ln
    size = 7.0
    p1 = (tx - ux * size - uy * size * 0.45, ty - uy * size + ux * size * 0.45)
    p2 = (tx - ux * size + uy * size * 0.45, ty - uy * size - ux * size * 0.45)
    head = (f'<polygon points="{tx:.1f},{ty:.1f} {p1[0]:.1f},{p1[1]:.1f} {p2[0]:.1f},{p2[1]:.1f}" '
            f'fill="{e.color}" stroke="{e.color}"/>')
    label = ""
    if e.label:
        t = 0.5
        mx = (1 - t) ** 3 * sx + 3 * (1 - t) ** 2 * t * c1[0] + 3 * (1 - t) * t ** 2 * c2[0] + t ** 3 * tx
        my = (1 - t) ** 3 * sy + 3 * (1 - t) ** 2 * t * c1[1] + 3 * (1 - t) * t ** 2 * c2[1] + t ** 3 * ty
        lines = e.label.split("\n")
        lw = max(len(s) for s in lines) * 5.2 + 4
        lh = len(lines) * 10 + 2
        label = (f'<rect x="{mx - lw / 2:.1f}" y="{my - lh / 2:.1f}" width="{lw:.1f}" height="{lh:.1f}" '
                 f'fill="white" fill-opacity="0.85"/>')
        for i, s in enumerate(lines):
            label += (f'<text x="{mx:.1f}" y="{my - lh / 2 + 9 + i * 10:.1f}" text-anchor="middle" '
                      f'font-size="8" fill="{e.color}">{html.escape(s)}</text>')
    eid = f' id="{html.escape(e.id)}"' if e.id else ""
    return (f'<g{eid} class="edge {html.escape(e.cls)}"><path d="{path}" fill="none" stroke="{e.color}" '
            f'stroke-width="{e.penwidth:g}"{dash}/>' + head + label + "</g>")


# =============================================================================== command line


def write_state_diagram(base: str, path: Iterable[Transition] | None = None, engine: str | None = None) -> list[str]:
    """Write ``base.dot`` and ``base.svg`` (the state diagram); returns the paths written."""
    dr = state_drawing(path, title="TCP states (generated from sim/kernel/tcp_states.py TRANSITIONS)")
    out = []
    with open(base + ".dot", "w", encoding="utf-8") as f:
        f.write(to_dot(dr))
    out.append(base + ".dot")
    svg = to_svg(dr, engine)
    with open(base + ".svg", "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + _standalone(svg) + "\n")
    out.append(base + ".svg")
    return out


def _standalone(svg: str) -> str:
    if "xmlns=" not in svg.split(">", 1)[0]:
        svg = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return svg


def write_graph(dr: Drawing, path: str, engine: str | None = None) -> None:
    """Write a drawing as DOT (``.dot``/``.gv``) or SVG (``.svg``), chosen by the file name."""
    if path.endswith(".svg"):
        text = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + _standalone(to_svg(dr, engine)) + "\n"
    else:
        text = to_dot(dr)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sim.graph",
                                 description="Write the TCP state diagram generated from the model's table.")
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("state-diagram", help="write BASE.dot and BASE.svg")
    s.add_argument("base", help="output path without extension, e.g. docs/state-diagram")
    s.add_argument("--engine", choices=("dot", "python"), help="SVG renderer (default: dot if installed)")
    args = ap.parse_args(argv)
    for p in write_state_diagram(args.base, engine=args.engine):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
