"""How right the sweep's remaining-time estimate is: the ETA shown against the time that really
remained, measured on a real sweep (a bench-style measurement, not a test).

``python -m sim.sweep.etacheck FILE --param ... [sweep options]`` runs ``socksim sweep`` with its
progress bar recording every advance; the estimate is the bar's own (its points scheduled on
its workers at the speed seen so far, :meth:`_Progress.remaining`), read where the run passes
10, 25, 50, 75 and 90 % of its time, and compared with the time that was then really left. One line per checkpoint, then the
largest error.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any

from . import command

CHECKPOINTS = (0.10, 0.25, 0.50, 0.75, 0.90)


class _Recording(command._Progress):
    """The sweep's progress bar, also keeping (wall time, work done) at every advance."""

    log: list[tuple[float, float, float | None]] = []
    total = 0.0

    def __init__(self, enabled: bool, points: int, work: float, jobs: int = 0):
        super().__init__(enabled, points, work, jobs)
        self.t0 = time.monotonic()
        _Recording.total, _Recording.log = work, [(self.t0, 0.0, None)]
        self._done_work = 0.0

    def advance(self, d: float, index: int | None = None) -> None:
        super().advance(d, index)
        self._note(d)

    def point_done(self, rest: float, index: int | None = None) -> None:
        super().point_done(rest, index)
        self._note(max(0.0, rest))

    def _note(self, d: float) -> None:
        self._done_work += d
        now = time.monotonic()
        _Recording.log.append((now, self._done_work, self.remaining(now - self.t0)))


def eta_errors(log: list[tuple[float, float, float | None]], total: float) -> list[tuple[float, float, float]]:
    """(fraction of the run's time, ETA shown, time really left) at each checkpoint."""
    t0, end = log[0][0], log[-1][0]
    out = []
    for frac in CHECKPOINTS:
        at = t0 + frac * (end - t0)
        t, done, eta = max((x for x in log if x[0] <= at), key=lambda x: x[0])
        if done <= 0:
            continue
        if eta is None:  # no schedule to go by: whole_run_eta's average
            eta = (t - t0) * max(0.0, total - done) / done
        out.append((frac, eta, end - t))
    return out


def main(argv: list[str]) -> int:
    from ..cli import main as cli_main

    command._Progress = _Recording  # type: ignore[misc]
    with contextlib.redirect_stderr(io.StringIO()):
        rc = cli_main(["sweep", *argv, "--progress"])
    rows = eta_errors(_Recording.log, _Recording.total)
    wall = _Recording.log[-1][0] - _Recording.log[0][0]
    print(f"sweep exit {rc}, {wall:.1f} s, {_Recording.total:,.0f} units of work")
    worst = 0.0
    for frac, eta, left in rows:
        err = (eta - left) / left if left > 0 else 0.0
        worst = max(worst, abs(err))
        print(f"at {frac:4.0%} of the run: eta {eta:7.1f} s, really left {left:7.1f} s ({err:+.0%})")
    print(f"largest error: {worst:.0%}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
