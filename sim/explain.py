"""Why did a step turn out the way it did, and what would have changed it?

For one trace record this module gathers:

- the **rule** that decided the outcome, its **citation** (kernel function and file, man page) and
  the rule's full source text, plus every rule consulted on the way;
- the **facts** the rule recorded, and facts read from the kernel's own tables just before the
  step (who owns the port, when a TIME_WAIT entry expires, which fds share an open file, how full
  a queue is...);
- **what would have changed the outcome**: variants of the scenario (SO_REUSEADDR on the old
  and/or the new socket, waiting for a TIME_WAIT entry to expire, a larger backlog, reading
  before closing, ...) that are each *re-run on the model*; a variant is reported with the
  outcome the model gave, whether or not it differs. Nothing here is written by hand.

``socksim explain FILE --step N`` prints this; ``socksim explain FILE`` does every step; the
HTML page (:mod:`sim.report.page`) shows it beside the object graph.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from .explain_windows import OPTIONS as WIN_OPTIONS, SOURCES as WIN_SOURCES, translate
from .graph import Recording, addr_text, holders_of, port_owners, record
from .kernel.rules import RULES, decisive
from .trace import StepRecord

MAX_WHATIFS = 10

# Where an outcome that no kernel rule decided comes from (observations, time, the runner).
SOURCES: dict[str, tuple[str, str]] = {
    "observe:tcp_states": ("observation", "/proc/net/tcp: tcp4_seq_show() in net/ipv4/tcp_ipv4.c "
                           "(listeners, established sockets, request and TIME_WAIT minisocks)"),
    "observe:sockstat": ("observation", "/proc/net/sockstat: sockstat_seq_show() in net/ipv4/proc.c "
                         "(inuse, orphan, tw)"),
    "observe:fds": ("observation", "/proc/PID/fd: proc_readfd() in fs/proc/fd.c, one entry per open fd"),
    "observe:queues": ("observation", "SIOCINQ / SIOCOUTQ: tcp_ioctl() in net/ipv4/tcp.c "
                       "(bytes unread, bytes not yet acknowledged)"),
    "observe:timer": ("observation", "QTimer::isActive(), interval(), remainingTime() (qtimer.cpp)"),
    "sleep": ("time", "nanosleep(2): time passes; kernel timers that fall due meanwhile fire "
              "(TIME_WAIT: tw_timer_handler() in net/ipv4/inet_timewait_sock.c; SYN retransmission: "
              "tcp_retransmit_timer() in net/ipv4/tcp_timer.c)"),
    "sleep:tw": ("timer", "tw_timer_handler() -> inet_twsk_kill() in net/ipv4/inet_timewait_sock.c: "
                 "after TCP_TIMEWAIT_LEN (60 s, include/net/tcp.h) the entry leaves ehash and the bind "
                 "bucket"),
    "PROCESS_GONE": ("runner", "do_exit() in kernel/exit.c: the process has exited, so a later step "
                     "of it cannot run (the scenario runner reports PROCESS_GONE)"),
    "PROCESS_BUSY": ("runner", "the process is still blocked in an earlier call: one thread per "
                     "process, so the scenario runner reports PROCESS_BUSY"),
    "call:getsockopt": ("kernel", "sk_getsockopt() in net/core/sock.c; do_tcp_getsockopt() in "
                        "net/ipv4/tcp.c; getsockopt(2), socket(7), tcp(7)"),
    "call:setsockopt": ("kernel", "sk_setsockopt() in net/core/sock.c; setsockopt(2), socket(7)"),
    "call:set_nonblocking": ("kernel", "fcntl(2) F_SETFL O_NONBLOCK: a flag of the open file"),
    "call:exit": ("kernel", "do_exit() -> exit_files() in kernel/exit.c: every fd is closed"),
    "call:fork": ("kernel", "fork(2), dup_fd() in fs/file.c: the child's fd table shares every open file"),
    "call": ("kernel", "the system call's own entry point (net/socket.c)"),
    "load": ("load", "each connection of the load step goes through the same system calls "
             "(__sys_connect() in net/socket.c, tcp_v4_connect() in net/ipv4/tcp_ipv4.c)"),
}


@dataclass
class WhatIf:
    label: str  # "with SO_REUSEADDR on the old listener srv (step 0) and on the new socket srv2 (step 13)"
    outcome: str  # what the model gave for the same step in that variant
    changed: bool
    kind: str = ""


@dataclass
class Explanation:
    index: int
    line: int
    time: float
    proc: str | None
    kind: str
    what: str
    outcome: str
    note: str | None = None
    via: str | None = None
    expect: Any = None
    expect_ok: bool | None = None
    rule: str | None = None
    cite: str | None = None
    doc: str | None = None
    decided_by: str = ""  # "rule", "observation", "time", "runner", ...
    trail: list[tuple[str, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # recorded by the rules
    state: list[str] = field(default_factory=list)  # read from the kernel's tables before the step
    during: list[str] = field(default_factory=list)  # transitions and timer events during the step
    whatifs: list[WhatIf] = field(default_factory=list)
    effect: str = ""
    syscalls: list[str] = field(default_factory=list)  # a Qt call's system calls, each with its rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# =============================================================================== texts


def syscall_line(c: dict[str, Any]) -> str:
    """One system call a Qt call made: ``bind(4, 0.0.0.0, 5000) = -1 EADDRINUSE  [bind.explicit_port]``."""
    from .report.terminal import syscall_text

    return syscall_text(c) + (f"  [{c['rule']}]" if c.get("rule") else "")


def call_text(rec: StepRecord) -> str:
    """``bind(srv2, 127.0.0.1, 8080)``, ``sleep 61 s``, ``observe tcp_states port=8080``."""
    a = dict(rec.args)
    if rec.kind == "sleep":
        return f"sleep {a.get('seconds')} s"
    if rec.kind == "observe":
        what = a.pop("what", "")
        return f"observe {what} " + " ".join(f"{k}={v}" for k, v in a.items() if v is not None)
    if rec.kind == "load":
        return f"load {a.get('rate')}/s for {a.get('duration')} s -> {a.get('addr')}:{a.get('port')}"
    if rec.kind == "qt":
        obj, meth = a.pop("object", "?"), (rec.call or "").partition(".")[2]
        parts = [str(a[k]) for k in ("addr", "port", "value") if a.get(k) is not None]
        return f"{obj}.{meth}({', '.join(parts)})" + (f" as {a['as']}" if a.get("as") else "")
    if rec.kind == "timer":
        extra = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("name", "op"))
        return f"{rec.call}({a.get('name')}{', ' + extra if extra else ''})"
    if rec.call == "socket":
        parts = [str(a.get("family", "AF_INET")), str(a.get("type", "SOCK_STREAM")), str(a.get("protocol", 0))]
        if a.get("nonblock"):
            parts[1] += "|SOCK_NONBLOCK"
        s = f"socket({', '.join(parts)})"
        return s + (f" as {a['as']}" if a.get("as") else "")
    order = ("sock", "addr", "port", "backlog", "opt", "value", "bytes", "how", "fd", "on")
    parts = [str(a[k]) for k in order if k in a and a[k] not in (None, [])]
    parts += [f"{k}={v}" for k, v in a.items() if k not in order and k != "as" and v not in (None, [])]
    s = f"{rec.call}({', '.join(parts)})"
    return s + (f" as {a['as']}" if a.get("as") else "")


def outcome_text(rec: StepRecord) -> str:
    """What the step returned, as a program sees it: ``3``, ``ok``, ``-1 EADDRINUSE``, ``0 (end of stream)``."""
    if rec.kind == "qt":
        return rec.err or json.dumps(rec.ret)
    if rec.kind == "observe":
        return json.dumps(rec.obs, separators=(", ", ": ")) if not isinstance(rec.obs, str) else str(rec.obs)
    if rec.kind == "load":
        o = rec.obs or {}
        errs = ", ".join(f"{k} x{v}" for k, v in (o.get("errors") or {}).items())
        return f"{o.get('ok', 0)}/{o.get('attempts', 0)} connections ok" + (f" ({errs})" if errs else "")
    if rec.kind == "sleep":
        return f"t = {rec.time + float(rec.args.get('seconds', 0)):g} s"
    if rec.kind == "timer":
        return f"fires in {rec.ret} ms" if rec.ret is not None else (rec.err or "inactive")
    if rec.blocked:
        if rec.completed_after is not None:
            return f"blocked, then {_result(rec)} after step {rec.completed_after}"
        return "BLOCKED (still waiting at the end)"
    return _result(rec)


def _result(rec: StepRecord) -> str:
    if rec.err in ("PROCESS_GONE", "PROCESS_BUSY"):
        return rec.err
    if rec.err:
        num = getattr(rec, "errno", None)
        shown = rec.ret if rec.ret is not None else -1
        return f"{shown} {rec.err}" + (f" ({num})" if num is not None and str(num) not in rec.err else "")
    if rec.call == "recv" and rec.ret == 0 and rec.args.get("bytes", 1):
        return "0 (end of stream)"
    if rec.ret is None or (rec.ret == 0 and rec.call not in ("recv", "send", "getsockopt", "getsockname",
                                                              "dup", "dup2", "socket", "accept")):
        return "ok"
    return str(rec.ret)


def _who(info: dict[str, Any] | None) -> str:
    return (info or {}).get("label") or "a socket"


# =============================================================================== the explainer


class Explainer:
    """Explanations of every record of one scenario run (seeded; the run is repeated as needed)."""

    def __init__(self, scenario: Any, seed: int = 0, recording: Recording | None = None,
                 whatif: bool = True, personality: str | None = None):
        self.sc = scenario
        self.seed = seed
        self.personality = personality
        self.r = recording or record(scenario, seed=seed, personality=personality)
        self.trace = self.r.trace
        self.whatif = whatif
        self.base = scenario.model_dump(by_alias=True)
        self._runs: dict[str, Recording | None] = {}
        self.runs = 0
        self.windows = self.trace.personality == "windows"  # explained in Windows' terms

    # ------------------------------------------------------------------ public
    def explain(self, i: int) -> Explanation:
        rec = self.trace.steps[i]
        gb, ga = self.r.before(i), self.r.after(i)
        ex = Explanation(index=i, line=rec.line, time=rec.time, proc=rec.proc, kind=rec.kind,
                         what=call_text(rec), outcome=outcome_text(rec), via=getattr(rec, "via", None),
                         syscalls=[syscall_line(c) for c in getattr(rec, "syscalls", [])],
                         expect=rec.expect, expect_ok=rec.expect_ok, effect=self.r.effects.get(i, ""))
        ex.note = self._note(i)
        self._decision(ex, rec)
        ex.facts = list(rec.facts)
        try:
            ex.state = self._state_facts(i, rec, gb, ga)
        except Exception as e:  # a model under change must not break an explanation
            ex.state = [f"(the kernel's tables could not be read: {type(e).__name__})"]
        ex.during = self._during(i)
        if self.whatif:
            ex.whatifs = self._whatifs(i, rec, gb, ga)
        if self.windows:
            translate(ex)
        return ex

    def explain_all(self) -> list[Explanation]:
        return [self.explain(i) for i in range(len(self.trace.steps))]

    # ------------------------------------------------------------------ decision and source
    def _note(self, i: int) -> str | None:
        s, via = self.r.step_of[i] if i < len(self.r.step_of) else (i, None)
        if via is not None or s >= len(self.sc.steps):
            return None
        return getattr(self.sc.steps[s], "note", None)

    def _decision(self, ex: Explanation, rec: StepRecord) -> None:
        seen: list[str] = []
        for rid in rec.trail:
            if rid not in seen:
                seen.append(rid)
        ex.trail = [(rid, RULES[rid].cite if rid in RULES else "") for rid in seen]
        if rec.rule:
            ex.rule, ex.cite = rec.rule, rec.cite or (RULES[rec.rule].cite if rec.rule in RULES else None)
            ex.doc = RULES[rec.rule].doc if rec.rule in RULES else None
            ex.decided_by = "rule"
            if not ex.cite:
                ex.cite = self._source_for(rec)[1]
            return
        fallback = decisive(rec.trail) if rec.trail else None
        if fallback in RULES and rec.kind == "call" and rec.err not in ("PROCESS_GONE", "PROCESS_BUSY"):
            # a call that blocked and completed later: the rules consulted when it was issued decide
            ex.rule, ex.cite, ex.doc, ex.decided_by = fallback, RULES[fallback].cite, RULES[fallback].doc, "rule"
            return
        kind, cite = self._source_for(rec)
        ex.decided_by, ex.cite = kind, cite
        if rec.kind == "load":
            rules = self.r.load_rules.get(rec.index, {})
            if rules:
                first = (rec.obs or {}).get("first_error") or next(iter(rules))
                rid = rules.get(first) or next(iter(rules.values()))
                if rid in RULES:
                    ex.rule, ex.cite, ex.doc, ex.decided_by = rid, RULES[rid].cite, RULES[rid].doc, "rule"
        if rec.kind == "sleep":
            trans = [t for t in self.r.transitions if t.step == rec.index]
            if trans and "tcp.transition" in RULES and not any(e for e in self.r.events if e[0] == rec.index):
                ex.rule = "tcp.transition"
                ex.doc = RULES["tcp.transition"].doc
                ex.cite = RULES["tcp.transition"].cite.rstrip(".") + "; " + cite

    def _source_for(self, rec: StepRecord) -> tuple[str, str]:
        if rec.err in ("PROCESS_GONE", "PROCESS_BUSY"):
            return SOURCES[rec.err]
        if rec.kind == "observe":
            if self.windows:
                return WIN_SOURCES.get(f"observe:{rec.args.get('what')}", WIN_SOURCES["observe:tcp_states"])
            return SOURCES.get(f"observe:{rec.args.get('what')}", SOURCES["observe:tcp_states"])
        if rec.kind == "sleep":
            if any(e[0] == rec.index and "TIME_WAIT" in e[2] for e in self.r.events):
                return SOURCES["sleep:tw"]
            return SOURCES["sleep"]
        if rec.kind == "load":
            return SOURCES["load"]
        return SOURCES.get(f"call:{rec.call}", SOURCES["call"])

    def _during(self, i: int) -> list[str]:
        items: list[tuple[float, int, str]] = []
        for n, (step, tm, text) in enumerate(self.r.events):
            if step == i:
                seq = self.r.event_seq[n] if n < len(self.r.event_seq) else 0
                items.append((tm, seq, f"t={tm:.6g} s  {text}"))
        for t in self.r.transitions:
            if t.step == i:
                who = _who(self.r.tracks.get(t.track))
                extra = f" ({t.note})" if t.note and "inferred" not in t.note else ""
                items.append((t.time, t.seq, f"t={t.time:.6g} s  {who}: {t.src} --{t.event}--> {t.dst}{extra}"))
        return [text for _, _, text in sorted(items, key=lambda x: (x[0], x[1]))]

    # ------------------------------------------------------------------ facts from the tables
    def _state_facts(self, i: int, rec: StepRecord, gb: nx.DiGraph, ga: nx.DiGraph) -> list[str]:
        out: list[str] = []
        now = rec.time
        tid = self.r.step_sock.get(i)
        if rec.kind == "call" and tid and tid in gb and rec.call not in ("socket",):
            out.append(self._describe_tcb(tid, gb, "the socket"))
        call = rec.call or ""
        sock = rec.args.get("sock")
        if rec.kind == "call" and sock is not None and not tid and rec.proc and call not in ("close", "closesocket"):
            out += self._fd_facts(rec.proc, gb, lowest=False)
            num = sock if isinstance(sock, int) else None
            for n, d in gb.nodes(data=True):
                if num is not None and d.get("kind") == "fd" and d["fd"] == num and d["proc"] != rec.proc:
                    out.append(f"fd {num} is open in process {d['proc']}" + (f" ({d['name']})" if d.get("name") else "")
                               + f", not in {rec.proc}")
        if rec.kind == "call" and call in ("socket", "accept", "dup", "dup2") and rec.proc:
            out += self._fd_facts(rec.proc, gb)
        if call == "bind":
            port = int(rec.args.get("port", 0) or 0)
            out += self._port_facts(port, tid, gb, now) if port else [
                "port 0: the kernel picks a free port from ip_local_port_range "
                f"{gb.graph.get('sysctls', {}).get('ip_local_port_range')}"]
        elif call == "listen" and tid in gb:
            port = gb.nodes[tid].get("lport") or 0
            if port:
                out += self._port_facts(port, tid, gb, now)
            else:
                out.append("the socket is not bound: listen() picks a port itself (autobind)")
        elif call == "connect":
            out += self._connect_facts(rec, tid, gb, now)
        elif call == "accept" and tid in gb:
            q = f"acceptq:{tid}"
            if q in gb:
                d = gb.nodes[q]
                out.append(f"the accept queue holds {d['queued']} connection(s); it is full above "
                           f"{d['backlog']} (backlog {d['backlog']} admits {d['limit']})")
        elif call in ("close", "closesocket", "shutdown", "exit", "dup2"):
            out += self._close_facts(rec, tid, gb)
        elif call == "fork" and rec.proc:
            fds = [d for n, d in gb.nodes(data=True) if d.get("kind") == "fd" and d["proc"] == rec.proc]
            if fds:
                out.append(f"{rec.proc}'s fds {', '.join(str(d['fd']) for d in fds)} are copied into the "
                           f"child: each copy refers to the same open file (its reference count goes up by one)")
        elif call in ("send", "recv") and tid in gb:
            out += self._data_facts(rec, tid, gb)
        elif rec.kind == "sleep":
            for j in range(i):
                b = self.trace.steps[j]
                if b.blocked and (b.completed_after is None or b.completed_after >= i) and b.proc:
                    until = f" until step {b.completed_after}" if b.completed_after is not None else ""
                    out.append(f"{b.proc} is blocked in {call_text(b)} (step {j}){until}: nothing else runs in "
                               f"that process meanwhile, not even its timers")
            end = now + float(rec.args.get("seconds", 0))
            for n, d in gb.nodes(data=True):
                if d.get("kind") == "timewait" and now < d["expires"] <= end:
                    out.append(f"the {d['state']} entry {addr_text(d['laddr'], d['lport'])} -> "
                               f"{addr_text(d['raddr'], d['rport'])} expires at t={d['expires']:g} s, within this sleep")
            tws = sum(1 for _, d in gb.nodes(data=True) if d.get("kind") == "timewait")
            left = sum(1 for _, d in ga.nodes(data=True) if d.get("kind") == "timewait")
            if tws or left:
                out.append(f"TIME_WAIT entries: {tws} before, {left} after")
        elif rec.kind == "observe" and rec.args.get("what") == "tcp_states":
            port = rec.args.get("port")
            rows = [d for _, d in gb.nodes(data=True) if d.get("kind") in ("tcb", "timewait")
                    and (d.get("lport") == port or d.get("rport") == port) and d.get("proto", "tcp") == "tcp"
                    and not (d.get("kind") == "tcb" and d.get("state") == "CLOSE")]
            for d in rows:
                out.append(f"{addr_text(d['laddr'], d['lport'])}" + (f" -> {addr_text(d['raddr'], d['rport'])}" if d.get("raddr") else "")
                           + f" {d['state']}" + (f" ({d['label']})" if d.get("label") else "")
                           + (f" (left by the {d['origin']})" if d.get("origin") else ""))
        return out

    def _describe_tcb(self, tid: str, g: nx.DiGraph, what: str) -> str:
        d = g.nodes[tid]
        who = d.get("label") or f"socket {tid}"
        where = (f"{addr_text(d['laddr'], d['lport'])} -> {addr_text(d['raddr'], d['rport'])}" if d.get("raddr")
                 else (f"bound to {addr_text(d['laddr'], d['lport'])}" if d.get("lport") else "not bound"))
        flags = [f for f, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
        st = d["state"] if d["proto"] == "tcp" else d["proto"].upper()
        return f"{who}: {st}, {where}, " + (" and ".join(flags) if flags else "no SO_REUSEADDR")

    def _fd_facts(self, proc: str, g: nx.DiGraph, lowest: bool = True) -> list[str]:
        pn = f"proc:{proc}"
        if pn not in g:
            return []
        used = set()
        for n, d in g.nodes(data=True):
            if d.get("kind") == "fd" and d["proc"] == proc:
                used.add(d["fd"])
            if d.get("kind") == "std" and d["proc"] == proc:
                used.update(d["fds"])
        free = 0
        while free in used:
            free += 1
        nofile = g.nodes[pn].get("nofile")
        std = g.nodes[pn].get("std") or []
        out = [f"open fds in {proc}: {', '.join(map(str, sorted(used))) or 'none'}"
               + (f" ({', '.join(map(str, std))} are stdin/stdout/stderr)" if std else "")
               + (f"; the lowest free one is {free}" if lowest else "")]
        if not lowest:
            return out
        if nofile and free >= nofile:
            out.append(f"{free} is not below RLIMIT_NOFILE {nofile}")
        return out

    def _origin_proc_alive(self, proc: str | None, g: nx.DiGraph) -> bool | None:
        if not proc or f"proc:{proc}" not in g:
            return None
        return bool(g.nodes[f"proc:{proc}"].get("alive", True))

    def _port_facts(self, port: int, tid: str | None, g: nx.DiGraph, now: float) -> list[str]:
        owners = [(n, d) for n, d in port_owners(g, port) if n != tid]
        if not owners:
            return [f"port {port} has no owner in the bind table"]
        out = []
        for n, d in owners:
            if d["kind"] == "timewait":
                flags = "with SO_REUSEADDR" if d.get("reuse") else "without SO_REUSEADDR"
                s = (f"port {port} is held by a {d['state']} entry ({addr_text(d['laddr'], d['lport'])} -> "
                     f"{addr_text(d['raddr'], d['rport'])}) of a socket {flags}, expiring at t={d['expires']:g} s "
                     f"({max(0.0, d['expires'] - now):g} s from now")
                if abs(d.get("nominal", d["expires"]) - d["expires"]) > 1e-6:
                    s += f"; {d['nominal'] - d['entry']:g} s after entry, rounded up by the kernel's timer wheel"
                s += ")"
                if d.get("origin"):
                    s += f"; it was left by the {d['origin']}"
                    alive = self._origin_proc_alive(d.get("origin_proc"), g)
                    if alive is False:
                        s += f", whose process {d['origin_proc']} has exited"
                out.append(s)
            else:
                flags = [f for f, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
                who = d.get("label") or n
                out.append(f"port {port} is held by the {who}: {d['state']}, "
                           f"{addr_text(d['laddr'], d['lport'])}, " + (" and ".join(flags) if flags else "no SO_REUSEADDR"))
        return out

    def _connect_facts(self, rec: StepRecord, tid: str | None, g: nx.DiGraph, now: float) -> list[str]:
        out = []
        port = rec.args.get("port")
        addr = rec.args.get("addr", "127.0.0.1")
        listeners = [(n, d) for n, d in g.nodes(data=True) if d.get("kind") == "tcb" and d["state"] == "LISTEN"
                     and d["lport"] == port]
        if not listeners:
            bound = [d for _, d in port_owners(g, port) if d.get("kind") == "tcb"]
            if bound:
                out.append(f"port {port} is bound by the {bound[0].get('label') or 'a socket'}, which is not "
                           f"listening: a SYN to {addr}:{port} is answered with RST")
            else:
                out.append(f"nothing listens on port {port}: a SYN to {addr}:{port} is answered with RST")
        for n, d in listeners:
            q = g.nodes.get(f"acceptq:{n}", {})
            out.append(f"{addr_text(d['laddr'], d['lport'])} has the {d.get('label') or n}; its accept queue holds "
                       f"{q.get('queued', 0)} and is full above {q.get('backlog', d.get('backlog'))}")
        if tid in g and not g.nodes[tid].get("lport"):
            rng = g.graph.get("sysctls", {}).get("ip_local_port_range")
            out.append(f"the socket is not bound: connect() picks a local port from ip_local_port_range {rng}")
        tws = [d for _, d in g.nodes(data=True) if d.get("kind") == "timewait" and d["rport"] == port]
        for d in tws[:3]:
            out.append(f"a {d['state']} entry {addr_text(d['laddr'], d['lport'])} -> {addr_text(d['raddr'], d['rport'])} "
                       f"exists (expires at t={d['expires']:g} s); tcp_tw_reuse = "
                       f"{g.graph.get('sysctls', {}).get('tcp_tw_reuse')}")
        return out

    def _close_facts(self, rec: StepRecord, tid: str | None, g: nx.DiGraph) -> list[str]:
        out = []
        if rec.call == "exit" and rec.proc:
            fds = [(n, d) for n, d in g.nodes(data=True) if d.get("kind") == "fd" and d["proc"] == rec.proc]
            if fds:
                out.append(f"exit closes {rec.proc}'s fds " + ", ".join(str(d["fd"]) for _, d in fds))
            for n, d in fds:
                out += self._file_facts(n, g)
            return out
        fdn = None
        if rec.proc and isinstance(rec.args.get("sock"), (str, int)):
            for n, d in g.nodes(data=True):
                if d.get("kind") == "fd" and d["proc"] == rec.proc and (
                        d.get("name") == rec.args["sock"] or d["fd"] == rec.args["sock"]):
                    fdn = n
        if fdn:
            out += self._file_facts(fdn, g)
        if tid in g:
            d = g.nodes[tid]
            if d.get("rcv_q"):
                out.append(f"{d['rcv_q']} received byte(s) were never read")
            if d.get("linger") and d["linger"][0]:
                out.append(f"SO_LINGER is {{{d['linger'][0]}, {d['linger'][1]}}}")
        return out

    def _file_facts(self, fdn: str, g: nx.DiGraph) -> list[str]:
        d = g.nodes[fdn]
        files = [f for f in g.successors(fdn) if g.nodes[f].get("kind") == "file"]
        out = []
        for f in files:
            fd_ = g.nodes[f]
            hs = fd_.get("holders", [])
            refs = fd_.get("refs", 1)
            if refs > 1:
                out.append(f"fd {d['fd']} of {d['proc']} refers to an open file with {refs} references "
                           f"({', '.join(h.replace(':', ' fd ') for h in hs)}): closing one drops a reference, "
                           "the socket stays")
            else:
                out.append(f"fd {d['fd']} of {d['proc']} holds the only reference to its open file: "
                           "closing it releases the socket")
        return out

    def _data_facts(self, rec: StepRecord, tid: str, g: nx.DiGraph) -> list[str]:
        d = g.nodes[tid]
        out = []
        snd, rcv = g.nodes.get(f"snd:{tid}", {}), g.nodes.get(f"rcv:{tid}", {})
        if rec.call == "send":
            out.append(f"send queue: {snd.get('bytes', 0)} byte(s) not yet acknowledged; the buffer holds "
                       f"about {snd.get('capacity', 0)} bytes of payload (SO_SNDBUF {snd.get('size', 0)})")
            peer = self._peer(tid, g)
            if peer:
                pr = g.nodes.get(f"rcv:{peer}", {})
                out.append(f"the peer's receive queue holds {pr.get('bytes', 0)} unread byte(s) of about "
                           f"{pr.get('capacity', 0)} (SO_RCVBUF {pr.get('size', 0)})")
        else:
            out.append(f"receive queue: {rcv.get('bytes', 0)} unread byte(s)"
                       + ("; the peer's FIN has arrived" if d.get("fin_rcvd") else ""))
        if d.get("err"):
            out.append(f"a pending error {d['err']} is reported by the next call")
        for f in g.predecessors(tid):
            if g.nodes[f].get("kind") == "file" and g.nodes[f].get("nonblock"):
                out.append("the open file is non-blocking (O_NONBLOCK): no waiting, EAGAIN instead")
        return out

    @staticmethod
    def _peer(tid: str, g: nx.DiGraph) -> str | None:
        d = g.nodes[tid]
        for n, e in g.nodes(data=True):
            if e.get("kind") == "tcb" and n != tid and e.get("raddr") and (e["laddr"], e["lport"], e["raddr"], e["rport"]) == (
                    d.get("raddr"), d.get("rport"), d.get("laddr"), d.get("lport")):
                return n
        return None

    # ------------------------------------------------------------------ what if: the engine
    def _variant(self, data: dict[str, Any]) -> Recording | None:
        key = json.dumps(data, sort_keys=True, default=str)
        if key in self._runs:
            return self._runs[key]
        from .scenario.model import Scenario

        res: Recording | None
        try:
            sc = Scenario.model_validate(data)
            res = record(sc, seed=self.seed, graphs=False, personality=self.personality)
            self.runs += 1
        except Exception:  # an impossible variant (invalid, or the model refuses it)
            res = None
        self._runs[key] = res
        return res

    def _outcome_in(self, r: Recording, target: tuple[int, int | None]) -> str | None:
        for idx, key in enumerate(r.step_of):
            if key == target:
                rec = r.trace.steps[idx]
                out = outcome_text(rec)
                eff = r.effects.get(idx, "")
                return out + (f" ({eff})" if eff else "")
        return None

    def _apply(self, ops: list[tuple], target: int) -> tuple[dict[str, Any], int, dict[int, int]] | None:
        data = copy.deepcopy(self.base)
        steps: list[tuple[int | None, Any]] = list(enumerate(data["steps"]))

        def pos(orig: int) -> int:
            for j, (o, _) in enumerate(steps):
                if o == orig:
                    return j
            raise KeyError(orig)

        try:
            for op in ops:
                kind = op[0]
                if kind == "insert_before":
                    steps.insert(pos(op[1]), (None, op[2]))
                elif kind == "insert_after":
                    steps.insert(pos(op[1]) + 1, (None, op[2]))
                elif kind == "remove":
                    del steps[pos(op[1])]
                elif kind == "update":
                    j = pos(op[1])
                    steps[j] = (steps[j][0], {**steps[j][1], **op[2]})
                elif kind == "sysctl":
                    data.setdefault("host", {}).setdefault("sysctls", {})[op[1]] = op[2]
                elif kind == "process":
                    data["processes"].setdefault(op[1], {})
                    if op[2]:
                        data["processes"][op[1]][op[2]] = op[3]
            new_target = pos(target)
        except (KeyError, IndexError):
            return None
        data["steps"] = [s for _, s in steps]
        mapping = {o: j for j, (o, _) in enumerate(steps) if o is not None}
        return data, new_target, mapping

    def _whatifs(self, i: int, rec: StepRecord, gb: nx.DiGraph, ga: nx.DiGraph) -> list[WhatIf]:
        if i >= len(self.r.step_of):
            return []
        s, via = self.r.step_of[i]
        here = outcome_text(rec) + (f" ({self.r.effects[i]})" if self.r.effects.get(i) else "")
        cands: list[tuple[str, list[tuple], str]] = []
        for gen in (self._g_socket_args, self._g_reuse, self._g_wait, self._g_remove_options,
                    self._g_sysctls, self._g_backlog, self._g_listener, self._g_other_process,
                    self._g_read_first, self._g_close_others, self._g_earlier_calls, self._g_peer_data,
                    self._g_fd_alloc, self._g_wsastartup):
            try:
                cands.extend(gen(i, rec, s, gb, ga))
            except Exception:
                continue
        out: list[WhatIf] = []
        seen: set[str] = set()
        for label, ops, kind in cands:
            if label in seen or len(out) >= MAX_WHATIFS:
                continue
            seen.add(label)
            applied = self._apply(ops, s)
            if applied is None:
                continue
            data, new_s, mapping = applied
            # steps after the target cannot change its outcome unless it blocks: leave them out
            short = {**data, "steps": data["steps"][:new_s + 1]}
            r = self._variant(short)
            if r is not None and any(key == (new_s, via) and r.trace.steps[n].blocked
                                     for n, key in enumerate(r.step_of)):
                r = self._variant(data)
            if r is None:
                continue
            got = self._outcome_in(r, (new_s, via))
            if got is None:
                continue
            knock = self._knock_on(r, mapping, i, new_s)
            out.append(WhatIf(label + (f" (in that run {knock})" if knock else ""), got, got != here, kind))
        return out

    def _knock_on(self, r: Recording, mapping: dict[int, int], upto: int, new_target: int) -> str:
        """An added step that failed, or the first earlier step whose outcome the variant changed."""
        added = set(range(new_target)) - set(mapping.values())
        for idx, key in enumerate(r.step_of):
            if key[1] is None and key[0] in added:
                rec = r.trace.steps[idx]
                if rec.err:
                    return f"the added {call_text(rec)} gave {outcome_text(rec)}"
        for j in range(upto):
            s, via = self.r.step_of[j]
            if via is not None or s not in mapping:
                continue
            mine = self.trace.steps[j]
            if mine.kind not in ("call",):
                continue
            theirs = self._outcome_in(r, (mapping[s], None))
            ours = outcome_text(mine) + (f" ({self.r.effects[j]})" if self.r.effects.get(j) else "")
            if theirs is not None and theirs != ours:
                return f"step {j} {call_text(mine)} gave {theirs} first"
        return ""

    # ------------------------------------------------------------------ what if: helpers
    def _scenario_step(self, record_index: int | None) -> int | None:
        if record_index is None or record_index >= len(self.r.step_of):
            return None
        s, via = self.r.step_of[record_index]
        return None if via is not None else s

    def _carrier(self, tid: str) -> str:
        """Whose socket() call an option must follow: an accepted connection inherits its listener's."""
        info = self.r.tracks.get(tid, {})
        if info.get("role") == "accepted" and info.get("parent"):
            return info["parent"]
        return tid

    def _opt_ops(self, tid: str, opt: str, value: Any = 1) -> tuple[list[tuple], str] | None:
        """Operations that set ``opt`` right after the socket() call that created ``tid``."""
        info = self.r.tracks.get(tid, {})
        s = self._scenario_step(info.get("step"))
        if s is None or info.get("call") not in ("socket",):
            return None
        name = info.get("name")
        ops: list[tuple] = []
        if not name:
            name = f"whatif_{s}"
            ops.append(("update", s, {"as": name}))
        ops.append(("insert_after", s, {"proc": info["proc"], "call": "setsockopt", "sock": name,
                                        "opt": opt, "value": value}))
        noun = {"listener": "listener", "accepted": "connection", "client": "socket"}.get(info.get("role"), "socket")
        return ops, f"{noun} {name} of {info['proc']} (step {info.get('step')})"

    def _g_socket_args(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.call != "socket" or self._scenario_step(i) is None:
            return []
        a = rec.args
        now = (a.get("family", "AF_INET"), a.get("type", "SOCK_STREAM"), a.get("protocol", 0))
        combos = [("AF_INET", "SOCK_STREAM", 0), ("AF_INET", "SOCK_STREAM", "IPPROTO_TCP"),
                  ("AF_INET", "SOCK_DGRAM", 0), ("AF_INET", "SOCK_STREAM", "IPPROTO_UDP"),
                  ("AF_INET", "SOCK_DGRAM", "IPPROTO_TCP"), ("AF_INET6", "SOCK_STREAM", 0)]
        out = []
        for fam, typ, proto in combos:
            if (fam, typ, proto) == now:
                continue
            out.append((f"socket({fam}, {typ}, {proto}) instead",
                        [("update", s, {"family": fam, "type": typ, "protocol": proto})], "arguments"))
        return out

    def _g_reuse(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.call not in ("bind", "listen"):
            return []
        tid = self.r.step_sock.get(i)
        if not tid or tid not in gb:
            return []
        port = int(rec.args.get("port", 0) or 0) if rec.call == "bind" else gb.nodes[tid].get("lport", 0)
        if not port:
            return []
        owners = [(n, d) for n, d in port_owners(gb, port) if n != tid]
        if not owners:
            return []
        old: dict[str, dict[str, Any]] = {}
        for n, d in owners:
            src = d.get("track") if d["kind"] == "timewait" else n
            if not src:
                continue
            old.setdefault(self._carrier(src), d)
        new = self._carrier(tid)
        out = []
        for opt, key in WIN_OPTIONS if self.windows else (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")):
            new_has = bool(gb.nodes[tid].get(key))
            olds = [(c, d) for c, d in old.items() if not d.get(key)]
            mk_new = None if new_has else self._opt_ops(new, opt)
            mk_old = [m for m in (self._opt_ops(c, opt) for c, _ in olds) if m]
            old_words = " and ".join(f"the old {w}" for _, w in mk_old)
            old_ops = [o for m in mk_old for o in m[0]]
            if mk_new and mk_old:
                out.append((f"with {opt} on the new {mk_new[1]} only", mk_new[0], "option"))
                out.append((f"with {opt} on {old_words} only", old_ops, "option"))
                out.append((f"with {opt} on {old_words} and on the new {mk_new[1]}", old_ops + mk_new[0], "option"))
            elif mk_old:
                out.append((f"if {old_words} had {opt} too (the new socket has it)", old_ops, "option"))
            elif mk_new and old:
                out.append((f"with {opt} on the new {mk_new[1]} too (the old owner{'s have' if len(old) > 1 else ' has'} it)",
                            mk_new[0], "option"))
        return out

    def _g_wait(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.kind != "call" or rec.call not in ("bind", "listen", "connect") or self._scenario_step(i) is None:
            return []
        tid = self.r.step_sock.get(i)
        if rec.call == "connect":
            entries = [d for _, d in gb.nodes(data=True) if d.get("kind") == "timewait"
                       and d["rport"] == rec.args.get("port")]
        else:
            port = int(rec.args.get("port", 0) or 0) if rec.call == "bind" else (
                gb.nodes[tid].get("lport", 0) if tid in gb else 0)
            entries = [d for n, d in port_owners(gb, port) if d.get("kind") == "timewait"] if port else []
        if not entries:
            return []
        last = max(d["expires"] for d in entries)
        wait = round(last - rec.time + 0.5, 3)
        out = [(f"if this call came {wait:g} s later (the {entries[0]['state']} entr"
                f"{'ies expire' if len(entries) > 1 else 'y expires'} at t={last:g} s)",
                [("insert_before", s, {"sleep": wait})], "time")]
        if rec.call == "connect":
            out.append(("if this call came 1.1 s later (tcp_tw_reuse_delay is 1000 ms)",
                        [("insert_before", s, {"sleep": 1.1})], "time"))
        return out

    def _g_remove_options(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.kind != "call":
            return []
        involved = set()
        tid = self.r.step_sock.get(i)
        if tid:
            involved.add(tid)
            involved.add(self._carrier(tid))
        if rec.call in ("bind", "listen") and tid in gb:
            port = int(rec.args.get("port", 0) or 0) if rec.call == "bind" else gb.nodes[tid].get("lport", 0)
            for n, d in port_owners(gb, port) if port else []:
                src = d.get("track") if d["kind"] == "timewait" else n
                if src:
                    involved.update({src, self._carrier(src)})
        if rec.call in ("close", "closesocket") and tid:
            involved.add(tid)
        out = []
        for j in range(i - 1, -1, -1):
            r = self.trace.steps[j]
            if r.kind == "call" and r.call == "setsockopt" and self.r.step_sock.get(j) in involved \
                    and r.err is None and self._scenario_step(j) is not None:
                out.append((f"without setsockopt({r.args.get('sock')}, {r.args.get('opt')}, "
                            f"{r.args.get('value')}) at step {j}", [("remove", self._scenario_step(j))], "option"))
            if len(out) >= 3:
                break
        return out

    def _g_sysctls(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.kind != "call":
            return []
        out = []
        sysctls = gb.graph.get("sysctls", {}) or {}
        err = (rec.err or "").replace("WSAE", "E")
        trail = set(rec.trail)
        if rec.call == "connect" and (err == "EADDRNOTAVAIL" or "tw.reuse_for_connect" in trail):
            rng = sysctls.get("ip_local_port_range")
            if rng and tuple(rng) != (32768, 60999):
                out.append(("with the default ip_local_port_range 32768-60999",
                            [("sysctl", "ip_local_port_range", [32768, 60999])], "sysctl"))
            cur = sysctls.get("tcp_tw_reuse")
            for v in (0, 1):
                if v != cur:
                    out.append((f"with net.ipv4.tcp_tw_reuse = {v}", [("sysctl", "tcp_tw_reuse", v)], "sysctl"))
            if sysctls.get("tcp_timestamps"):
                out.append(("with net.ipv4.tcp_timestamps = 0", [("sysctl", "tcp_timestamps", 0)], "sysctl"))
        if err == "EMFILE" and rec.proc and rec.proc in self.sc.processes:
            lim = self.sc.processes[rec.proc].nofile
            out.append((f"with RLIMIT_NOFILE {lim * 2} for {rec.proc} instead of {lim}",
                        [("process", rec.proc, "nofile", lim * 2)], "limit"))
        if err == "EACCES" and rec.call == "bind" and rec.proc in self.sc.processes:
            out.append((f"if {rec.proc} ran as root (uid 0, CAP_NET_BIND_SERVICE)",
                        [("process", rec.proc, "uid", 0)], "limit"))
            port = int(rec.args.get("port", 0) or 0)
            if port:
                out.append((f"with net.ipv4.ip_unprivileged_port_start = {port}",
                            [("sysctl", "ip_unprivileged_port_start", port)], "sysctl"))
        return out

    def _g_backlog(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        if rec.call != "connect":
            return []
        port = rec.args.get("port")
        for n, d in gb.nodes(data=True):
            if d.get("kind") == "tcb" and d["state"] == "LISTEN" and d["lport"] == port:
                q = gb.nodes.get(f"acceptq:{n}", {})
                if q.get("queued", 0) <= q.get("backlog", 0):
                    continue
                for j, r in enumerate(self.trace.steps[:i]):
                    if r.call == "listen" and self.r.step_sock.get(j) == n and self._scenario_step(j) is not None:
                        b = int(r.args.get("backlog", 128))
                        return [(f"with listen({r.args.get('sock')}, {b + 5}) instead of {b} at step {j}",
                                 [("update", self._scenario_step(j), {"backlog": b + 5})], "backlog")]
        return []

    def _g_listener(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        err = (rec.err or "").replace("WSAE", "E")
        if rec.call != "connect" or err != "ECONNREFUSED":
            return []
        port, addr = rec.args.get("port"), rec.args.get("addr", "127.0.0.1")
        owners = port_owners(gb, port)
        out = []
        for n, d in owners:  # bound but not listening yet: what if its listen() came earlier?
            if d.get("kind") != "tcb" or d.get("state") == "LISTEN":
                continue
            for j in range(i + 1, len(self.trace.steps)):
                r = self.trace.steps[j]
                sj = self._scenario_step(j)
                if r.call == "listen" and self.r.step_sock.get(j) == n and sj is not None:
                    step = copy.deepcopy(self.base["steps"][sj])
                    out.append((f"if {r.proc}'s {call_text(r)} at step {j} had come before this call",
                                [("remove", sj), ("insert_before", s, step)], "order"))
                    break
        if not owners:
            name = "whatif_listener"
            ops = [("process", name, None, None),
                   ("insert_before", s, {"proc": name, "call": "socket", "as": "l"}),
                   ("insert_before", s, {"proc": name, "call": "bind", "sock": "l", "addr": addr, "port": port}),
                   ("insert_before", s, {"proc": name, "call": "listen", "sock": "l", "backlog": 5})]
            out.append((f"if a process listened on {addr}:{port}", ops, "peer"))
        return out

    def _g_other_process(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        err = (rec.err or "").replace("WSAE", "E")
        if rec.kind != "call" or err not in ("EBADF", "ENOTSOCK") or not rec.proc:
            return []
        sock = rec.args.get("sock")
        fd = sock if isinstance(sock, int) else None
        if fd is None:
            return []
        out = []
        for n, d in gb.nodes(data=True):
            if d.get("kind") == "fd" and d["fd"] == fd and d["proc"] != rec.proc:
                out.append((f"the same call in process {d['proc']}, where fd {fd} is a socket",
                            [("update", s, {"proc": d["proc"]})], "process"))
        return out[:2]

    def _holder_fd(self, tid: str, g: nx.DiGraph) -> tuple[str, int] | None:
        for h in holders_of(g, tid):
            p, fd = h.split(":")
            return p, int(fd)
        return None

    def _g_read_first(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        tid = self.r.step_sock.get(i)
        if rec.call not in ("close", "closesocket") or not tid or tid not in gb:
            return []
        unread = gb.nodes[tid].get("rcv_q", 0)
        if not unread or not rec.proc:
            return []
        return [(f"if {rec.proc} had read the {unread} unread byte(s) first",
                 [("insert_before", s, {"proc": rec.proc, "call": "recv", "sock": rec.args.get("sock"),
                                        "bytes": unread})], "order")]

    def _g_close_others(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        tid = self.r.step_sock.get(i)
        if rec.call not in ("close", "closesocket") or not tid or tid not in gb:
            return []
        mine = None
        for n, d in gb.nodes(data=True):
            if d.get("kind") == "fd" and d["proc"] == rec.proc and (
                    d.get("name") == rec.args.get("sock") or d["fd"] == rec.args.get("sock")):
                mine = f"{d['proc']}:{d['fd']}"
        others = [h for h in holders_of(gb, tid) if h != mine]
        if not others:
            return []
        ops = []
        for h in others:
            p, fd = h.split(":")
            ops.append(("insert_before", s, {"proc": p, "call": "close", "sock": int(fd)}))
        who = ", ".join(h.replace(":", "'s fd ") for h in others)
        return [(f"if {who} had been closed first (so this close drops the last reference)", ops, "order")]

    def _g_earlier_calls(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        err = (rec.err or "").replace("WSAE", "E")
        interesting = err in ("EBADF", "EPIPE", "ECONNRESET", "ENOTCONN", "EINVAL", "EISCONN") or (
            rec.call == "recv" and rec.ret == 0 and not rec.err)
        if rec.kind != "call" or not interesting:
            return []
        tid = self.r.step_sock.get(i)
        related = {tid} if tid else set()
        if tid and tid in gb:
            peer = self._peer(tid, gb)
            if peer:
                related.add(peer)
        out = []
        for j in range(i - 1, -1, -1):
            r = self.trace.steps[j]
            sj = self._scenario_step(j)
            if r.kind != "call" or sj is None:
                continue
            hit = self.r.step_sock.get(j) in related and r.call in (
                "close", "closesocket", "shutdown", "listen", "connect", "send")
            if err == "EBADF" and r.proc == rec.proc and r.call in ("close", "closesocket") and \
                    r.args.get("sock") == rec.args.get("sock"):
                hit = True
            if hit:
                out.append((f"without {r.proc}'s {call_text(r)} at step {j}", [("remove", sj)], "order"))
            if len(out) >= 3:
                break
        return out

    def _g_wsastartup(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        """On Windows every socket call needs an outstanding WSAStartup: what if it had been left out?"""
        if not self.windows or rec.kind != "call" or rec.call in ("WSAStartup", "WSACleanup"):
            return []
        starts = [j for j, st in enumerate(self.sc.steps[:s])
                  if getattr(st, "call", None) == "WSAStartup" and st.proc == rec.proc]
        if not starts:
            return []
        return [(f"without the WSAStartup of {rec.proc} (step {', '.join(map(str, starts))})",
                 [("remove", j) for j in starts], "call")]

    def _g_fd_alloc(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        """A new descriptor takes the lowest free number: what if the last close had not freed one?"""
        if rec.kind != "call" or rec.call not in ("socket", "accept", "dup") or not rec.proc:
            return []
        for j in range(i - 1, -1, -1):
            r = self.trace.steps[j]
            sj = self._scenario_step(j)
            if r.kind == "call" and r.proc == rec.proc and r.call in ("close", "closesocket") and \
                    r.err is None and sj is not None:
                return [(f"without {r.proc}'s {call_text(r)} at step {j}", [("remove", sj)], "order")]
        return []

    def _g_peer_data(self, i: int, rec: StepRecord, s: int, gb: nx.DiGraph, ga: nx.DiGraph) -> list:
        tid = self.r.step_sock.get(i)
        if not tid or tid not in gb:
            return []
        err = (rec.err or "").replace("WSAE", "E")
        out = []
        if rec.call == "recv" and (rec.blocked or err == "EAGAIN"):
            peer = self._peer(tid, gb)
            h = self._holder_fd(peer, gb) if peer else None
            if h:
                out.append((f"if {h[0]} had sent 100 bytes first",
                            [("insert_before", s, {"proc": h[0], "call": "send", "sock": h[1], "bytes": 100})], "order"))
        if rec.call == "send" and (rec.blocked or err == "EAGAIN"):
            peer = self._peer(tid, gb)
            h = self._holder_fd(peer, gb) if peer else None
            if h:
                pr = gb.nodes.get(f"rcv:{peer}", {})
                n = max(1, pr.get("bytes", 0))
                out.append((f"if {h[0]} had read its {n} queued byte(s) first",
                            [("insert_before", s, {"proc": h[0], "call": "recv", "sock": h[1], "bytes": n})], "order"))
            size = gb.nodes.get(f"snd:{tid}", {}).get("size", 0)
            if size and rec.proc:
                out.append((f"with SO_SNDBUF {size * 4} set just before",
                            [("insert_before", s, {"proc": rec.proc, "call": "setsockopt",
                                                   "sock": rec.args.get("sock"), "opt": "SO_SNDBUF",
                                                   "value": size * 4})], "option"))
        return out


# =============================================================================== rendering


def render_text(ex: Explanation) -> str:
    """A plain-text explanation of one step (what ``socksim explain`` prints)."""
    lines = []
    head = f"step {ex.index}"
    where = [f"line {ex.line}" if ex.line else "", f"t={ex.time:.6g} s"]
    head += f"  ({', '.join(w for w in where if w)})"
    who = f"{ex.proc}: " if ex.proc else ""
    lines.append(f"{head}  {who}{ex.what}  ->  {ex.outcome}")
    if ex.via:
        lines.append(f"  called by: {ex.via}")
    if ex.expect is not None:
        lines.append(f"  expected {ex.expect}: {'met' if ex.expect_ok else 'NOT met' if ex.expect_ok is False else '-'}")
    if ex.note:
        lines.append(f"  note: {ex.note}")
    lines.append("")
    if ex.rule:
        lines.append(f"  decided by  {ex.rule}")
    else:
        lines.append(f"  decided by  ({ex.decided_by})")
    lines.append(f"  source      {ex.cite or '-'}")
    if ex.doc and "\n" in ex.doc.strip():
        for d in ex.doc.strip().splitlines()[1:]:
            if d.strip():
                lines.append(f"              {d.strip()}")
    if ex.trail and len(ex.trail) > 1:
        lines.append("  rules consulted: " + ", ".join(r for r, _ in ex.trail))
    if ex.syscalls:
        lines.append("")
        lines.append("  the system calls Qt made:")
        lines += [f"    - {c}" for c in ex.syscalls]
    if ex.facts:
        lines.append("")
        lines.append("  what the rule looked at:")
        lines += [f"    - {f}" for f in ex.facts]
    if ex.state:
        lines.append("")
        lines.append("  the kernel's tables just before the step:")
        lines += [f"    - {f}" for f in ex.state]
    if ex.during:
        lines.append("")
        lines.append("  during the step:")
        lines += [f"    - {f}" for f in ex.during]
    if ex.effect:
        lines.append(f"  afterwards: {ex.effect}")
    changed = [w for w in ex.whatifs if w.changed]
    same = [w for w in ex.whatifs if not w.changed]
    if changed:
        lines.append("")
        lines.append("  what would have changed the outcome (each variant re-run on the model):")
        lines += [f"    - {w.label}: {w.outcome}" for w in changed]
    if same:
        lines.append("")
        lines.append("  what would not have changed it:")
        lines += [f"    - {w.label}: still {w.outcome}" for w in same]
    return "\n".join(lines)


def print_explanations(scenario: Any, trace: Any = None, seed: int = 0, steps: list[int] | None = None,
                       whatif: bool = True, out: Any = None, personality: str | None = None) -> None:
    """Print the explanation of every step (or of ``steps``); the hook for ``socksim run --explain``.

    The scenario is re-run with ``seed`` (and ``personality``, default: the trace's or the
    scenario's) so that the kernel can be read around each step.
    """
    out = out or sys.stdout
    if personality is None and trace is not None and getattr(trace, "personality", None) != \
            getattr(getattr(scenario, "host", None), "personality", None):
        personality = trace.personality
    ex = Explainer(scenario, seed=seed, whatif=whatif, personality=personality)
    idx = steps if steps is not None else range(len(ex.trace.steps))
    for i in idx:
        print(render_text(ex.explain(i)), file=out)
        print(file=out)


# =============================================================================== command


def _find_track(r: Recording, spec: str) -> str | None:
    """A connection by tcb id, 'proc:name', 'proc:fd', or part of its label."""
    if spec in r.tracks:
        return spec
    if ":" in spec:
        p, n = spec.split(":", 1)
        for tid, info in r.tracks.items():
            if info.get("proc") == p and (info.get("name") == n or str(info.get("fd")) == n):
                return tid
    for tid, info in r.tracks.items():
        if spec in (info.get("label") or ""):
            return tid
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    from . import graph as G

    def bad(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    if not args.file:
        if not args.states:
            return bad("give a scenario FILE (or --states OUT to write the plain state diagram)")
        G.write_graph(G.state_drawing(title="TCP states (generated from sim/kernel/tcp_states.py TRANSITIONS)"),
                      args.states)
        print(f"wrote {args.states}")
        return 0
    from .scenario.loader import ScenarioError, load_file

    try:
        sc = load_file(args.file)
    except ScenarioError as e:
        return bad(str(e))
    seed = args.seed if args.seed is not None else sc.seed
    if args.personality:
        from .personality import PERSONALITIES

        if args.personality not in PERSONALITIES:
            return bad(f"--personality: unknown personality {args.personality!r}; "
                       f"expected one of: {', '.join(sorted(PERSONALITIES))}")
    ex = Explainer(sc, seed=seed, whatif=not args.no_whatif, personality=args.personality)
    n = len(ex.trace.steps)
    steps = args.step if args.step else list(range(n))
    for s in steps:
        if not 0 <= s < n:
            return bad(f"--step {s}: the trace has steps 0..{n - 1}")
    exps = [ex.explain(s) for s in steps]
    if args.json:
        from pathlib import Path

        p = Path(args.json)
        if p.is_dir() or not p.parent.exists():
            return bad(f"{args.json}: not a writable file path")
        p.write_text(json.dumps([e.to_dict() for e in exps], indent=2, default=str) + "\n")
    at = steps[-1]
    if args.graph:
        g = ex.r.after(at)
        dr = G.object_drawing(g, G.changed_nodes(ex.r.before(at), g), title=f"after step {at}: {exps[-1].what}")
        G.write_graph(dr, args.graph)
    if args.states:
        tid = _find_track(ex.r, args.conn) if args.conn else ex.r.step_sock.get(at)
        if args.conn and tid is None:
            labels = "; ".join(f"{k}: {v.get('label')}" for k, v in ex.r.tracks.items())
            return bad(f"--conn {args.conn}: no such connection (known: {labels})")
        path = ex.r.path(tid, upto=at) if tid else []
        title = f"path of the {ex.r.tracks.get(tid, {}).get('label', tid)} up to step {at}" if tid else ""
        G.write_graph(G.state_drawing(path, title=title), args.states)
    if not args.quiet:
        for e in exps:
            print(render_text(e))
            print()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain", help="why a step turned out as it did, and what would have changed it",
        description="Explain steps of a scenario: the rule that decided each outcome and its source, "
                    "the facts it looked at, the kernel's tables before the step, and what-if variants "
                    "of the scenario re-run on the model. Optionally write the kernel object graph and "
                    "the TCP state diagram (DOT or SVG, by file extension).")
    p.add_argument("file", nargs="?", help="scenario .yaml file")
    p.add_argument("--step", type=int, action="append", metavar="N",
                   help="the step to explain (repeatable; default: every step)")
    p.add_argument("--seed", type=int, help="seed for the kernel's random choices (default: the scenario's)")
    p.add_argument("--personality", metavar="NAME", help="run under this personality (linux, windows) "
                   "instead of the scenario's")
    p.add_argument("--json", metavar="PATH", help="also write the explanations as JSON")
    p.add_argument("--graph", metavar="OUT", help="write the kernel object graph after the (last) step: .dot or .svg")
    p.add_argument("--states", metavar="OUT", help="write the TCP state diagram with the path of a connection: .dot or .svg")
    p.add_argument("--conn", metavar="PROC:NAME", help="the connection whose path --states highlights "
                   "(default: the step's socket)")
    p.add_argument("--no-whatif", action="store_true", help="skip the what-if re-runs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_explain)
