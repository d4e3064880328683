"""Scenario errors: one line naming the file, line and column, and how found values are described.

Every problem with a scenario file is a :class:`ScenarioError` (1-based line and column; 0:0 when
the problem is the file as a whole, e.g. it does not exist).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class ScenarioError(Exception):
    path: str
    line: int  # 1-based; 0 when the problem is the file as a whole
    column: int  # 1-based, in characters; 0 when the problem is the file as a whole
    message: str

    def __post_init__(self) -> None:
        # one line, whatever text from the file the message quotes, and no control characters
        from ..text import printable

        self.message = printable(self.message)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"



def _kind(v: Any) -> str:
    """How a found value is described in messages."""
    if v is None:
        return "nothing (an empty value)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int):
        s = str(v) if abs(v) < 10**30 else f"a {len(str(abs(v)))}-digit number"
        return s
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan (not a number)"
        if math.isinf(v):
            return ".inf (infinity)" if v > 0 else "-.inf (minus infinity)"
        return repr(v)
    if isinstance(v, str):
        if not v:
            return "empty text"
        s = v if len(v) <= 60 else v[:57] + "..."
        return f"the text {s!r}"
    if isinstance(v, list):
        return "an empty list" if not v else f"a list of {len(v)} item{'s' if len(v) != 1 else ''}"
    if isinstance(v, dict):
        return "an empty mapping" if not v else "a mapping"
    return type(v).__name__


def _short(text: Any, limit: int = 60) -> str:
    """Text from the file, shortened for a message."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."
