"""Terminal output with rich: the timeline of a run, the end-of-run tables, the crosscheck table."""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..text import printable
from ..trace import StepRecord, Trace

import sys

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _args_text(rec: StepRecord) -> str:
    """The call as a program wrote it (one formatter for every view: see sim.explain.call_text)."""
    from ..explain import call_text

    return call_text(rec)


def outcome_text(rec: StepRecord) -> Text:
    if rec.kind == "observe":
        return Text(json.dumps(rec.obs, separators=(",", ":")) if not isinstance(rec.obs, str) else rec.obs)
    if rec.kind == "load":
        o = rec.obs or {}
        errs = ", ".join(f"{k} x{v}" for k, v in (o.get("errors") or {}).items())
        first = f"; first {o.get('first_error')} at {o.get('first_error_at'):.3f} s" if o.get("first_error") else ""
        return Text(f"{o.get('ok', 0)}/{o.get('attempts', 0)} ok" + (f" ({errs})" if errs else "") + first)
    if rec.kind == "sleep":
        return Text("")
    if rec.kind == "timer":
        return Text(f"fires in {rec.ret} ms" if rec.ret is not None else (rec.err or "inactive"))
    if rec.kind == "qt":
        return Text(rec.err or json.dumps(rec.ret), style="green" if not rec.err else "bold red")
    if rec.blocked:
        if rec.completed_after is not None:
            res = rec.err or (str(rec.ret) if rec.ret not in (None, 0) else "ok")
            return Text(f"blocked -> {res} after step {rec.completed_after}", style="yellow")
        return Text("BLOCKED", style="yellow")
    if rec.err:
        ret = rec.ret if rec.ret is not None else -1
        num = f" ({rec.errno})" if rec.errno is not None and rec.err.startswith("WSA") else ""
        return Text(f"{ret} {rec.err}{num}", style="bold red")
    return Text("ok" if rec.ret in (None, 0) else f"{rec.ret}", style="green")


def syscall_text(c: dict[str, Any]) -> str:
    """``bind(4, 0.0.0.0, 5000) = -1 EADDRINUSE`` (with the loop it came from, if any)."""
    a = c.get("args") or {}
    order = ("sock", "family", "type", "addr", "port", "backlog", "opt", "value", "bytes", "on")
    parts = [str(a[k]) + ("|SOCK_NONBLOCK|SOCK_CLOEXEC" if k == "type" and a.get("nonblock") else "")
             for k in order if k in a and a[k] not in (None, [])]
    res = f"{c.get('ret')} {c['err']}" if c.get("err") else str(c.get("ret"))
    where = f"[{c['loop']}] " if c.get("loop") else ""
    return f"{where}{c['call']}({', '.join(parts)}) = {res}"


def _note(scenario: Any, rec: StepRecord) -> str | None:
    """The step's ``note:`` from the scenario file (not for the calls a timer's slot makes)."""
    if scenario is None or rec.via:
        return None
    i = rec.step if rec.step is not None else rec.index
    steps = getattr(scenario, "steps", None) or []
    return getattr(steps[i], "note", None) if 0 <= i < len(steps) else None


