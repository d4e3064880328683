"""Which bundled scenarios exercise which rules and which transition-table rows of the model
(for `socksim rules` and the suite).

Coverage is a subscriber of the kernel's events (sim/kernel/tracepoints.py): each scenario runs on
a :class:`~sim.engine.SimBackend` whose kernel reports every rule it consults
(:class:`~sim.kernel.tracepoints.RuleConsulted`) and every TCP state write, with the table row it
is (:class:`~sim.kernel.tracepoints.InetSockSetState`).

A rule counts as cross-checked by a scenario when the scenario's simulator run invoked it and the
scenario is one the real kernel can run (a Linux-personality scenario): the suite's ``[real]``
items then hold that run against the real kernel. Rows are listed for every personality, each
scenario name prefixed by its personality when it is not Linux.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .engine import SimBackend
from .kernel import stack, winsock  # noqa: F401  (registers every rule of both personalities)
from .kernel.rules import RULES
from .kernel.tcp_states import TRANSITIONS, State
from .kernel.tracepoints import InetSockSetState, RuleConsulted
from .scenario.loader import ScenarioError, load_file
from .scenario.model import LoadStep
from .scenario.runner import run

# Rules that belong to a personality no real Linux kernel (or real Qt) here can judge.
NOT_CROSSCHECKABLE_TAGS = ("windows",)  # QTimer rules are judged by real Qt (docs/qt.md)

Row = tuple[State, str]


@dataclass
class Coverage:
    """rule id -> Linux scenarios that consulted it; table row -> scenarios that took it."""

    rules: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[Row, list[str]] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # files that failed to load


class _Observer:
    """Collects the rules and table rows of one run from the kernel's events."""

    __slots__ = ("rules", "rows")

    def __init__(self) -> None:
        self.rules: set[str] = set()
        self.rows: set[Row] = set()

    def __call__(self, ev: Any) -> None:
        cls = ev.__class__
        if cls is RuleConsulted:
            self.rules.add(ev.rule)
        elif cls is InetSockSetState:
            self.rows.add((State(ev.old), ev.event))


def coverage(files: Iterable[Path]) -> Coverage:
    """Run every scenario of ``files`` on the simulator and note what it exercised."""
    cov = Coverage(rules={rid: [] for rid in RULES}, rows={row: [] for row in TRANSITIONS})
    for f in sorted(files):
        try:
            sc = load_file(f)
        except ScenarioError as e:
            cov.bad.append(str(e))
            continue
        if _load_size(sc) > MAX_LOAD_CONNECTIONS:
            continue
        seen = _Observer()
        trace = run(sc, SimBackend(seed=sc.seed, probes=(seen,)), seed=sc.seed)
        pers = sc.host.personality
        label = sc.name if pers == "linux" else f"{pers}:{sc.name}"
        for row in seen.rows:
            cov.rows.setdefault(row, []).append(label)
        if pers != "linux":
            continue
        # the Qt layer sits above the kernel (its rules reach the trace, not the kernel's events)
        layer = {r for r in trace.summary.get("rules_hit", ())
                 if {"qtimer", "qt"} & set(RULES.get(r, _NO_RULE).tags)}
        for rid in sorted(seen.rules | layer):
            cov.rules.setdefault(rid, []).append(sc.name)
    return cov


def rule_coverage(files: Iterable[Path]) -> tuple[dict[str, list[str]], list[str]]:
    """rule id -> names of Linux scenarios whose simulator run invoked it; plus files that failed to load."""
    cov = coverage(files)
    return cov.rules, cov.bad


class _NoRule:
    tags: tuple[str, ...] = ()


_NO_RULE = _NoRule()

MAX_LOAD_CONNECTIONS = 20000  # what-if scenarios with millions of connections add no rules


def _load_size(sc: Any) -> float:
    return sum(st.load.rate * st.load.duration for st in sc.steps if isinstance(st, LoadStep))


def needs_crosscheck(rule_id: str) -> bool:
    r = RULES.get(rule_id)
    return r is not None and not any(t in r.tags for t in NOT_CROSSCHECKABLE_TAGS)


def bundled(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml"))
