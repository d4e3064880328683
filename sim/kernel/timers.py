"""When a kernel timer really fires: the hierarchical timer wheel rounds expiries up.

A timer of ``delay`` seconds armed at ``now`` lands in the wheel level whose range holds its
delta and expires at the next bucket boundary of that level, never early. At HZ=250 a 60 s
TIME_WAIT timer sits in level 3 (granularity 512 jiffies = 2.048 s), so TIME_WAIT ends 60.0-62.05 s
after entry (measured on this kernel, linux.md section 5). Entries of one bucket expire together.
"""

from __future__ import annotations

import math

from .rules import rule

HZ = 250  # CONFIG_HZ of the measured kernel
LVL_CLK_SHIFT = 3
LVL_BITS = 6
LVL_SIZE = 1 << LVL_BITS
LVL_DEPTH = 9


def _lvl_start(n: int) -> int:
    return (LVL_SIZE - 1) << ((n - 1) * LVL_CLK_SHIFT)


_LVL_STARTS = tuple(_lvl_start(n) for n in range(1, LVL_DEPTH))  # LVL_START(1) .. LVL_START(LVL_DEPTH - 1)


@rule("timer.wheel_expiry", "timers", "minor")
def wheel_expiry(now: float, delay: float, hz: int = HZ) -> float:
    """calc_wheel_index()/calc_index() in kernel/time/timer.c: expiry rounded up to the level's granularity."""
    clk = math.floor(now * hz + 1e-9)
    ticks = math.ceil(delay * hz - 1e-9)  # msecs_to_jiffies() rounds up
    expires = clk + ticks
    delta = expires - clk
    lvl = 0
    for start in _LVL_STARTS:  # the first level whose range holds delta
        if delta < start:
            break
        lvl += 1
    shift = lvl * LVL_CLK_SHIFT
    bucket = ((expires >> shift) + 1) << shift if lvl else expires
    return bucket / hz
