"""``socksim run FILE --compare-personalities``: where Linux and Windows part ways, and why.

Every row where what a program sees differs is shown, and says how it differs:

- ``rule``: the two kernels decide differently (success against an error, another error, another
  value);
- ``convention``: the same outcome spelt the way each API spells it (-1 and errno against
  INVALID_SOCKET/SOCKET_ERROR and WSAGetLastError, EADDRINUSE 98 against WSAEADDRINUSE 10048, fd 3
  against SOCKET 256);
- ``timing``: the same outcome at another time (a refused connect that Windows retries for about
  2 s returns later than on Linux);
- ``only here``: a call one run made and the other did not (a timer that fired in one world only).

Rows carry the step numbers ``socksim run FILE`` shows for the scenario's own personality.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from ..engine import SimBackend
from ..personality import PERSONALITIES
from ..scenario.runner import _canon, run
from ..trace import StepRecord, Trace
from .terminal import _args_text, console

HANDLE_CALLS = ("socket", "accept", "dup", "dup2")


def _decision(rec: StepRecord) -> Any:
    """What a program would branch on: success or the (canonical) error; values where they matter."""
    if rec.kind in ("observe", "load"):
        return ("obs", repr(rec.obs))
    if rec.kind == "sleep":
        return (rec.kind,)
    if rec.kind == "timer":
        return (rec.kind, rec.err)
    if rec.blocked and rec.completed_after is None:
        return ("blocked",)
    if rec.err and rec.err != "BLOCKED":
        return ("err", _canon(rec.err))
    if rec.call in HANDLE_CALLS or rec.call == "WSAGetLastError":
        return ("ok",)  # handle values and error numbers differ by convention, not by rule
    return ("ok", repr(rec.ret))


def _shown(rec: StepRecord) -> Any:
    """Exactly what the program sees: return value, error name and number."""
    return (rec.ret, rec.err, rec.errno)


def _when(rec: StepRecord) -> Any:
    return (rec.completed_after, None if rec.completed_time is None else round(rec.completed_time, 3))


def _align(traces: dict[str, Trace]) -> list[tuple[Any, dict[str, StepRecord]]]:
    """Pair records by where they come from (scenario step, and which timeout for a timer's
    calls), so a timer that fires under one personality and not the other shifts nothing."""
    order: list[Any] = []
    rows: dict[Any, dict[str, StepRecord]] = {}
    for name, tr in traces.items():
        for rec in tr.steps:
            key = (rec.step if rec.step is not None else rec.index, rec.via or "")
            if key not in rows:
                rows[key] = {}
                order.append(key)
            rows[key][name] = rec
    order.sort(key=lambda k: (k[0], k[1] != "", k[1]))
    return [(k, rows[k]) for k in order]


def how_they_differ(row: dict[str, StepRecord], names: list[str]) -> str | None:
    """``rule`` or ``convention`` (and ``+ timing``), ``timing``, ``only here`` -- or None when
    both worlds agree."""
    if len(row) < len(names):
        return "only here"
    recs = list(row.values())
    kinds = []
    if len({_decision(r) for r in recs}) > 1:
        kinds.append("rule")
    elif len({repr(_shown(r)) for r in recs}) > 1:
        kinds.append("convention")
    if len({_when(r) for r in recs}) > 1:
        kinds.append("timing")
    return " + ".join(kinds) or None


def differences(traces: dict[str, Trace], home: str | None = None) -> list[tuple[str, str, dict[str, StepRecord]]]:
    """(step number as ``run`` shows it, how, records by personality) for every differing row."""
    names = list(traces)
    home = home if home in traces else names[0]
    out = []
    for _, row in _align(traces):
        how = how_they_differ(row, names)
        if how is None:
            continue
        rec = row.get(home)
        number = str(rec.index) if rec is not None else "/".join(f"{n}:{r.index}" for n, r in row.items())
        out.append((number, how, row))
    return out


def _result(rec: StepRecord) -> Text:
    if rec.kind in ("observe", "load", "sleep", "timer"):
        from .terminal import outcome_text
        return outcome_text(rec)
    if rec.blocked and rec.completed_after is None:
        return Text("BLOCKED", style="yellow")
    if rec.err and rec.err != "BLOCKED":
        ret = rec.ret if rec.ret is not None else -1
        num = f" ({rec.errno})" if rec.errno is not None else ""
        text = Text(f"{ret} {rec.err}{num}", style="bold red")
    else:
        text = Text("ok" if rec.ret in (None, 0) else f"{rec.ret}", style="green")
    if rec.blocked:
        text = Text("blocked -> ", style="yellow") + text
        text.append(f" at {rec.completed_time or 0:.3f} s", style="yellow")
    return text


def compare_personalities(scenario: Any, seed: int, quiet: bool = False) -> int:
    traces = {name: run(scenario, SimBackend(seed=seed), seed=seed, personality=name)
              for name in sorted(PERSONALITIES)}
    diffs = differences(traces, scenario.host.personality)
    if quiet:
        return 0
    names = list(traces)
    t = Table(title=f"{scenario.name}: where the personalities differ", box=box.SIMPLE_HEAD)
    t.add_column("#", justify="right")
    t.add_column("process")
    t.add_column("call")
    t.add_column("how")
    for n in names:
        t.add_column(n)
        t.add_column(f"{n} rule", overflow="fold")
    for number, how, row in diffs:
        first = next(iter(row.values()))
        call = Text(_args_text(first))
        if first.via:
            call = Text(f"{first.via}\n", style="cyan") + call
        cells: list[Any] = [number, first.proc or "", call, Text(how, style="bold" if how == "rule" else "")]
        for n in names:
            r = row.get(n)
            if r is None:
                cells += [Text("(no such call)", style="dim"), ""]
                continue
            why = Text(r.rule or "", style="bold")
            if r.cite:
                why.append(f"  {r.cite}", style="dim")
            for f in r.facts[:2]:
                why.append(f"\n  {f}", style="italic")
            cells += [_result(r), why]
        t.add_row(*cells)
    console.print(t)
    steps = len(_align(traces))
    kinds = {k: sum(1 for _, how, _ in diffs if k in how) for k in ("rule", "convention", "timing", "only here")}
    console.print(Text(f"{len(diffs)} of {steps} steps differ between {' and '.join(names)}: "
                       + ", ".join(f"{v} {k}" for k, v in kinds.items() if v)
                       + " (step numbers as `socksim run` shows them)", style="bold"))
    return 0
