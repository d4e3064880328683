"""A scenario's projected cost, known before it runs: connections of its load steps, and a ceiling.

A load step opens ``rate x duration`` connections. The format accepts up to 10^6 connections/s for
a week, which no run finishes, so a command refuses, before any work, a scenario whose load steps
together project more than :data:`MAX_CONNECTIONS` connections unless ``--max-connections`` raises
the ceiling; above :data:`ANNOUNCE_CONNECTIONS` the projection is announced (connections and a
rough wall time) before the run starts.
"""

from __future__ import annotations

from typing import Any

MAX_CONNECTIONS = 2_000_000  # default ceiling over all load steps of a scenario
ANNOUNCE_CONNECTIONS = 100_000  # above this, the projection is shown before the run
SIM_CONNECTIONS_PER_SECOND = 10_000  # the simulator's order of magnitude (docs/whatif.md figures)


class TooCostly(ValueError):
    """The projected work is above the ceiling: one line, exit 2."""


def load_steps(sc: Any) -> list[tuple[int, int, float]]:
    """(step index, projected connections, simulated seconds) of every load step."""
    out = []
    for i, step in enumerate(sc.steps):
        spec = getattr(step, "load", None)
        if spec is not None and hasattr(spec, "rate"):
            out.append((i, int(round(float(spec.rate) * float(spec.duration))), float(spec.duration)))
    return out


def projected_connections(sc: Any) -> int:
    return sum(n for _, n, _ in load_steps(sc))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def describe(sc: Any, real: bool = False) -> str:
    """The projection in words: connections, and the wall time on the simulator (or, on the real
    kernel, the load steps' own duration, which is real time there)."""
    steps = load_steps(sc)
    n = sum(c for _, c, _ in steps)
    sim = f"roughly {_duration(n / SIM_CONNECTIONS_PER_SECOND)} on the simulator"
    if real:
        sim += f", at least {_duration(sum(d for _, _, d in steps))} on the real kernel"
    where = ", ".join(f"steps[{i}] {c:,}" for i, c, _ in steps[:3]) + (", ..." if len(steps) > 3 else "")
    return f"projected {n:,} connections ({where}), {sim}"


def check(sc: Any, ceiling: int | None, real: bool = False) -> str | None:
    """Raise :class:`TooCostly` above ``ceiling`` (None: :data:`MAX_CONNECTIONS`); return the
    announcement for a large run, or None for a small one."""
    limit = MAX_CONNECTIONS if ceiling is None else ceiling
    n = projected_connections(sc)
    if n > limit:
        raise TooCostly(f"{sc.source or sc.name}: {describe(sc, real)}: above the ceiling of {limit:,} "
                        "connections; pass --max-connections N to run it anyway")
    if n > ANNOUNCE_CONNECTIONS:
        return describe(sc, real)
    return None
