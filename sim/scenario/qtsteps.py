"""Qt steps in a run: QTcpServer/QTcpSocket calls, and QTimer on real Qt.

On the simulator, Qt calls run on the Qt model (:mod:`sim.engine.qt`), which makes its system
calls through the simulated kernel; each Qt record keeps them (``syscalls``) with the kernel
rule behind each, and the loops of all processes run until idle after every step. On the real
backend the same steps run through PySide6 in the scenario's processes
(:mod:`sim.real.qt_control`), timers included; their timeouts come back with the calls their
slots made and become the same records the simulator's timers produce.
"""

from __future__ import annotations

from typing import Any

from ..trace import CallResult, StepRecord
from .model import call_args


class QtSteps:
    """The Qt part of one run (``run`` is the runner's ``_Run``)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        b = run.backend
        self.real = b.qt_layer() if hasattr(b, "qt_layer") else None
        self.model = None
        if self.real is None and hasattr(b, "kernel"):
            from ..engine.qt.loop import QtModel

            self.model = QtModel(self._sys, b, run.pers.name == "windows", run.qt_trail)
        self.slots: dict[tuple[str, str], list[Any]] = {}
        self.rec: StepRecord | None = None

    def start(self) -> None:
        """Every process that uses Qt constructs its QCoreApplication first, as a Qt program's
        main() does: the event loop (and on Linux its wake-up eventfd) exists from the start."""
        from .model import QtStep, TimerStep

        procs: list[str] = []
        for st in self.run.sc.steps:
            p = st.qt.proc if isinstance(st, QtStep) else st.timer.proc if isinstance(st, TimerStep) else None
            if p is not None and p not in procs:
                procs.append(p)
        if self.model is not None:
            for p in procs:
                self.model.proc(p)
        elif self.real is not None and procs:
            self.real.start(procs)

    # ------------------------------------------------------------------ model side
    def _sys(self, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        r = self.run
        return r.backend.call(len(r.trace.steps), proc, r.pers.kernel_call(call), args)

    # ------------------------------------------------------------------ a qt: step
    def step(self, step: Any, line: int) -> None:
        self._qt_call(step.qt, self.run._record("qt", line, step.expect, step))

    def slot_call(self, q: Any, line: int, via: str) -> StepRecord:
        """A Qt call made by a timer's slot (simulator)."""
        rec = self.run._record("qt", line)
        rec.via = via
        return self._qt_call(q, rec)

    def _qt_call(self, q: Any, rec: StepRecord) -> StepRecord:
        r = self.run
        rec.proc, rec.call = q.proc, q.call
        rec.args = {k: v for k, v in q.model_dump(by_alias=True, exclude={"proc", "call"}).items()
                    if v is not None}
        args = {k: v for k, v in rec.args.items() if k != "object"}
        if self.model is not None:
            out = self.model.call(q.proc, q.object, q.call, args)
            rec.ret, rec.rule, rec.cite = out["ret"], out["rule"], out["cite"]
            rec.trail, rec.facts = out["trail"], out["facts"]
            rec.syscalls = [self._shown(c) for c in out["calls"]]
            self._names(q.proc, self.model.fds(q.proc))
        else:
            out = self.real.call(q.proc, q.object, q.call, args)
            rec.ret, rec.err = out["ret"], out.get("err")
            self._names(q.proc, out["fds"])
            self._record_events(out["events"])
        r._finish(rec)
        return rec

    def _shown(self, c: dict[str, Any]) -> dict[str, Any]:
        """A system call the Qt layer made, as the timeline shows it (the personality's error names)."""
        err = self.run.pers.error_name(c["err"]) if c["err"] else None
        ret = self.run.pers.failure_value(c["call"]) if c["err"] else c["ret"]
        return {"call": c["call"], "args": c["args"], "ret": ret, "err": err,
                "rule": c["rule"], "cite": c["cite"]}

    def _names(self, proc: str, fds: dict[str, int]) -> None:
        m = self.run.names.setdefault(proc, {})
        for name, fd in fds.items():
            if isinstance(fd, int) and fd >= 0:
                m[name] = fd
            else:
                m.pop(name, None)

    # ------------------------------------------------------------------ around every step
    def after_step(self) -> None:
        """Process every Qt loop until idle (zero-delay events settle before the next step)."""
        if self.model is not None:
            made = self.model.idle(set(self.run.blocked))
            if made and self.run.trace.steps:
                last = self.run.trace.steps[-1]
                last.syscalls = list(last.syscalls) + [
                    {**self._shown(c), "loop": f"{c['proc']}: event loop, {c['object']}"} for c in made]
            for p in self.model.procs:
                self._names(p, self.model.fds(p))
        elif self.real is not None and self.real.procs:
            events, fds = self.real.idle()
            for p, m in fds.items():
                self._names(p, m)
            self._record_events(events)

    # ------------------------------------------------------------------ timers on real Qt
    def timer_op(self, op: Any, rec: StepRecord) -> None:
        """A QTimer operation in the process's real event loop."""
        slot = [self._slot_call(c) for c in op.on_timeout]
        if op.on_timeout:
            self.slots[(op.proc, op.name)] = list(op.on_timeout)
        spec = {"name": op.name, "timer_op": op.op, "interval": op.interval, "type": op.type,
                "single_shot": op.single_shot, "until_ok": op.until_ok, "max_shots": op.max_shots}
        if slot:
            spec["slot"] = slot
        out = self.real.timer(op.proc, spec)
        rec.ret = out.get("remaining_ms")
        rec.err = out.get("err")
        self.pending_events = out["events"]

    def record_pending(self) -> None:
        events, self.pending_events = getattr(self, "pending_events", []), []
        self._record_events(events)

    def _slot_call(self, c: Any) -> dict[str, Any]:
        if hasattr(c, "object"):
            args = {k: v for k, v in c.model_dump(by_alias=True, exclude={"proc", "call", "object"}).items()
                    if v is not None}
            return {"qt": {"object": c.object, "method": c.call, "args": args}}
        args = call_args(c)
        if isinstance(args.get("sock"), str):
            args["sock"] = self.run.names.get(c.proc, {}).get(args["sock"], -1)
        return {"call": self.run.pers.kernel_call(c.call), "args": args}

    def timer_state(self, proc: str, name: str) -> dict[str, Any] | None:
        return self.real.timer_state(proc, name)

    def sleep(self, seconds: float) -> None:
        """The scenario sleeps: every free Qt loop runs meanwhile; record what their timers did."""
        events, fds = self.real.run(seconds)
        for p, m in fds.items():
            self._names(p, m)
        self._record_events(events)

    def _record_events(self, events: list[dict[str, Any]]) -> None:
        from .runner import _fill

        r = self.run
        for e in events:
            spec = self.slots.get((e["proc"], e["timer"]), [])
            step_no = r.timer_steps.get((e["proc"], e["timer"]), r.cur_step)
            line = r.timer_lines.get((e["proc"], e["timer"]), 0)
            for c, got in zip(spec, e["calls"]):
                saved, r.cur_step = r.cur_step, step_no
                try:
                    rec = r._record("qt" if hasattr(c, "object") else "call", line, getattr(c, "expect", None), c)
                finally:
                    r.cur_step = saved
                rec.time = round(got["t"], 9)
                rec.via = f"timeout of QTimer {e['timer']} (#{e['shot']})"
                if rec.kind == "qt":
                    rec.proc, rec.call, rec.ret = c.proc, c.call, got["ret"]
                    rec.args = {k: v for k, v in c.model_dump(by_alias=True, exclude={"proc", "call"}).items()
                                if v is not None}
                    r._finish(rec)
                    continue
                rec.proc, rec.call = c.proc, c.call
                rec.args = dict(call_args(c))
                _fill(rec, CallResult(ret=got["ret"], err=got["err"]), r.pers, c.call)
                if rec.errno is not None:
                    r.last_err[c.proc] = (rec.err, rec.errno)
                bind_as = getattr(c, "as_", None)
                if bind_as and got["err"] is None and isinstance(got["ret"], int) and got["ret"] >= 0:
                    r.names.setdefault(c.proc, {})[bind_as] = got["ret"]
                r._finish(rec)
