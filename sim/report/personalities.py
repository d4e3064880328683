"""``socksim run FILE --compare-personalities``: where Linux and Windows part ways, and why."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from ..engine import SimBackend
from ..personality import PERSONALITIES
from ..scenario.runner import _canon, run
from ..trace import StepRecord, Trace
from .terminal import _args_text, console, outcome_text

HANDLE_CALLS = ("socket", "accept", "dup", "dup2")


def _key(rec: StepRecord) -> Any:
    """What a program would branch on: success or the (canonical) error; values where they matter."""
    if rec.kind == "observe" or rec.kind == "load":
        return ("obs", repr(rec.obs))
    if rec.kind == "sleep":
        return (rec.kind,)
    if rec.kind == "timer":
        return (rec.kind, rec.err)
    if rec.blocked and rec.completed_after is None:
        return ("blocked",)
    if rec.err:
        return ("err", _canon(rec.err))
    if rec.call in HANDLE_CALLS or rec.call == "WSAGetLastError":
        return ("ok",)  # handle values and error numbers differ by convention, not by rule
    return ("ok", repr(rec.ret))


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


def differences(traces: dict[str, Trace]) -> list[tuple[int, dict[str, StepRecord]]]:
    names = list(traces)
    out = []
    for key, row in _align(traces):
        if len(row) < len(names) or len({_key(r) for r in row.values()}) > 1:
            first = next(iter(row.values()))
            out.append((first.index if first.step is None else first.step, row))
    return out


def compare_personalities(scenario: Any, seed: int, quiet: bool = False) -> int:
    traces = {name: run(scenario, SimBackend(seed=seed), seed=seed, personality=name)
              for name in sorted(PERSONALITIES)}
    diffs = differences(traces)
    if quiet:
        return 0
    names = list(traces)
    t = Table(title=f"{scenario.name}: where the personalities differ", box=box.SIMPLE_HEAD)
    t.add_column("#", justify="right")
    t.add_column("process")
    t.add_column("call")
    for n in names:
        t.add_column(n)
        t.add_column(f"{n} rule", overflow="fold")
    for i, row in diffs:
        first = next(iter(row.values()))
        call = Text(_args_text(first))
        if first.via:
            call = Text(f"{first.via}\n", style="cyan") + call
        cells: list[Any] = [str(i), first.proc or "", call]
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
            cells += [outcome_text(r), why]
        t.add_row(*cells)
    console.print(t)
    steps = len(_align(traces))
    console.print(Text(f"{len(diffs)} of {steps} steps differ between {' and '.join(names)} "
                       "(the rule and its source are beside each outcome)", style="bold"))
    return 0
