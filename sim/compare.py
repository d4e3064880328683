"""Compare two traces of one scenario step by step.

Per step: the return value, the errno name, whether the call blocked and after which step it
returned, and the observation. Nothing is tolerated unless the scenario names a tolerance for
that step and field, with its reason (the real kernel's random ephemeral port choice, byte counts
that depend on skb truesize, ...). Times are never compared: simulated and real clocks differ.
Timer facts (a QTimer's remaining time) get the tolerance of their timer type (sim/timer_compare.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .timer_compare import relax
from .trace import Trace
from .wire import WireComparison, compare_wire

# Whether a divergence on the wire makes the traces disagree: it does (every bundled Linux
# scenario agrees on the wire, or names the tolerance it needs with its reason).
WIRE_ENFORCED = True

FIELDS = ("ret", "err", "blocked", "completed_after", "obs", "name")


@dataclass
class StepDiff:
    index: int
    line: int
    differences: list[str] = field(default_factory=list)  # every difference found
    tolerated: list[str] = field(default_factory=list)  # differences covered by a tolerance
    disagree: list[str] = field(default_factory=list)  # differences that count


@dataclass
class Comparison:
    scenario: str
    steps: list[StepDiff] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    wire: WireComparison = field(default_factory=WireComparison)
    wire_enforced: bool = WIRE_ENFORCED
    # the real run did not run the scenario as written (a namespace sysctl not applied): no verdict
    faults: list[str] = field(default_factory=list)

    @property
    def disagreeing(self) -> list[int]:
        return [d.index for d in self.steps if d.disagree]

    @property
    def agree(self) -> bool:
        return not self.disagreeing and not self.faults and (self.wire.agree or not self.wire_enforced)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agree"] = self.agree
        d["wire_agree"] = self.wire.agree
        d["disagreeing"] = self.disagreeing
        return d

    def first_divergence(self) -> StepDiff | None:
        for d in self.steps:
            if d.disagree:
                return d
        return None


def _num_close(a: Any, b: Any, rel: float | None, abs_: float | None) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    diff = abs(a - b)
    if abs_ is not None and diff <= abs_:
        return True
    if rel is not None and diff <= rel * max(abs(a), abs(b)):
        return True
    return diff == 0


def values_match(a: Any, b: Any, rel: float | None = None, abs_: float | None = None) -> bool:
    """Equal, or numerically within the tolerance (applied to every number inside dicts/lists)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_match(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_match(x, y, rel, abs_) for x, y in zip(a, b))
    if rel is None and abs_ is None:
        return a == b
    return _num_close(a, b, rel, abs_)


