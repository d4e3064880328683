"""Application timers with Qt's QTimer semantics (pure logic; the runner gives it the time).

Sources: QTimer class documentation (doc.qt.io/qt-6/qtimer.html) and qtbase
src/corelib/kernel/qtimer.cpp, qtimerinfo_unix.cpp, checked against real Qt 6.12 (docs/qt.md).
Times are in milliseconds of the scenario's clock. A timer only fires while its thread's event
loop runs: a process blocked in a call delays its timers, which then fire once (no backlog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...kernel.rules import fact, rule

PRECISE, COARSE, VERY_COARSE = "PreciseTimer", "CoarseTimer", "VeryCoarseTimer"


@dataclass
class QTimer:
    proc: str
    name: str
    interval: int = 0  # ms (QTimer::interval, default 0)
    single_shot: bool = False
    type: str = COARSE  # Qt::CoarseTimer is the default
    active: bool = False
    deadline: float = 0.0  # seconds
    serial: int = 0  # registration order: equal deadlines fire in this order
    timer_id: int = -1
    slot: list[Any] = field(default_factory=list)
    until_ok: bool = False
    shots: int = 0
    max_shots: int = 1000


@rule("qt.effective_interval", "qtimer", "minor")
def effective_interval(t: QTimer) -> float:
    """Qt::TimerType (doc.qt.io/qt-6/qt.html#TimerType-enum): VeryCoarse rounds to whole seconds; Coarse may fire up to 5% early."""
    ms = t.interval
    kind = t.type
    if kind == COARSE and ms >= 20000:
        kind = VERY_COARSE  # qtimerinfo_unix.cpp: coarse timers of 20 s and more are demoted
    if kind == VERY_COARSE:
        ms = int((ms + 500) // 1000) * 1000
        fact(f"VeryCoarseTimer: interval {t.interval} ms is rounded to {ms} ms")
    return ms / 1000.0


def _kind(t: QTimer) -> str:
    if t.type == COARSE and t.interval >= 20000:
        return VERY_COARSE  # qtimerinfo_unix.cpp: coarse timers of 20 s and more are demoted
    return t.type


@rule("qt.very_coarse_deadline", "qtimer")
def deadline_after(t: QTimer, base: float) -> float:
    """QTimerInfoList::calculateNextTimeout() (qtimerinfo_unix.cpp; Qt 6.12 measured): a VeryCoarseTimer's deadline is rounded to the nearest whole second of the clock."""
    d = base + effective_interval(t)
    if _kind(t) == VERY_COARSE:
        r = float(int(d + 0.5))
        fact(f"VeryCoarseTimer: deadline {d:.3f} s is rounded to the whole second {r:.0f} s")
        return r
    return d


class QtTimers:
    """All timers of a scenario: QTimer objects by (process, name), plus static singleShots."""

    def __init__(self) -> None:
        self.timers: dict[tuple[str, str], QTimer] = {}
        self.serial = 0
        self.ids = 0

    def get(self, proc: str, name: str) -> QTimer:
        key = (proc, name)
        if key not in self.timers:
            self.timers[key] = QTimer(proc, name)
        return self.timers[key]

    def _arm(self, t: QTimer, now: float) -> None:
        self.serial += 1
        self.ids += 1
        t.serial, t.timer_id = self.serial, self.ids
        t.active = True
        t.deadline = deadline_after(t, now)

    @rule("qt.start", "qtimer")
    def start(self, t: QTimer, now: float, interval: int | None = None) -> None:
        """QTimer::start() (qtimer.cpp): starts or restarts the timer; a full interval from now, with a new id."""
        if interval is not None:
            t.interval = self.checked_interval(interval, "start")
        if t.active:
            fact(f"timer {t.name} was running: start() restarts it")
        self._arm(t, now)
        fact(f"timer {t.name} will time out at t={t.deadline:.3f} s")

    @rule("qt.stop", "qtimer")
    def stop(self, t: QTimer) -> None:
        """QTimer::stop(): the timer stops; isActive() is false; nothing happens on an inactive timer."""
        t.active = False
        t.timer_id = -1

    @rule("qt.set_interval", "qtimer")
    def set_interval(self, t: QTimer, ms: int, now: float) -> None:
        """QTimer::setInterval(): on a running timer the countdown restarts with the new interval."""
        t.interval = self.checked_interval(ms, "setInterval")
        if t.active:
            self._arm(t, now)

    @staticmethod
    @rule("qt.negative_interval", "qtimer", "minor")
    def checked_interval(ms: int, where: str) -> int:
        """QTimer::setInterval()/start(msec)/singleShot() (qtimer.cpp, Qt 6.12 measured): a negative interval warns and becomes 1 ms."""
        if ms < 0:
            fact(f"QTimer::{where}: negative intervals aren't allowed; the interval will be set to 1ms "
                 "(Qt 6.12; earlier 6.x releases refused to schedule)")
            return 1
        return ms

    @rule("qt.single_shot_static", "qtimer")
    def single_shot(self, t: QTimer, ms: int, now: float) -> bool:
        """QTimer::singleShot(msec, receiver, member) (qtimer.cpp, qtimer.h defaultTypeFor()): one timeout after msec; PreciseTimer under 2 s, else CoarseTimer."""
        ms = self.checked_interval(ms, "singleShot")
        t.single_shot = True
        t.interval = ms
        if t.type == COARSE and ms < 2000:
            t.type = PRECISE  # qtimer.h defaultTypeFor(): under 2 s the static singleShot is precise
        self._arm(t, now)
        return True

    @rule("qt.remaining_time", "qtimer")
    def remaining_ms(self, t: QTimer, now: float) -> int:
        """QTimer::remainingTime(): -1 when inactive, 0 when overdue, else the milliseconds left."""
        if not t.active:
            return -1
        left = (t.deadline - now) * 1000.0
        return max(0, int(-(-left // 1)))  # rounded up to whole ms

    def next_due(self, blocked: set[str]) -> float | None:
        due = [t.deadline for t in self.timers.values() if t.active and t.proc not in blocked]
        return min(due) if due else None

    def due(self, now: float, blocked: set[str]) -> list[QTimer]:
        """Timers due now in processes whose event loop is free, in deadline then registration order."""
        ts = [t for t in self.timers.values() if t.active and t.deadline <= now + 1e-12 and t.proc not in blocked]
        return sorted(ts, key=lambda t: (t.deadline, t.serial))

    @rule("qt.timeout", "qtimer")
    def fire(self, t: QTimer, now: float) -> None:
        """QTimerInfoList::activateTimers(): emit timeout() once even if several intervals passed; the next deadline is computed first."""
        t.shots += 1
        late = now - t.deadline
        if late > 1e-9:
            fact(f"timer {t.name} fires {late * 1000:.0f} ms late: its event loop was busy "
                 "(a timer cannot fire while the thread is blocked)")
        if t.single_shot:
            t.active = False  # stop() before timeout() is emitted
            return
        step = effective_interval(t)
        nxt = t.deadline + step
        if nxt <= now:
            skipped = int((now - t.deadline) // step) if step > 0 else 0
            if skipped:
                fact(f"{skipped} timeout(s) coalesced: Qt emits timeout() only once and resumes the interval")
            nxt = deadline_after(t, now)
        t.deadline = nxt

    def describe(self, t: QTimer, now: float) -> dict[str, Any]:
        return {"active": t.active, "interval": t.interval, "remaining_ms": self.remaining_ms(t, now),
                "single_shot": t.single_shot, "type": t.type, "timeouts": t.shots}
