"""Counterfactuals: variants of the scenario, re-run on the model, that would have changed a step's outcome."""

from __future__ import annotations

import copy
import json
from typing import Any

import networkx as nx

from .windows import OPTIONS as WIN_OPTIONS
from ..graph import Recording, holders_of, port_owners, record
from ..trace import StepRecord
from .text import MAX_WHATIFS, WhatIf, call_text, outcome_text


FORK_MIN_STEPS = 24  # a variant that shares fewer steps with the base runs from the start
FORK_MIN_VARIANTS = 40  # fewer variants than this: not worth starting the worker process


def outcome_in(r: Recording, target: tuple[int, int | None], index: dict[int, Any]) -> str | None:
    """The outcome text of the record of ``r`` for scenario step ``target`` (step, via);
    ``index`` caches each recording's record positions."""
    got = index.get(id(r))
    if got is None or got[0] is not r:
        first: dict[tuple[int, int | None], int] = {}
        for idx, key in enumerate(r.step_of):
            first.setdefault(key, idx)
        got = index[id(r)] = (r, first)
    idx = got[1].get(target)
    if idx is None:
        return None
    eff = r.effects.get(idx, "")
    return outcome_text(r.trace.steps[idx]) + (f" ({eff})" if eff else "")


def base_rows(r: Recording) -> list[tuple[int, int | None, str, str, str]]:
    """Per record of the base run: its step, via, kind, outcome (with effect) and call text."""
    rows = []
    for j, rec in enumerate(r.trace.steps[:len(r.step_of)]):
        s, via = r.step_of[j]
        eff = r.effects.get(j)
        rows.append((s, via, rec.kind, outcome_text(rec) + (f" ({eff})" if eff else ""), call_text(rec)))
    return rows


def knock_on(r: Recording, base: list[tuple], mapping: dict[int, int], upto: int, new_target: int,
             index: dict[int, Any]) -> str:
    """An added step that failed, or the first earlier step whose outcome the variant changed."""
    added = set(range(new_target)) - set(mapping.values())
    for idx, key in enumerate(r.step_of):
        if key[1] is None and key[0] in added:
            rec = r.trace.steps[idx]
            if rec.err:
                return f"the added {call_text(rec)} gave {outcome_text(rec)}"
    for j in range(upto):
        s, via, kind, ours, what = base[j]
        if via is not None or s not in mapping or kind != "call":
            continue
        theirs = outcome_in(r, (mapping[s], None), index)
        if theirs is not None and theirs != ours:
            return f"step {j} {what} gave {theirs} first"
    return ""


def blocks(r: Recording, new_s: int, via: int | None) -> bool:
    """Whether the variant's target step blocked (then the steps after it matter)."""
    return any(key == (new_s, via) and r.trace.steps[n].blocked for n, key in enumerate(r.step_of))


def judge(r: Recording, base: list[tuple], i: int, new_s: int, via: int | None,
          mapping: dict[int, int]) -> tuple[bool, str | None, str]:
    """What an explanation needs of a variant's run: blocked?, the target's outcome, the knock-on."""
    if blocks(r, new_s, via):
        return True, None, ""
    index: dict[int, Any] = {}
    got = outcome_in(r, (new_s, via), index)
    return False, got, knock_on(r, base, mapping, i, new_s, index) if got is not None else ""


class _Impossible(Exception):
    """A what-if variant that the loader would refuse (it names a capture no step makes)."""


def _refuse(_line: int, _col: int, msg: str) -> None:
    raise _Impossible(msg)


