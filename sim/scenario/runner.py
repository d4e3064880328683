"""Drive one backend through a scenario, step by step, in the scenario's global order.

The runner owns what the scenario means, not what a kernel does: it resolves socket names to
the fd numbers the backend returned, checks expectations, and records every step in a
:class:`~sim.trace.Trace`. Both backends go through exactly this code, so their traces line up.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..personality import get as get_personality
from ..trace import BLOCKED, Backend, CallResult, StepRecord, Trace, WireNumbering
from ..engine.qt.qtimer import QtTimers
from ..kernel.rules import RULES, Trail, activate, decisive
from .captures import Captures, run_checks
from .expect import call_ok, canon
from .fields import WINDOWS_ONLY_OPTIONS
from .validate import POINTER_KEYS
from .model import (
    ForkCall, LoadStep, ObserveStep, QtCall, QtStep, Scenario, SleepStep, SysctlStep, TimerStep, call_args,
    step_kind,
)
from .qtsteps import QtSteps

REF_KEYS = ("port", "addr", "value")


def _canon(name: str) -> str:
    """EADDRINUSE and WSAEADDRINUSE are one error; EWOULDBLOCK is EAGAIN."""
    return canon(name)


NOT_MODELLED = "NOT_MODELLED"  # a Windows-only argument or option run under another personality


def _api_call(pers, call: str, proc: str, last_err: dict[str, tuple[str, int]],
              args: dict[str, Any] | None = None) -> CallResult | None:
    """Calls that no kernel sees: handled by the personality's API conventions, the same for both backends."""
    if pers.name != "windows" and args and (any(k in args for k in POINTER_KEYS)
                                            or args.get("opt") in WINDOWS_ONLY_OPTIONS):
        what = args.get("opt") if args.get("opt") in WINDOWS_ONLY_OPTIONS else "NULL pointers and address lengths"
        return CallResult(ret=None, err=NOT_MODELLED, rule="api.not_modelled",
                          cite="modelled for the Windows personality only",
                          facts=[f"{pers.name}: {what} not modelled; the call is not made"])
    op = pers.kernel_call(call)
    if op == "nop":
        return CallResult(ret=0, rule="api.nop",
                          cite=f"{call} has no POSIX counterpart: a portable program compiles it out",
                          facts=[f"{pers.name}: {call} does nothing"])
    if op == "get_errno":
        name, num = last_err.get(proc, ("none", 0))
        return CallResult(ret=num, rule="api.last_error", cite=pers.citation,
                          facts=[f"the last error of process {proc} is {name} ({num})"])
    return None


