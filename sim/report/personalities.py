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
    if rec.kind in ("sleep", "timer"):
        return (rec.kind,)
    if rec.blocked and rec.completed_after is None:
        return ("blocked",)
    if rec.err:
        return ("err", _canon(rec.err))
    if rec.call in HANDLE_CALLS or rec.call == "WSAGetLastError":
        return ("ok",)  # handle values and error numbers differ by convention, not by rule
    return ("ok", repr(rec.ret))


def differences(traces: dict[str, Trace]) -> list[tuple[int, dict[str, StepRecord]]]:
    names = list(traces)
    base = traces[names[0]]
    out = []
    for i, rec in enumerate(base.steps):
        row = {n: traces[n].steps[i] for n in names if i < len(traces[n].steps)}
        if len({_key(r) for r in row.values()}) > 1:
            out.append((i, row))
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
        first = row[names[0]]
        cells: list[Any] = [str(i), first.proc or "", _args_text(first)]
        for n in names:
            r = row.get(n)
            if r is None:
                cells += ["-", ""]
                continue
            why = Text(r.rule or "", style="bold")
            if r.cite:
                why.append(f"  {r.cite}", style="dim")
            for f in r.facts[:2]:
                why.append(f"\n  {f}", style="italic")
            cells += [outcome_text(r), why]
        t.add_row(*cells)
    console.print(t)
    steps = len(traces[names[0]].steps)
    console.print(Text(f"{len(diffs)} of {steps} steps differ between {' and '.join(names)}",
                       style="bold"))
    return 0
