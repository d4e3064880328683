"""Errors as the kernel reports them: a canonical errno *name* plus the rule that decided it."""

from __future__ import annotations


class SysError(Exception):
    """A syscall failed with errno ``name`` (e.g. ``EADDRINUSE``) because of rule ``rule``."""

    def __init__(self, name: str, rule: str | None = None, why: str | None = None):
        super().__init__(name)
        self.name = name
        self.rule = rule
        self.why = why

    def __repr__(self) -> str:
        return f"SysError({self.name!r}, rule={self.rule!r})"
