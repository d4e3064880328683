"""Text from scenario files, shown as text: control characters escaped before they reach a terminal.

A scenario file may hold any Unicode in its descriptions, notes and reasons; written raw, an escape
sequence (ESC [ ...) would drive the terminal, and a bidirectional override would reorder what the
reader sees. :func:`printable` shows each such character as an escape (``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional embedding/override/isolate controls
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def printable(text: object, newlines: bool = False) -> str:
    """``text`` with every control character escaped (newlines kept when ``newlines``)."""
    s = str(text)
    if newlines:
        return "\n".join(_UNSAFE.sub(_escape, part) for part in s.split("\n"))
    return _UNSAFE.sub(_escape, s)
