"""A failed scenario, told in the scenario's own terms.

For each step that went wrong: the step as written in the file (its YAML lines), the call as the
scenario wrote it, what was expected and what was found. Where the real kernel legitimately
varies (two runs of the real kernel gave different results for the step), the tolerance block
to paste into the step is printed, with the reason left for the author to fill in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..trace import StepRecord, Trace

MAX_STEP_LINES = 8


def _source_lines(sc: Any) -> list[str]:
    try:
        return Path(sc.source).read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, TypeError):
        return []


def step_text(sc: Any, rec: StepRecord, lines: list[str] | None = None) -> list[str]:
    """The step's lines as written in the file (at most MAX_STEP_LINES)."""
    lines = _source_lines(sc) if lines is None else lines
    if not rec.line or rec.line > len(lines):
        return []
    starts = sorted(set(sc.step_lines) | set(getattr(sc, "check_lines", ()) or ()))
    after = [n for n in starts if n > rec.line]
    end = min(after[0] - 1 if after else len(lines), rec.line + MAX_STEP_LINES - 1)
    out = []
    for i in range(rec.line, end + 1):
        text = lines[i - 1] if i - 1 < len(lines) else ""
        if out and text[:1] not in (" ", "\t", ""):
            break  # a top-level key (checks:, ...) ends the steps
        out.append(text)
    while out and (not out[-1].strip() or out[-1].lstrip().startswith("#")):
        out.pop()
    return out


def written(rec: StepRecord) -> str:
    """The call as the scenario wrote it: names and captured values as written, not resolved."""
    from ..explain import call_text

    args = dict(rec.args)
    for k in list(args):
        if k.endswith("_from"):
            args[k[: -len("_from")]] = args.pop(k)
    shown = StepRecord(**{**rec.__dict__, "args": args})
    if rec.kind == "check":
        return "check " + ", ".join(f"{k}: {v}" for k, v in rec.args.items())
    return (f"{rec.proc}: " if rec.proc and rec.kind == "call" else "") + call_text(shown)


def found(rec: StepRecord) -> str:
    if rec.kind == "call":
        out = rec.outcome()
        if rec.name and rec.err is None:
            out += f" (address {rec.name.get('addr')} port {rec.name.get('port')})"
        return out
    return repr(rec.obs)


def expectation_failures(sc: Any, trace: Trace, backend: str) -> list[str]:
    """One block per step whose expectation was not met on ``backend``."""
    lines = _source_lines(sc)
    out = []
    for rec in trace.failed_expectations:
        block = [f"step {rec.index} at {Path(sc.source or '').name}:{rec.line}, on the {backend}:"]
        block += ["    | " + t for t in step_text(sc, rec, lines)]
        block.append(f"  call:     {written(rec)}")
        block.append(f"  expected: {rec.expect!r}")
        block.append(f"  found:    {found(rec)}")
        if rec.rule:
            block.append(f"  rule:     {rec.rule}: {rec.cite}")
        out.append("\n".join(block))
    return out


def tolerance_block(fields: list[str], indent: str = "    ") -> str:
    """The ``tolerate:`` lines to paste into a step, with the reason to fill in."""
    rows = [f"{indent}tolerate:"]
    for f in fields:
        rows.append(f'{indent}  - {{field: {f}, reason: "FILL IN: why the real kernel may differ here"}}')
    return "\n".join(rows)


def divergences(sc: Any, sim: Trace, real: Trace, result: Any, again: Trace | None) -> list[str]:
    """One block per step where simulator and kernel disagree; ``again`` is a second real run."""
    lines = _source_lines(sc)
    out = []
    for d in result.steps:
        if not d.disagree:
            continue
        a = sim.steps[d.index]
        block = [f"step {d.index} at {Path(sc.source or '').name}:{d.line}: simulator and real kernel disagree"]
        block += ["    | " + t for t in step_text(sc, a, lines)]
        block.append(f"  call:      {written(a)}")
        if a.expect is not None:
            block.append(f"  expected:  {a.expect!r}")
        for text in d.disagree:
            block.append(f"  found:     {text}")
        if a.rule:
            block.append(f"  simulator's rule: {a.rule}: {a.cite}")
        varied = _varies(d, real, again)
        if varied:
            block.append("  the real kernel gave different results on two runs ("
                         + "; ".join(varied) + "); if that is expected, paste into the step:")
            block.append(tolerance_block(sorted({v.split(':')[0] for v in varied})))
            block.append("  or state the choices in expect: ({one_of: [...]} or {range: [low, high]})")
        out.append("\n".join(block))
    return out


def _varies(d: Any, real: Trace, again: Trace | None) -> list[str]:
    if again is None or d.index >= len(again.steps):
        return []
    r1, r2 = real.steps[d.index], again.steps[d.index]
    out = []
    from ..compare import _name_part, _port_unstated

    for f in ("ret", "err", "obs", "name", "completed_after"):
        v1, v2 = getattr(r1, f), getattr(r2, f)
        if f == "name":
            v1, v2 = _name_part(r1, v1), _name_part(r1, v2)
        if f == "ret" and _port_unstated(r1):
            continue
        if v1 != v2:
            out.append(f"{f}: {v1!r} then {v2!r}")
    return out
