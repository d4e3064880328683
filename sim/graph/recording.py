"""Recording a run for the views: the kernel's events give the transitions, its public tables the snapshots.

:func:`record` re-runs a scenario on a :class:`~sim.engine.SimBackend`, subscribes to the kernel's
events (sim/kernel/tracepoints.py) and snapshots the kernel (through its public tables) before and
after every trace record. No kernel function is wrapped or replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..engine import SimBackend
from ..kernel import tracepoints as tp
from ..kernel.tcp_states import State
from ..kernel.timewait import TimeWaitSock
from ..trace import StepRecord, Trace
from .objects import kernel_graph, state_name


# Kernel state writes the object graph does not draw on a connection's track: the full socket's
# hand-over to its TIME_WAIT minisock (the minisock carries the track on), and the creation of a
# request (drawn from the listener, see _on_request).
_UNSHOWN_EVENTS = ("tw_hashdance", "conn_request")


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
        s, d = state_name(src), state_name(dst)
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
            state_name(req.tcp_state), note="the listener creates a request for the SYN"))
        self.last_state[tid] = state_name(req.tcp_state)
        self.rec.tracks.setdefault(tid, {})["parent"] = self._track(ev.listener)

    def _on_time_wait(self, ev: tp.InetTwskEntered) -> None:
        self.tw_from[self.oid(ev.tw, "tw")] = self._track(ev.sk)
        if state_name(ev.substate) == "FIN_WAIT2":
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
            st = state_name(sk.tcp_state)
            return "connection " + st if sk.raddr else ("listening" if st == "LISTEN" else "socket " + st)
        tw = k.ehash.get(sk.key()) if sk.raddr else None
        if isinstance(tw, TimeWaitSock):
            return f"connection {tw.shown_state}"
        return "socket released"

    # ------------------------------------------------------------------ the object graph
    def snapshot(self) -> nx.DiGraph:
        return kernel_graph(self.k, self._now(), self.names(), self)




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


def record(scenario: Any, seed: int = 0, graphs: bool = True, personality: str | None = None,
           at_step: Any = None) -> Recording:
    """Run ``scenario`` on the simulator and record the kernel around every trace record
    (``at_step``: called before each scenario step, see the runner's switch())."""
    from ..scenario.runner import run

    rec = _Recorder(scenario, graphs=graphs)
    backend = _Probe(rec, seed=seed, personality=personality)
    kw: dict[str, Any] = {"on_step": rec.on_step, "at_step": at_step}
    if personality is not None:
        kw["personality"] = personality
    rec.rec.trace = run(scenario, backend, seed=seed, **kw)
    rec.finish()
    for tid, info in rec.rec.tracks.items():
        info["label"] = track_label(info, tid)
    return rec.rec
