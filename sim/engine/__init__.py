"""The SimPy world around the pure kernel model: time, the loopback wire, timers, blocking calls."""

from .host import SimBackend

__all__ = ["SimBackend"]
