"""Drive one backend through a scenario, step by step, in the scenario's global order.

The runner owns what the scenario means, not what a kernel does: it resolves socket names to
the fd numbers the backend returned, checks expectations, and records every step in a
:class:`~sim.trace.Trace`. Both backends go through exactly this code, so their traces line up.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..personality import get as get_personality
from ..trace import BLOCKED, Backend, CallResult, StepRecord, Trace
from .model import ForkCall, LoadStep, ObserveStep, Scenario, SleepStep, call_args, step_kind


def _expect_ok(expect: Any, rec: StepRecord) -> bool:
    if expect is None:
        return True
    if expect == "ok":
        return rec.err is None and not rec.blocked
    if expect == "BLOCKED":
        return rec.blocked
    if isinstance(expect, str) and (expect.isupper() or expect.startswith("WSA")):
        return rec.err is not None and _canon(rec.err) == _canon(expect)
    if rec.kind == "call":
        return rec.err is None and rec.ret == expect
    return _subset(expect, rec.obs)


SYNONYMS = {"EWOULDBLOCK": "EAGAIN", "ENOTSUP": "EOPNOTSUPP"}


def _canon(name: str) -> str:
    """EADDRINUSE and WSAEADDRINUSE are one error; EWOULDBLOCK is EAGAIN."""
    if name.startswith("WSAE"):
        name = name[3:]
    return SYNONYMS.get(name, name)


def _subset(expect: Any, got: Any) -> bool:
    """An observation matches when every key the expectation names has the expected value."""
    if isinstance(expect, dict) and isinstance(got, dict):
        return all(k in got and _subset(v, got[k]) for k, v in expect.items())
    if isinstance(expect, (list, tuple)) and isinstance(got, (list, tuple)):
        return list(expect) == list(got)
    return expect == got


def _api_call(pers, call: str, proc: str, last_err: dict[str, tuple[str, int]]) -> CallResult | None:
    """Calls that no kernel sees: handled by the personality's API conventions, the same for both backends."""
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


def run(scenario: Scenario, backend: Backend, seed: int | None = None,
        on_step: Callable[[StepRecord], None] | None = None, personality: str | None = None) -> Trace:
    data = scenario.model_dump(by_alias=True)
    pname = personality or scenario.host.personality
    data["host"]["personality"] = pname
    pers = get_personality(pname)
    last_err: dict[str, tuple[str, int]] = {}
    wall = time.monotonic()
    trace = Trace(scenario=scenario.name, backend=backend.name, personality=pname, seed=seed)
    names: dict[str, dict[str, int]] = {p: {} for p in scenario.processes}
    pending_names: dict[int, tuple[str, str]] = {}  # step index -> (proc, name) bound on completion
    backend.start(data)
    try:
        for i, step in enumerate(scenario.steps):
            line = scenario.step_lines[i] if i < len(scenario.step_lines) else 0
            kind = step_kind(step)
            rec = StepRecord(index=i, line=line, kind=kind, time=round(backend.now(), 9),
                             expect=step.expect)
            if kind == "call":
                args = call_args(step)
                rec.proc, rec.call, rec.args = step.proc, step.call, dict(args)
                fdmap = names.setdefault(step.proc, {})
                if "sock" in args and isinstance(args["sock"], str):
                    args["sock"] = fdmap.get(args["sock"], -1)
                res = _api_call(pers, step.call, step.proc, last_err)
                if res is None:
                    res = backend.call(i, step.proc, pers.kernel_call(step.call), args)
                _fill(rec, res, pers, step.call)
                if rec.errno is not None:
                    last_err[step.proc] = (rec.err, rec.errno)
                bind_as = getattr(step, "as_", None)
                if isinstance(step, ForkCall):
                    if res.err is None:
                        names[step.as_] = dict(fdmap)
                elif bind_as:
                    if res.blocked:
                        pending_names[i] = (step.proc, bind_as)
                    elif res.err is None and isinstance(res.ret, int) and res.ret >= 0:
                        fdmap[bind_as] = res.ret
            elif isinstance(step, SleepStep):
                rec.args = {"seconds": step.sleep}
                backend.sleep(step.sleep)
            elif isinstance(step, ObserveStep):
                obs = step.observe.model_dump()
                rec.args = dict(obs)
                rec.proc = obs.get("proc")
                if isinstance(obs.get("sock"), str):
                    obs["sock"] = names.get(obs["proc"], {}).get(obs["sock"], -1)
                rec.obs = backend.observe(obs)
            elif isinstance(step, LoadStep):
                spec = step.load.model_dump()
                rec.args = dict(spec)
                rec.proc = spec["proc"]
                if isinstance(spec.get("listener"), str):
                    spec["listener"] = names.get(spec["accept_proc"], {}).get(spec["listener"], -1)
                rec.obs = backend.load(i, spec)
            trace.steps.append(rec)
            for c in backend.completions():
                done = trace.steps[c.index]
                done.completed_after = i
                done.completed_time = round(c.time, 9)
                done.ret, done.err, done.errno = present(pers, done.call or "", c.result)
                if c.result.rule:
                    done.rule, done.cite = c.result.rule, c.result.cite
                    done.trail, done.facts = c.result.trail, c.result.facts
                if c.index in pending_names and c.result.err is None:
                    proc, nm = pending_names.pop(c.index)
                    names.setdefault(proc, {})[nm] = c.result.ret
                _check(done)
            _check(rec)
            if on_step:
                on_step(rec)
    finally:
        trace.summary = backend.close()
    trace.meta["wall_seconds"] = round(time.monotonic() - wall, 3)
    trace.meta["source"] = scenario.source
    return trace


def present(pers, call: str, res: CallResult) -> tuple:
    """(ret, err, errno) as a program of this personality sees them: backends speak canonical
    errno names; Winsock shows INVALID_SOCKET/SOCKET_ERROR and WSA names and numbers."""
    if res.err is None or res.blocked or res.err in (BLOCKED, "PROCESS_BUSY", "PROCESS_GONE"):
        return res.ret, res.err, None
    return pers.failure_value(call), pers.error_name(res.err), pers.error_number(res.err)


def _fill(rec: StepRecord, res: CallResult, pers, call: str) -> None:
    rec.ret, rec.err, rec.errno = present(pers, call, res)
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
    rec.expect_ok = _expect_ok(rec.expect, probe)
