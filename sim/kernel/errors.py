"""Errors as the kernel reports them: a canonical errno *name* plus the rule that decided it."""

from __future__ import annotations

from typing import Any


class SysError(Exception):
    """A syscall failed with errno ``name`` (e.g. ``EADDRINUSE``) because of rule ``rule``."""

    def __init__(self, name: str, rule: str | None = None, why: str | None = None):
        super().__init__(name)
        self.name = name
        self.rule = rule
        self.why = why

    def __repr__(self) -> str:
        return f"SysError({self.name!r}, rule={self.rule!r})"


class Block(Exception):
    """Raised by a call that must wait inside the kernel: ``resume(now)`` retries it later.

    ``key`` is the socket whose wait queue the call sleeps on (None: retry on any wakeup).
    """

    def __init__(self, resume: Any, reason: str, key: Any = None):
        super().__init__(reason)
        self.resume, self.reason, self.key = resume, reason, key
