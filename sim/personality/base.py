"""What a personality is: data and API conventions, chosen once per host.

A personality is plain data (floor 1): default settings, the error names and numbers a program
sees, how a failed call is reported (``-1`` + errno, or ``INVALID_SOCKET``/``SOCKET_ERROR`` +
``WSAGetLastError()``), which API names are aliases of which kernel operation, and which kernel
class implements its rule variants (named, not imported: the kernel sits on the floor above).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Personality:
    name: str
    kernel_class: str  # "module:Class" under sim.kernel
    errno_numbers: dict[str, int]  # canonical name -> number as the program sees it
    display_names: dict[str, str] = field(default_factory=dict)  # canonical -> shown name
    defaults: dict[str, Any] = field(default_factory=dict)  # sysctl-like defaults
    aliases: dict[str, str] = field(default_factory=dict)  # API call -> kernel operation
    returns_handle: tuple[str, ...] = ("socket", "accept", "dup", "dup2")
    invalid_handle: Any = -1  # what socket()/accept() return on failure
    call_error: Any = -1  # what other calls return on failure
    error_source: str = "errno"  # where the program reads the error
    citation: str = ""

    def error_name(self, canonical: str | None) -> str | None:
        if canonical is None:
            return None
        return self.display_names.get(canonical, canonical)

    def error_number(self, canonical: str | None) -> int | None:
        if canonical is None:
            return None
        return self.errno_numbers.get(canonical)

    def failure_value(self, call: str) -> Any:
        return self.invalid_handle if call in self.returns_handle else self.call_error

    def kernel_call(self, call: str) -> str:
        return self.aliases.get(call, call)
