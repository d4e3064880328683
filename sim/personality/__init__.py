"""Personalities: which operating system's conventions and rule variants a simulated host has."""

from __future__ import annotations

from .base import Personality
from .linux import LINUX

PERSONALITIES: dict[str, Personality] = {"linux": LINUX}

try:  # the Windows personality lives in its own module
    from .windows import WINDOWS

    PERSONALITIES["windows"] = WINDOWS
except ImportError:  # pragma: no cover - during development only
    pass


def get(name: str) -> Personality:
    try:
        return PERSONALITIES[name]
    except KeyError:
        raise ValueError(f"unknown personality {name!r}; known: {', '.join(sorted(PERSONALITIES))}") from None