def print_timeline(trace: Trace, scenario: Any = None, explain: bool = False) -> None:
    t = Table(title=f"{trace.scenario} ({trace.backend}, {trace.personality})", box=box.SIMPLE_HEAD)
    t.add_column("#", justify="right")
    t.add_column("time", justify="right")
    t.add_column("process")
    t.add_column("call")
    t.add_column("result")
    t.add_column("rule  source / why", overflow="fold")
    for rec in trace.steps:
        rule = Text()
        if rec.rule:
            rule.append(rec.rule, style="bold")
            src = (rec.cite or "").split(": ")[0].split(" -- ")[0]
            if src:
                rule.append(f"  {src}" if not explain else f"  {rec.cite}", style="dim")
        facts = rec.facts if explain else (rec.facts[:2] if rec.err or rec.blocked else [])
        for f in facts:
            rule.append(f"\n  {f}", style="italic")
        for c in rec.syscalls:  # the system calls a Qt call (or a Qt event loop) made
            rule.append(f"\n  -> {syscall_text(c)}", style="cyan")
            if c.get("rule"):
                rule.append(f"  {c['rule']}", style="dim")
        res = outcome_text(rec)
        if rec.expect_ok is False:
            res.append(f"  (expected {rec.expect})", style="bold magenta")
        call = Text(printable(_args_text(rec)))
        if rec.via:
            call = Text(f"{printable(rec.via)}\n", style="cyan") + call
        note = _note(scenario, rec)
        if note:
            call.append(f"\n  {printable(note)}", style="dim italic")
        t.add_row(str(rec.index), f"{rec.time:.6f}".rstrip("0").rstrip(".") if rec.time else "0",
                  Text(rec.proc or ""), call, res, rule)
    console.print(t)


