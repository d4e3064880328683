"""Rule registry: every decision the model makes is a named rule with a cited source.

A rule is a small function decorated with :func:`rule`. The first line of its docstring is its
citation (kernel function and file, man page, or Microsoft doc); that text is what a timeline or
an explanation shows beside an outcome. Each call of a rule is appended to the current *trail*, so
the kernel can say, for every syscall, which rules it consulted and which one decided.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule:
    id: str
    cite: str
    doc: str
    func: str
    tags: tuple[str, ...] = ()


RULES: dict[str, Rule] = {}


@dataclass
class Trail:
    rules: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def clear(self) -> None:
        HITS.update(self.rules)
        self.rules.clear()
        self.facts.clear()


HITS: set[str] = set()  # every rule invoked since the last reset (coverage: `socksim rules`)
TRAIL = Trail()


def hits() -> set[str]:
    """The rules invoked since HITS was last reset, including the current trail."""
    return HITS | set(TRAIL.rules)


def rule(rule_id: str, *tags: str) -> Callable[[F], F]:
    """Register ``func`` as rule ``rule_id``; its docstring's first line is the citation."""

    def deco(func: F) -> F:
        doc = (func.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"rule {rule_id} has no docstring citing its source")
        if rule_id in RULES and RULES[rule_id].func != func.__qualname__:
            raise ValueError(f"rule id {rule_id} registered twice")
        RULES[rule_id] = Rule(rule_id, doc.splitlines()[0].strip(), doc, func.__qualname__, tags)

        append = TRAIL.rules.append  # the list is cleared in place, never replaced

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            append(rule_id)
            return func(*args, **kwargs)

        wrapper.rule_id = rule_id  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def fact(text: str) -> None:
    """Record a fact the current rule looked at (shown by explanations)."""
    TRAIL.facts.append(text)


MINOR = "minor"  # tag of helper rules that are consulted but rarely decide an outcome alone


def decisive(trail: list[str]) -> str | None:
    """The rule to show beside a successful outcome: the last non-minor rule consulted."""
    for rid in reversed(trail):
        r = RULES.get(rid)
        if r is not None and MINOR not in r.tags:
            return rid
    return trail[-1] if trail else None


def cite(rule_id: str | None) -> str | None:
    return RULES[rule_id].cite if rule_id in RULES else None