def compare_traces(scenario: Any, sim: Trace, real: Trace) -> Comparison:
    from .scenario.model import HOST_GLOBAL_SYSCTLS

    result = Comparison(scenario=sim.scenario)
    everything = (real.summary or {}).get("unapplied") or {}
    # Only host-global sysctls (which no namespace can set) earn a tolerance; a per-namespace
    # sysctl the real kernel did not take means the real run is not the scenario: a fault.
    unapplied = {k: v for k, v in everything.items() if k in HOST_GLOBAL_SYSCTLS}
    for k, v in everything.items():
        if k not in unapplied:
            result.faults.append(f"the real kernel did not apply the sysctl {k} = "
                                 f"{v.get('scenario') if isinstance(v, dict) else v} "
                                 f"(namespace: {v.get('netns') if isinstance(v, dict) else '?'}"
                                 f"{', ' + str(v.get('error')) if isinstance(v, dict) and v.get('error') else ''})")
    result.unchecked.extend(result.faults)
    if unapplied:
        result.unchecked.append(
            "host-global settings differ from the scenario and cannot be set inside a namespace: "
            + ", ".join(f"{k} (scenario {v.get('scenario') if isinstance(v, dict) else v}, "
                        f"host {v.get('host') if isinstance(v, dict) else '?'})" for k, v in unapplied.items()))
    if len(sim.steps) != len(real.steps):
        result.unchecked.append(f"the traces have {len(sim.steps)} and {len(real.steps)} steps")
    for a, b in zip(sim.steps, real.steps):
        d = StepDiff(a.index, a.line)
        tols = [_Tol(**t) for t in (a.tolerate or [])]
        for f in FIELDS:
            va, vb = getattr(a, f), getattr(b, f)
            vb, why = relax(a, f, va, vb)  # timer facts: a tolerance per timer type
            if why:
                d.tolerated.append(why)
            if f == "obs" and a.kind == "load" and isinstance(va, dict):
                va = {k: v for k, v in va.items() if k != "model"}  # model-only data
            if f == "completed_after" and not (a.blocked or b.blocked):
                continue
            if f == "name":
                va, vb = _name_part(a, va), _name_part(a, vb)
            if f == "ret" and _port_unstated(a):
                continue
            if f in ("ret", "err", "obs", "name") and _both_within(a, b):
                continue
            tol = [t for t in tols if t.field in (f, "all")]
            rel = next((t.rel for t in tol if t.rel is not None), None)
            ab = next((t.abs for t in tol if t.abs is not None), None)
            if values_match(va, vb):
                continue
            text = f"{f}: simulator {_short(va)}, real {_short(vb)}"
            d.differences.append(text)
            if tol and (rel is not None or ab is not None):
                if values_match(va, vb, rel, ab):
                    d.tolerated.append(f"{text} (within tolerance: {tol[0].reason})")
                    continue
                d.disagree.append(text + " (outside the tolerance)")
                continue
            if tol:
                d.tolerated.append(f"{text} ({tol[0].reason})")
            elif unapplied:
                d.tolerated.append(f"{text} (host-global setting not applied)")
            else:
                d.disagree.append(text)
        if d.differences:
            result.steps.append(d)
    result.wire = compare_wire(scenario, sim, real)
    if not result.wire.checked:
        result.unchecked.append(f"segments: {result.wire.why}")
    return result


def failure_text(result: Comparison, sim: Trace, real: Trace) -> str:
    """What a failing [real] item and ``socksim crosscheck`` show: the steps whose results
    differ, then the segments that differ (expected: the real kernel's)."""
    lines: list[str] = []
    if result.disagreeing:
        lines.append(f"simulator and real kernel disagree ({len(result.disagreeing)} step(s)):")
    for d in result.steps:
        if not d.disagree:
            continue
        a = sim.steps[d.index]
        lines.append(f"  step {d.index} (line {d.line}) {a.proc or ''} {a.call or a.kind} {a.args}")
        for text in d.disagree:
            lines.append(f"    - {text}")
        if a.rule:
            lines.append(f"    simulator's rule: {a.rule}: {a.cite}")
    if result.wire.disagree:
        lines.append("the segments on the wire differ"
                     + ("" if result.wire_enforced else " (reported only)") + ":")
        lines.extend("  " + x for x in result.wire.disagree)
    return "\n".join(lines)


def _name_part(rec: Any, name: Any) -> Any:
    """An address a call returned, as compared: the address always, the port only where the step's
    expectation names it (an accepted peer's port is the kernel's ephemeral choice)."""
    if not isinstance(name, dict):
        return name
    exp = rec.expect if isinstance(rec.expect, dict) else {}
    return {k: v for k, v in name.items() if k == "addr" or k in exp}


def _port_unstated(rec: Any) -> bool:
    """getsockname/getpeername/accept whose expectation is an address without a port: the port
    they return is the kernel's ephemeral choice, which the scenario leaves open."""
    from .scenario.model import NAME_CALLS

    return (rec.call in NAME_CALLS and rec.call != "accept" and isinstance(rec.expect, dict)
            and "port" not in rec.expect and "one_of" not in rec.expect and "range" not in rec.expect)


def _both_within(a: Any, b: Any) -> bool:
    """A step whose expectation admits several results (a set, a range, ``error``) and that both
    backends met: where the scenario says the kernel may choose, the two choices need not agree."""
    from .scenario.expect import varies

    return a.expect is not None and varies(a.expect) and a.expect_ok is True and b.expect_ok is True


@dataclass
class _Tol:
    field: str
    reason: str
    rel: float | None = None
    abs: float | None = None


def _short(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."
