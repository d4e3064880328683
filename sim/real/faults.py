"""Faults of the real run: a scenario process that dies unasked, reported at once and by name.

A scenario process ends only by an ``exit`` step (or when the backend closes). The zygote reaps
its children and writes each one's wait status on a pipe to the controller; before and after
every step, and while a ``sleep`` step waits, the controller polls the processes' pidfds. A
process found dead unasked raises :class:`RealFault` naming the process, the step and how it
ended (the signal that killed it, or its exit status): the run has no verdict, and the command
says so with its own exit code instead of reporting the steps that follow as disagreements.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Any

from .common import RealBackendError

STATUS_WAIT = 0.5  # after a pidfd says "exited", how long the zygote may take to report the status


class RealFault(RealBackendError):
    """The real run broke (a process died, a step timed out, no namespace): no verdict."""

    def __init__(self, message: str, proc: str | None = None, step: int | None = None,
                 how: str | None = None) -> None:
        super().__init__(message)
        self.proc, self.step, self.how = proc, step, how
        self.at = time.monotonic()  # when the fault was found


def describe_status(status: int | None) -> str:
    if status is None:
        return "ended (how is unknown)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (wait status {status})"


class Faults:
    """Death watch for the real backend's processes (a part of RealBackend)."""

    _deaths_r: int | None = None
    _deaths_buf: bytes = b""
    _statuses: dict[int, int]
    _step_now: int | None = None

    def begin_step(self, index: int) -> None:
        """The runner is about to run step ``index`` (named in a fault found while it runs)."""
        self._step_now = index

    def _open_deaths(self) -> int:
        """The pipe the zygote reports deaths on; returns the end to pass to it."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self._deaths_r, self._statuses = r, {}
        return w

    def _close_deaths(self) -> None:
        if self._deaths_r is not None:
            try:
                os.close(self._deaths_r)
            except OSError:
                pass
            self._deaths_r = None

    def _read_deaths(self, wait: float = 0.0) -> None:
        if self._deaths_r is None:
            return
        if wait > 0:
            select.select([self._deaths_r], [], [], wait)
        try:
            while True:
                chunk = os.read(self._deaths_r, 4096)
                if not chunk:
                    break
                self._deaths_buf += chunk
        except BlockingIOError:
            pass
        except OSError:
            return
        *lines, self._deaths_buf = self._deaths_buf.split(b"\n")
        for line in lines:
            pid, _, status = line.decode().partition(" ")
            if pid.isdigit() and status.lstrip("-").isdigit():
                self._statuses[int(pid)] = int(status)

    def _status_of(self, pid: int) -> int | None:
        deadline = time.monotonic() + STATUS_WAIT
        while pid not in self._statuses and time.monotonic() < deadline:
            self._read_deaths(0.05)
        return self._statuses.get(pid)

    def _await_reaped(self, pids: list[int], until: float) -> None:
        """Wait, until the monotonic time ``until`` at most, for the zygote to report each of
        ``pids`` reaped."""
        while any(p not in self._statuses for p in pids) and time.monotonic() < until:
            self._read_deaths(0.02)

    def _unasked_dead(self) -> Any:
        """The first scenario process that has ended without an exit step, or None."""
        for p in list(getattr(self, "_procs", {}).values()):
            if p.asked_to_end or p.pidfd is None:
                continue
            poller = select.poll()
            poller.register(p.pidfd, select.POLLIN)
            if poller.poll(0):
                return p
        return None

    def _fault_if_dead(self, step: int | None = None) -> None:
        p = self._unasked_dead()
        if p is None:
            return
        how = describe_status(self._status_of(p.pid))
        at = step if step is not None else self._step_now
        where = f" at step {at}" if at is not None else ""
        p.asked_to_end = True  # reported once
        raise RealFault(f"scenario process {p.name!r} (pid {p.pid}) {how}{where}, though no step ended it",
                        proc=p.name, step=at, how=how)

    def _watch_sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a scenario process dies."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            fds = [p.pidfd for p in getattr(self, "_procs", {}).values()
                   if p.pidfd is not None and not p.asked_to_end]
            if fds:
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                if poller.poll(int(min(left, 1.0) * 1000) + 1):
                    self._fault_if_dead()
                    time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(min(left, 0.05))
