"""Which bundled scenarios exercise which rules of the model (for `socksim rules` and the suite).

A rule counts as cross-checked by a scenario when the scenario's simulator run invoked it and the
scenario is one the real kernel can run (a Linux-personality scenario): the suite's ``[real]``
items then hold that run against the real kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .engine import SimBackend
from .kernel import stack, winsock  # noqa: F401  (registers every rule of both personalities)
from .kernel.rules import RULES
from .scenario.loader import ScenarioError, load_file
from .scenario.model import LoadStep
from .scenario.runner import run

# Rules that belong to a personality or layer no real Linux kernel can judge.
NOT_CROSSCHECKABLE_TAGS = ("windows", "qtimer")


def rule_coverage(files: Iterable[Path]) -> tuple[dict[str, list[str]], list[str]]:
    """rule id -> names of Linux scenarios whose simulator run invoked it; plus files that failed to load."""
    cover: dict[str, list[str]] = {rid: [] for rid in RULES}
    bad: list[str] = []
    for f in sorted(files):
        try:
            sc = load_file(f)
        except ScenarioError as e:
            bad.append(str(e))
            continue
        if sc.host.personality != "linux" or _load_size(sc) > MAX_LOAD_CONNECTIONS:
            continue
        trace = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
        for rid in trace.summary.get("rules_hit", {}):
            cover.setdefault(rid, []).append(sc.name)
    return cover, bad


MAX_LOAD_CONNECTIONS = 20000  # what-if scenarios with millions of connections add no rules


def _load_size(sc: Any) -> float:
    return sum(st.load.rate * st.load.duration for st in sc.steps if isinstance(st, LoadStep))


def needs_crosscheck(rule_id: str) -> bool:
    r = RULES.get(rule_id)
    return r is not None and not any(t in r.tags for t in NOT_CROSSCHECKABLE_TAGS)


def bundled(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml"))