def _gib(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def print_windows_summary(trace: Trace) -> None:
    """The end of a Windows run as a Windows administrator reads it: netstat -ano, SOCKET handles,
    the host's TCP/IP settings and the nonpaged pool."""
    s = trace.summary or {}
    w = s["windows"]
    t = Table(title="the Windows host at the end", box=box.SIMPLE_HEAD, show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    t.add_row("simulated time", f"{s.get('time', 0):.6f} s")
    for name, p in (w.get("processes") or {}).items():
        t.add_row(f"{name} (PID {p['pid']})", "SOCKET handles " + (", ".join(map(str, p["handles"])) or "none")
                  + ("" if p["alive"] else " (exited)"))
    lo, hi = w["dynamic_ports"]
    t.add_row("dynamic port range", f"{lo}-{hi} ({hi - lo + 1} ports; netsh int ipv4 set dynamicport tcp "
                                    f"start={lo} num={hi - lo + 1})")
    for key, val in w["settings"].items():
        t.add_row(key, str(val))
    t.add_row("TIME_WAIT entries", f"{s.get('time_wait', 0)} (peak {s.get('time_wait_peak', 0)})")
    pool = w["nonpaged_pool"]
    t.add_row("nonpaged pool (sockets)", f"{pool['bytes']} B: {pool['tcbs']} TCB x {pool['tcb_bytes']} B "
              f"({pool['tcb_source']}) + {pool['buffered']} B buffered; peak {pool['peak']} B, "
              f"limit {_gib(pool['limit'])}")
    console.print(t)
    n = Table(title="netstat -ano", box=box.SIMPLE_HEAD)
    for col in ("Proto", "Local Address", "Foreign Address", "State", "PID"):
        n.add_column(col, justify="right" if col == "PID" else "left")
    for row in w["netstat"][:40]:
        n.add_row(*map(str, row))
    if len(w["netstat"]) > 40:
        n.add_row("...", f"{len(w['netstat']) - 40} more", "", "", "")
    console.print(n)


def print_summary(trace: Trace) -> None:
    s = trace.summary or {}
    if "windows" in s:
        print_windows_summary(trace)
        _print_expectations(trace)
        return
    t = Table(title="kernel tables at the end", box=box.SIMPLE_HEAD, show_header=False)
    t.add_column("what")
    t.add_column("value", overflow="fold")
    ss = s.get("sockstat", {})
    t.add_row("simulated time", f"{s.get('time', 0):.6f} s")
    t.add_row("sockstat TCP", " ".join(f"{k} {v}" for k, v in ss.items()))
    t.add_row("TIME_WAIT entries", f"{s.get('time_wait', 0)} (peak {s.get('time_wait_peak', 0)}, "
                                   f"overflows {s.get('tw_overflows', 0)}, recycled {s.get('tw_recycled', 0)})")
    t.add_row("ports occupied", str(s.get("ports_in_use", 0)))
    t.add_row("TCP memory (never paged)", f"{s.get('tcp_mem_bytes', 0)} B (peak {s.get('tcp_mem_peak_bytes', 0)} B)")
    for name, p in (s.get("processes") or {}).items():
        t.add_row(f"process {name}", f"fds {p['fds']}" + ("" if p["alive"] else " (exited)"))
    rows = s.get("tcp") or []
    if rows:
        t.add_row("connections", "\n".join(
            f"{r[0]}:{r[1]}" + (f" -> {r[2]}:{r[3]}" if r[2] else "") + f"  {r[4]}" for r in rows[:20])
            + (f"\n... {len(rows) - 20} more" if len(rows) > 20 else ""))
    if s.get("mib"):
        t.add_row("counters", " ".join(f"{k} {v}" for k, v in sorted(s["mib"].items())))
    console.print(t)
    _print_expectations(trace)


def _print_expectations(trace: Trace) -> None:
    failed = trace.failed_expectations
    with_expect = sum(1 for r in trace.steps if r.expect_ok is not None)
    if with_expect:
        style = "bold red" if failed else "bold green"
        console.print(Text(f"expectations: {with_expect - len(failed)}/{with_expect} met", style=style))


def print_side_by_side(scenario: Any, sim: Trace, real: Trace, result: Any) -> None:
    t = Table(title=f"{sim.scenario}: simulator vs real kernel ({real.meta.get('kernel') or real.summary.get('kernel', '')})",
              box=box.SIMPLE_HEAD)
    t.add_column("#", justify="right")
    t.add_column("process")
    t.add_column("call")
    t.add_column("simulator")
    t.add_column("real kernel")
    t.add_column("", justify="center")
    t.add_column("simulator's rule / difference", overflow="fold")
    by_index = {d.index: d for d in result.steps}
    for a, b in zip(sim.steps, real.steps):
        d = by_index.get(a.index)
        mark = Text("=", style="green")
        note = a.rule or ""
        if d is not None and d.differences:
            if d.tolerated:
                mark = Text("~", style="yellow")
                note = "tolerated: " + "; ".join(d.tolerated)
            if d.disagree:
                mark = Text("X", style="bold red")
                note = "; ".join(d.disagree) + (f"  [rule {a.rule}: {a.cite}]" if a.rule else "")
        t.add_row(str(a.index), a.proc or "", _args_text(a), outcome_text(a), outcome_text(b), mark, note)
    console.print(t)
    if result.unchecked:
        console.print(Text("not cross-checkable here: " + "; ".join(result.unchecked), style="yellow"))
    w = result.wire
    if w.checked:
        enforced = "" if result.wire_enforced else " (reported only)"
        if w.disagree:
            console.print(Text(f"segments on the wire differ{enforced}:", style="bold red"))
            console.print(Text("\n".join(w.disagree)))
        else:
            console.print(Text(f"segments on the wire: the same in {w.connections} connection(s)",
                               style="green"))
        if w.tolerated:
            console.print(Text("tolerated on the wire:\n" + "\n".join(w.tolerated), style="yellow"))
    faults = getattr(result, "faults", [])
    verdict = "AGREE" if result.agree else f"NO VERDICT: {faults[0]}" if faults and not result.disagreeing \
        else "DISAGREE" + (f" at step(s) {', '.join(map(str, result.disagreeing))}" if result.disagreeing
                           else " on the wire")
    console.print(Text(f"verdict: {verdict}", style="bold green" if result.agree else "bold red"))


def print_wire(trace: Trace) -> None:
    """``socksim run --wire``: the segments as a ladder, step by step."""
    from ..wire import ladder

    if not trace.wire:
        console.print(Text("no segment was put on the wire", style="dim"))
        return
    console.print(Text(f"the wire: {len(trace.wire)} segment(s)", style="bold"))
    for line in ladder(trace):
        console.print(Text(line), soft_wrap=True)