class _Run:
    """One pass of a scenario over one backend."""

    def __init__(self, scenario: Scenario, backend: Backend, seed: int | None,
                 on_step: Callable[[StepRecord], None] | None, personality: str | None,
                 follow: Trace | None = None, at_step: Callable[[Any, int], None] | None = None):
        self.sc, self.backend, self.on_step = scenario, backend, on_step
        self.at_step = at_step  # called before each scenario step (see switch())
        self.step_times = step_times(follow) if follow is not None else {}
        self.step_calls = followed_calls(follow) if follow is not None else {}
        self.clock_start = follow.summary.get("clock_start") if follow is not None else None
        self.data = scenario.model_dump(by_alias=True)
        # only the settings the scenario sets: each kernel (and the real one) keeps its own defaults
        self.data["host"]["sysctls"] = scenario.host.sysctls.model_dump(exclude_unset=True)
        for h, spec in scenario.hosts.items():
            self.data["hosts"][h]["sysctls"] = spec.sysctls.model_dump(exclude_unset=True)
        pname = personality or scenario.host.personality
        self.data["host"]["personality"] = pname
        self.pers = get_personality(pname)
        self.last_err: dict[str, tuple[str, int]] = {}
        self.trace = Trace(scenario=scenario.name, backend=backend.name, personality=pname, seed=seed)
        self.names: dict[str, dict[str, int]] = {p: {} for p in scenario.processes}
        self.pending_names: dict[int, tuple[str, str]] = {}  # record index -> (proc, name)
        self.blocked: dict[str, int] = {}  # proc -> record index of its pending call
        self.timers = QtTimers()
        self.qt_trail = Trail()  # the rules and facts of the QTimer layer (above any kernel)
        self.timer_lines: dict[tuple[str, str], int] = {}
        self.timer_steps: dict[tuple[str, str], int] = {}
        self.cur_step = 0
        self.numbering = WireNumbering()
        self.caps = Captures(scenario, self.trace.steps)
        self.capture_of: dict[int, str] = {}  # record index -> capture name (blocked calls)
        self.qt = QtSteps(self)

    # ---------------------------------------------------------------- main loop
    def go(self) -> Trace:
        wall = time.monotonic()
        self.backend.start(self.data)
        if isinstance(self.clock_start, (int, float)) and hasattr(self.backend, "set_clock_start"):
            self.backend.set_clock_start(float(self.clock_start))
        try:
            self.qt.start()
            i = 0
            while i < len(self.sc.steps):  # switch() may replace the steps still to come
                if self.at_step is not None:
                    self.at_step(self, i)
                step = self.sc.steps[i]
                line = self.sc.step_lines[i] if i < len(self.sc.step_lines) else 0
                self.cur_step = i
                self._follow(i)
                if hasattr(self.backend, "begin_step"):  # the real backend names steps in faults
                    self.backend.begin_step(i)
                self.step(step, line)
                if i in self.step_calls:
                    self.backend.follow_call(None)
                self._wire(len(self.trace.steps) - 1)
                i += 1
            for rec in run_checks(self.sc, self.caps, lambda kind, line: self._record(kind, line)):
                self.trace.steps.append(rec)
                if self.on_step:
                    self.on_step(rec)
        finally:
            self.trace.summary = self.backend.close()
            if "rules_hit" in self.trace.summary:
                qt = self.qt_trail.all_hits()
                if qt:
                    self.trace.summary["rules_hit"] = sorted(set(self.trace.summary["rules_hit"]) | qt)
        self.trace.meta["wall_seconds"] = round(time.monotonic() - wall, 3)
        self.trace.meta["source"] = self.sc.source
        return self.trace

    def switch(self, scenario: Scenario) -> None:
        """Go on with ``scenario``'s steps from the current one: it must have the same processes,
        hosts and earlier steps (a what-if variant forked from this run at its first changed step)."""
        self.sc = scenario
        self.caps.sc = scenario

    def _follow(self, i: int) -> None:
        """Start step ``i`` at the time the followed run started it: real time passes between a
        real run's steps (each takes milliseconds, a long run many seconds), and rules that read
        the clock (TIME_WAIT reuse after tcp_tw_reuse_delay, timers, timestamps) must see the
        same time on both sides. The clock only moves forward; timers due meanwhile fire."""
        t = self.step_times.get(i)
        if t is not None and t > self.backend.now():
            self.sleep(t - self.backend.now())
        call = self.step_calls.get(i)
        if call is not None and hasattr(self.backend, "follow_call"):
            self.backend.follow_call(call)
        elif call is not None:
            del self.step_calls[i]

    def _record(self, kind: str, line: int, expect: Any = None, step: Any = None) -> StepRecord:
        rec = StepRecord(index=len(self.trace.steps), line=line, kind=kind,
                         time=round(self.backend.now(), 9), expect=expect, step=self.cur_step)
        if step is not None and getattr(step, "tolerate", None):
            rec.tolerate = [t.model_dump() for t in step.tolerate]
        return rec

    def _wire(self, rec: int) -> None:
        """Link the segments the backend put on the wire since the last look to record ``rec``."""
        get = getattr(self.backend, "wire_segments", None)
        if get is None or rec < 0:
            return
        segs = get()
        if not segs:
            return
        states_of = getattr(self.backend, "endpoint_states", None)
        states = states_of() if states_of is not None else {}
        for seg in segs:
            w = self.numbering.add(rec, seg)
            w.states = [states.get((w.src, w.dst), "CLOSE"), states.get((w.dst, w.src), "CLOSE")]
            self.trace.wire.append(w)

    def _finish(self, rec: StepRecord) -> None:
        self.trace.steps.append(rec)
        self._wire(rec.index)
        self._collect(rec.index)
        _check(rec)
        if self.on_step:
            self.on_step(rec)

    def step(self, step: Any, line: int) -> None:
        kind = step_kind(step)
        if kind == "call":
            self.call(step, line)
        elif isinstance(step, SleepStep):
            rec = self._record("sleep", line, step.expect, step)
            rec.args = {"seconds": step.sleep}
            self._finish(rec)
            self.sleep(step.sleep)
        elif isinstance(step, ObserveStep):
            rec = self._record("observe", line, step.expect, step)
            obs = step.observe.model_dump()
            rec.args = dict(obs)
            rec.proc = obs.get("proc")
            if obs["what"] == "timer" and self.qt.real is not None:
                rec.obs = self.qt.timer_state(obs["proc"], obs["name"]) or {
                    "active": False, "interval": 0, "remaining_ms": -1, "single_shot": False,
                    "type": "CoarseTimer", "timeouts": 0}
            elif obs["what"] == "timer":
                t = self.timers.timers.get((obs["proc"], obs["name"]))
                rec.obs = (self.timers.describe(t, self.backend.now()) if t else
                           {"active": False, "interval": 0, "remaining_ms": -1, "single_shot": False,
                            "type": "CoarseTimer", "timeouts": 0})
            else:
                if isinstance(obs.get("port"), str):
                    obs["port"] = self.caps.resolve(self.cur_step, line, "port", obs["port"])
                    rec.args["port"] = obs["port"]
                if isinstance(obs.get("sock"), str):
                    obs["sock"] = self.names.get(obs["proc"], {}).get(obs["sock"], -1)
                rec.obs = self.backend.observe(obs)
            self._finish(rec)
        elif isinstance(step, LoadStep):
            rec = self._record("load", line, step.expect, step)
            spec = step.load.model_dump()
            rec.args = dict(spec)
            rec.proc = spec["proc"]
            if isinstance(spec.get("listener"), str):
                spec["listener"] = self.names.get(spec["accept_proc"], {}).get(spec["listener"], -1)
            rec.obs = self.backend.load(rec.index, spec)
            self._finish(rec)
        elif isinstance(step, TimerStep):
            self.timer_op(step, line)
        elif isinstance(step, SysctlStep):
            rec = self._record("sysctl", line, step.expect, step)
            rec.args = step.sysctl.model_dump(exclude_unset=True)
            problem = self.backend.sysctl(dict(rec.args))
            if problem:
                rec.err, rec.facts = "SYSCTL_REFUSED", [problem]
            self._finish(rec)
        elif isinstance(step, QtStep):
            self.qt.step(step, line)
        self.qt.after_step()
        self.run_due_timers()

    def call(self, step: Any, line: int, via: str | None = None) -> StepRecord:
        rec = self._record("call", line, step.expect, step)
        rec.via = via
        args = call_args(step)
        rec.proc, rec.call, rec.args = step.proc, step.call, dict(args)
        fdmap = self.names.setdefault(step.proc, {})
        if "sock" in args and isinstance(args["sock"], str):
            args["sock"] = fdmap.get(args["sock"], -1)
        for key in REF_KEYS:
            if isinstance(args.get(key), str) and args[key].startswith("$"):
                args[key] = self.caps.resolve(self.cur_step, line, key, args[key])
                rec.args[key + "_from"] = rec.args[key]
                rec.args[key] = args[key]
        res = _api_call(self.pers, step.call, step.proc, self.last_err, args)
        if res is None:
            res = self.backend.call(rec.index, step.proc, self.pers.kernel_call(step.call), args)
        if res.at is not None:  # when the system call began, a little after the step was issued
            rec.time = round(res.at, 9)
            if res.until is not None:
                rec.returned = round(res.until, 9)
        _fill(rec, res, self.pers, step.call)
        if rec.errno is not None:
            self.last_err[step.proc] = (rec.err, rec.errno)
        bind_as = getattr(step, "as_", None)
        if isinstance(step, ForkCall):
            if res.err is None:
                self.names[step.as_] = dict(fdmap)
        elif bind_as:
            if res.blocked:
                self.pending_names[rec.index] = (step.proc, bind_as)
            elif res.err is None and isinstance(res.ret, int) and res.ret >= 0:
                fdmap[bind_as] = res.ret
        if res.blocked:
            self.blocked[step.proc] = rec.index
        if step.capture:
            sock = args.get("sock")
            self.caps.keep(step.capture, rec, lambda: self._sockname(step.proc, sock))
            self.capture_of[rec.index] = step.proc
        self._finish(rec)
        return rec

    def _sockname(self, proc: str, fd: Any) -> dict[str, Any] | None:
        """The socket's own address now (a getsockname the scenario does not record)."""
        if not isinstance(fd, int):
            return None
        res = self.backend.call(-1, proc, "getsockname", {"sock": fd})
        return res.name if res.err is None else None

    def _collect(self, after: int) -> None:
        for c in self.backend.completions():
            done = self.trace.steps[c.index]
            done.completed_after = after
            done.completed_time = round(c.time, 9)
            done.ret, done.err, done.errno = present(self.pers, done.call or "", c.result)
            if done.errno is not None and done.proc is not None:
                # the call returned only now: its error is the process's last error from here on
                self.last_err[done.proc] = (done.err, done.errno)
            done.name = c.result.name
            if c.index in self.capture_of:
                fd = self.names.get(done.proc or "", {}).get(done.args.get("sock"), done.args.get("sock"))
                self.caps.completed(done, lambda: self._sockname(done.proc, fd))
            if c.result.rule:
                done.rule, done.cite = c.result.rule, c.result.cite
                done.trail, done.facts = c.result.trail, c.result.facts
            if c.index in self.pending_names and c.result.err is None:
                proc, nm = self.pending_names.pop(c.index)
                self.names.setdefault(proc, {})[nm] = c.result.ret
            if done.proc is not None and self.blocked.get(done.proc) == c.index:
                del self.blocked[done.proc]
            _check(done)

    # ---------------------------------------------------------------- time and timers
    def sleep(self, seconds: float) -> None:
        """Let time pass; application timers fire on the way, each in its own process."""
        if self.qt.real is not None and self.qt.real.procs:
            self.qt.sleep(seconds)
            if self.trace.steps:
                self._collect(len(self.trace.steps) - 1)
            return
        end = self.backend.now() + seconds
        while True:
            now = self.backend.now()
            nd = self.timers.next_due(set(self.blocked))
            if nd is None or nd > end:
                self.backend.sleep(max(0.0, end - now))
                if self.trace.steps:
                    self._collect(len(self.trace.steps) - 1)
                self.run_due_timers()
                return
            self.backend.sleep(max(0.0, nd - now))
            if self.trace.steps:
                self._collect(len(self.trace.steps) - 1)
            self.run_due_timers()

    def timer_op(self, step: Any, line: int) -> None:
        op = step.timer
        rec = self._record("timer", line, step.expect, step)
        rec.proc, rec.call = op.proc, f"QTimer.{op.op}"
        rec.args = {k: v for k, v in op.model_dump(exclude={"on_timeout", "proc"}).items()
                    if v not in (None, False, []) and k != "max_shots"}
        if op.if_failed:
            last = next((r for r in reversed(self.trace.steps) if r.proc == op.proc and r.kind == "call"
                         and self.pers.kernel_call(r.call or "") != "get_errno"), None)
            if last is None or last.err is None:
                rec.err = "SKIPPED"
                rec.facts = [f"the previous call of {op.proc} succeeded: the program does not start this timer"]
                self._finish(rec)
                return
        self.timer_lines[(op.proc, op.name)] = line
        self.timer_steps[(op.proc, op.name)] = self.cur_step
        if self.qt.real is not None:
            self.qt.timer_op(op, rec)
            self._finish(rec)
            self.qt.record_pending()
            return
        m = self.qt.model
        if m is not None and op.proc not in m.procs:  # the process's first Qt use: QCoreApplication
            m.proc(op.proc)
            rec.syscalls = [self.qt._shown(c) for c in m.startup_calls]
        trail = self.qt_trail
        trail.clear()
        prev = activate(trail)
        now = self.backend.now()
        t = self.timers.get(op.proc, op.name)
        if op.on_timeout:
            t.slot = list(op.on_timeout)
        if op.type is not None:
            t.type = op.type
        if op.single_shot is not None:
            t.single_shot = op.single_shot
        t.until_ok, t.max_shots = op.until_ok, op.max_shots
        if op.op == "start":
            self.timers.start(t, now, op.interval)
        elif op.op == "stop":
            self.timers.stop(t)
        elif op.op == "setInterval":
            self.timers.set_interval(t, op.interval or 0, now)
        elif op.op == "singleShot":
            if not self.timers.single_shot(t, op.interval or 0, now):
                rec.err = "NOT_SCHEDULED"
        activate(prev)
        rec.trail, rec.facts = list(trail.rules), list(trail.facts)
        rec.rule = decisive(rec.trail)
        rec.ret = self.timers.describe(t, now)["remaining_ms"] if t.active else None
        rec.cite = RULES[rec.rule].cite if rec.rule in RULES else None
        self._finish(rec)

    def run_due_timers(self) -> None:
        """Timers whose deadline passed fire now, once each, in processes that are not blocked."""
        if self.qt.real is not None:
            return  # real Qt fires them in its own loops (QtSteps.after_step / sleep)
        for _ in range(100000):
            now = self.backend.now()
            due = self.timers.due(now, set(self.blocked))
            if not due:
                return
            t = due[0]
            self.qt_trail.clear()
            prev = activate(self.qt_trail)
            self.timers.fire(t, now)
            activate(prev)
            facts = list(self.qt_trail.facts)
            line = self.timer_lines.get((t.proc, t.name), 0)
            last = None
            for call in t.slot:
                if call.proc in self.blocked:
                    break
                saved, self.cur_step = self.cur_step, self.timer_steps.get((t.proc, t.name), self.cur_step)
                try:
                    via = f"timeout of QTimer {t.name} (#{t.shots})"
                    last = (self.qt.slot_call(call, line, via) if isinstance(call, QtCall)
                            else self.call(call, line, via=via))
                finally:
                    self.cur_step = saved
                if facts:
                    last.facts = facts + last.facts
                    facts = []
            if t.until_ok and last is not None and _failed(last) and t.shots < t.max_shots:
                self.timers.single_shot(t, t.interval, self.backend.now())
            if t.shots >= t.max_shots and t.active:
                self.timers.stop(t)


