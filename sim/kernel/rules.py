"""Rule registry: every decision the model makes is a named rule with a cited source.

A rule is a small function decorated with :func:`rule`. The first line of its docstring is its
citation (kernel function and file, man page, or Microsoft doc); that text is what a timeline or
an explanation shows beside an outcome. Each call of a rule is appended to the *trail* of the
kernel that is running (every kernel owns its trail), so the kernel can say, for every syscall,
which rules it consulted and which one decided; the kernel's subscribers also receive each
consultation as an event.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .tracepoints import FactNoted, RuleConsulted

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Rule:
    id: str
    cite: str
    doc: str
    func: str
    tags: tuple[str, ...] = ()


MINOR = "minor"  # tag of helper rules that are consulted but rarely decide an outcome alone
RULES: dict[str, Rule] = {}
MINOR_RULES: set[str] = set()  # the ids of RULES tagged MINOR (decisive() skips them)


class Trail:
    """The rules consulted and the facts noted during one kernel entry, and every rule hit so far.

    Each kernel owns one (``Kernel.trail``) and makes it current when the engine enters it;
    ``probes`` is the owner's subscriber list (a :class:`~.tracepoints.RuleConsulted` or
    :class:`~.tracepoints.FactNoted` event goes to it when it is not empty).
    """

    __slots__ = ("rules", "facts", "hits", "probes")

    def __init__(self, probes: list[Callable[[Any], None]] | None = None):
        self.rules: list[str] = []
        self.facts: list[str] = []
        self.hits: set[str] = set()  # every rule consulted before the last clear()
        self.probes = probes if probes is not None else []

    def clear(self) -> None:
        self.hits.update(self.rules)
        self.rules.clear()
        self.facts.clear()

    def all_hits(self) -> set[str]:
        """Every rule consulted since this trail was made (coverage: ``socksim rules``)."""
        return self.hits | set(self.rules)


class _Current:
    """Which trail the running code records into: the trail of the kernel the engine entered last
    (as Linux's ``current`` names the running task). Set only through :func:`activate`."""

    __slots__ = ("trail", "rules", "probes")  # rules and probes: the trail's, read by every rule call

    def __init__(self) -> None:
        self.trail = Trail()
        self.rules, self.probes = self.trail.rules, self.trail.probes


_CURRENT = _Current()


def activate(trail: Trail) -> Trail:
    """Make ``trail`` the one rules and facts record into; returns the previous one."""
    cur = _CURRENT
    prev, cur.trail = cur.trail, trail
    cur.rules, cur.probes = trail.rules, trail.probes  # a trail's lists are cleared in place, never replaced
    return prev


def rule(rule_id: str, *tags: str) -> Callable[[F], F]:
    """Register ``func`` as rule ``rule_id``; its docstring's first line is the citation."""

    def deco(func: F) -> F:
        doc = (func.__doc__ or "").strip()
        if not doc:
            raise ValueError(f"rule {rule_id} has no docstring citing its source")
        if rule_id in RULES and RULES[rule_id].func != func.__qualname__:
            raise ValueError(f"rule id {rule_id} registered twice")
        RULES[rule_id] = Rule(rule_id, doc.splitlines()[0].strip(), doc, func.__qualname__, tags)
        if MINOR in tags:
            MINOR_RULES.add(rule_id)

        cur = _CURRENT

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cur.rules.append(rule_id)
            if cur.probes:
                _emit(cur.probes, RuleConsulted(rule_id))
            return func(*args, **kwargs)

        wrapper.rule_id = rule_id  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def fact(text: str) -> None:
    """Record a fact the current rule looked at (shown by explanations)."""
    t = _CURRENT.trail
    t.facts.append(text)
    if t.probes:
        _emit(t.probes, FactNoted(text))


def _emit(probes: list[Callable[[Any], None]], event: Any) -> None:
    for fn in probes:
        fn(event)


def decisive(trail: list[str]) -> str | None:
    """The rule to show beside a successful outcome: the last non-minor rule consulted."""
    for rid in reversed(trail):
        if rid in RULES and rid not in MINOR_RULES:
            return rid
    return trail[-1] if trail else None


def cite(rule_id: str | None) -> str | None:
    return RULES[rule_id].cite if rule_id in RULES else None
