"""How timer facts are compared between the model and real Qt: a tolerance per timer type.

Real timers fire late (the event loop runs only between steps of a real run, and each step takes
wall time to settle loopback), and Qt's coarse timers fire early or late by design: a
CoarseTimer may move by up to 5% of its interval (QTimerInfoList::calculateCoarseTimerTimeout()
in qtimerinfo_unix.cpp), a VeryCoarseTimer is rounded to whole seconds (measured on Qt 6.12:
a 1400 ms VeryCoarseTimer first fired after 1283 ms). Only ``remaining_ms`` is compared with
this tolerance; whether a timer is active, its interval, type and timeout count are exact.
"""

from __future__ import annotations

from typing import Any

# Wall time a real run's steps add between a timer's start and an observation of it (loopback
# settling, each Qt loop processed until idle, the controller's round trips); on a loaded
# two-core machine up to ~400 ms was seen between a start and an observation 2.2 s later.
STEP_SLACK_MS = 600


def slack_ms(kind: str | None, interval: int | None) -> float:
    """How far real Qt's remainingTime() may be from the model's, for one timer type."""
    iv = max(int(interval or 0), 0)
    if kind == "VeryCoarseTimer":
        return 1000 + STEP_SLACK_MS
    if kind == "CoarseTimer":
        return 0.05 * iv + STEP_SLACK_MS
    return STEP_SLACK_MS


def relax(rec: Any, field: str, sim: Any, real: Any) -> tuple[Any, str | None]:
    """The real value to compare: the model's own when a timer fact is within its tolerance."""
    if rec.kind == "timer" and field == "ret":
        kind = (rec.args or {}).get("type") or ("PreciseTimer" if (rec.args or {}).get("op") == "singleShot"
                                                and 0 <= int((rec.args or {}).get("interval") or 0) < 2000
                                                else "CoarseTimer")
        iv = (rec.args or {}).get("interval")
        if isinstance(sim, int) and isinstance(real, int) and sim != real and abs(sim - real) <= slack_ms(kind, iv):
            return sim, f"remaining time: simulator {sim} ms, real {real} ms (within the {kind} tolerance)"
        return real, None
    if (rec.kind == "observe" and field == "obs" and (rec.args or {}).get("what") == "timer"
            and isinstance(sim, dict) and isinstance(real, dict)):
        a, b = sim.get("remaining_ms"), real.get("remaining_ms")
        if (isinstance(a, int) and isinstance(b, int) and a != b and a >= 0 and b >= 0
                and abs(a - b) <= slack_ms(sim.get("type"), sim.get("interval"))):
            return {**real, "remaining_ms": a}, (f"remaining time: simulator {a} ms, real {b} ms "
                                                 f"(within the {sim.get('type')} tolerance)")
    return real, None