def _failed(rec: StepRecord) -> bool:
    """A slot's call failed: an error, or a Qt call that returned false (QTcpServer::listen())."""
    return rec.err is not None or (rec.kind == "qt" and rec.ret is False)


def run(scenario: Scenario, backend: Backend, seed: int | None = None,
        on_step: Callable[[StepRecord], None] | None = None, personality: str | None = None,
        follow: Trace | None = None, at_step: Callable[[Any, int], None] | None = None) -> Trace:
    """Run ``scenario`` on ``backend``; the trace has one record per step, plus one per call a
    timer's slot made (``via`` says which timeout). With ``follow`` (the trace of another run of
    the same scenario, e.g. the real kernel's) each step starts at the time it started there."""
    return _Run(scenario, backend, seed, on_step, personality, follow, at_step).go()


def followed_calls(trace: Trace) -> dict[int, tuple[float, bool | None]]:
    """The real system call of each scenario step of ``trace`` that made one: (when it returned,
    whether it found an address: not EADDRNOTAVAIL, the error of a TIME_WAIT entry too young to
    recycle). Its window, from the step's time to its return, bounds when the real kernel read
    its clock during the call (see tw_old_enough in sim/kernel/timewait.py)."""
    out: dict[int, tuple[float, bool | None]] = {}
    for rec in trace.steps:
        if rec.step is not None and rec.step not in out and rec.kind == "call" and rec.returned is not None:
            found = None if rec.blocked else rec.err not in ("EADDRNOTAVAIL", "WSAEADDRNOTAVAIL")
            out[rec.step] = (float(rec.returned), found)
    return out