class WhatIfs:
    """What-if variants of a step (a part of :class:`~.explainer.Explainer`)."""

    # ------------------------------------------------------------------ what if: the engine
    def _variant(self, data: dict[str, Any]) -> Recording | None:
        key = json.dumps(data, sort_keys=True, default=str)
        if key in self._runs:
            return self._runs[key]
        from pydantic import ValidationError

        from ..scenario.model import Scenario
        from ..scenario.validate import check_scenario

        res: Recording | None
        try:
            sc = Scenario.model_validate(data)
            # the loader's whole-scenario checks too: a variant that removes a capturing step
            # leaves later uses and checks naming nothing, and is not a scenario either
            check_scenario(sc, data, lambda _path: (0, 0), _refuse)
        except (ValidationError, _Impossible):  # an impossible variant: not a valid scenario
            res = None
        else:  # a crash of the model on a valid variant is a failure, not a skipped line
            res = record(sc, seed=self.seed, graphs=False, personality=self.personality)
            self.runs += 1
        self._runs[key] = res
        return res

    def _outcome_in(self, r: Recording, target: tuple[int, int | None]) -> str | None:
        return outcome_in(r, target, self._record_of)

    def _apply(self, ops: list[tuple], target: int) -> tuple[dict[str, Any], int, dict[int, int]] | None:
        # the steps are shared with the base (an operation replaces a step, never changes one in place):
        # copying every step for every variant made a page's what-ifs grow with the square of its steps
        data = {k: v if k == "steps" else copy.deepcopy(v) for k, v in self.base.items()}
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

    def _candidates(self, i: int, rec: StepRecord, gb: nx.DiGraph, ga: nx.DiGraph) -> list[tuple]:
        """Step ``i``'s what-if variants: (label, kind, the variant cut after the target, the whole
        variant, the target's new step, its via, the old-to-new step mapping)."""
        s, via = self.r.step_of[i]
        cands: list[tuple[str, list[tuple], str]] = []
        for gen in (self._g_socket_args, self._g_reuse, self._g_wait, self._g_remove_options,
                    self._g_sysctls, self._g_backlog, self._g_listener, self._g_other_process,
                    self._g_read_first, self._g_close_others, self._g_earlier_calls, self._g_peer_data,
                    self._g_fd_alloc, self._g_wsastartup):
            cands.extend(gen(i, rec, s, gb, ga))
        out: list[tuple] = []
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
            out.append((label, kind, short, data, new_s, via, mapping))
        return out

    def _whatifs(self, i: int, rec: StepRecord, gb: nx.DiGraph, ga: nx.DiGraph) -> list[WhatIf]:
        if i >= len(self.r.step_of):
            return []
        here = outcome_text(rec) + (f" ({self.r.effects[i]})" if self.r.effects.get(i) else "")
        out: list[WhatIf] = []
        for label, kind, short, data, new_s, via, mapping in self._candidates(i, rec, gb, ga):
            done = self._forked.get((i, label))
            if done is not None and not done[0]:  # run from the base run's state (prefetch_whatifs)
                got, knock = done[1], done[2]
            else:
                r = self._variant(short)
                if r is not None and blocks(r, new_s, via):
                    r = self._variant(data)
                if r is None:
                    continue
                got = self._outcome_in(r, (new_s, via))
                knock = self._knock_on(r, mapping, i, new_s) if got is not None else ""
            if got is None:
                continue
            out.append(WhatIf(label + (f" (in that run {knock})" if knock else ""), got, got != here, kind))
        return out

    def prefetch_whatifs(self) -> None:
        """Run the what-if variants of every record at once, each forked from one more run of the
        base scenario at its first changed step (sim/explain/forked.py): the cost grows with the
        steps, not with their square. Variants that change more than steps, that share a short
        prefix with the base, or that block, and all of them where forking is unavailable or
        there are few, run from the start as before."""
        from pydantic import ValidationError

        from ..scenario.model import QtStep, Scenario, TimerStep
        from ..scenario.validate import check_scenario
        from .forked import Job, can_fork, first_changed, run_forked

        if not self.whatif or not can_fork() or self._prefetched:
            return
        self._prefetched = True
        base_sc = Scenario.model_validate(self.base)
        if any(isinstance(st, (QtStep, TimerStep)) for st in base_sc.steps):
            return  # a Qt program's event loops are set up from all its steps at the start
        jobs: list[Job] = []
        for i, rec in enumerate(self.trace.steps):
            if i >= len(self.r.step_of):
                break
            gb, ga = self.r.before(i), self.r.after(i)
            for label, _kind, short, _data, new_s, via, mapping in self._candidates(i, rec, gb, ga):
                at = first_changed(self.base, short)
                if at is None or at < FORK_MIN_STEPS:
                    continue  # a short prefix re-runs faster than a process forks
                try:
                    sc = Scenario.model_validate(short)
                    check_scenario(sc, short, lambda _path: (0, 0), _refuse)
                except (ValidationError, _Impossible):
                    continue
                if any(isinstance(st, (QtStep, TimerStep)) for st in sc.steps):
                    continue
                jobs.append(Job((i, label), at, sc.steps[at:], i, new_s, via, mapping))
        if len(jobs) < FORK_MIN_VARIANTS:
            return
        if self._base_rows is None:
            self._base_rows = base_rows(self.r)
        self._forked.update(run_forked(base_sc, jobs, self._base_rows, self.seed, self.personality))
        self.runs += len(self._forked) + 1

    def _knock_on(self, r: Recording, mapping: dict[int, int], upto: int, new_target: int) -> str:
        if self._base_rows is None:
            self._base_rows = base_rows(self.r)
        return knock_on(r, self._base_rows, mapping, upto, new_target, self._record_of)

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