def step_times(trace: Trace) -> dict[int, float]:
    """When each scenario step started in ``trace``: the time of its first record."""
    out: dict[int, float] = {}
    for rec in trace.steps:
        if rec.step is not None and rec.step not in out and rec.time is not None:
            out[rec.step] = float(rec.time)
    return out


def present(pers, call: str, res: CallResult) -> tuple:
    """(ret, err, errno) as a program of this personality sees them: backends speak canonical
    errno names; Winsock shows INVALID_SOCKET/SOCKET_ERROR and WSA names and numbers."""
    if res.err is None or res.blocked or res.err in (BLOCKED, "PROCESS_BUSY", "PROCESS_GONE"):
        return res.ret, res.err, None
    return pers.failure_value(call), pers.error_name(res.err), pers.error_number(res.err)


def _fill(rec: StepRecord, res: CallResult, pers, call: str) -> None:
    rec.ret, rec.err, rec.errno = present(pers, call, res)
    rec.name = res.name
    if rec.err is None and isinstance(rec.ret, str) and pers.error_number(rec.ret) is not None:
        rec.ret = pers.error_name(rec.ret)  # getsockopt(SO_ERROR): the pending error, as this API names it
    rec.blocked = res.blocked
    if res.blocked:
        rec.err = BLOCKED
    rec.rule, rec.cite, rec.trail, rec.facts = res.rule, res.cite, list(res.trail), list(res.facts)


def _check(rec: StepRecord) -> None:
    if rec.expect is None:
        rec.expect_ok = None
        return
    if rec.expect == "BLOCKED":
        rec.expect_ok = rec.blocked
        return
    if rec.blocked and rec.completed_after is None:
        rec.expect_ok = False
        return
    probe = StepRecord(**{**rec.__dict__, "blocked": False}) if rec.blocked else rec
    rec.expect_ok = call_ok(rec.expect, probe, rec.tolerate)
