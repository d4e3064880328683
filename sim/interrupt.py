"""Interrupts: Ctrl-C (SIGINT), SIGTERM and SIGHUP stop any command promptly, with one line.

:func:`install` makes each of these signals raise :class:`Interrupted` (a ``KeyboardInterrupt``,
so every ``finally`` and ``with`` block cleans up on the way out: namespaces, child processes,
temporary files). The command ends with the exit code ``128 + signal number`` -- 130 for SIGINT,
143 for SIGTERM, 129 for SIGHUP -- as a shell reports a process killed by that signal. A second
signal while cleaning up ends the process at once with the same code.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived: ``signum`` says which."""

    def __init__(self, signum: int | str = signal.SIGINT) -> None:
        # also built from its name: SimPy re-creates an exception raised inside a process as
        # type(e)(*e.args), and the args are the signal's name
        sig = signal.Signals[signum] if isinstance(signum, str) else signal.Signals(signum)
        super().__init__(sig.name)
        self.signum = int(sig)


_seen: list[int] = []


def _handler(signum: int, frame: Any) -> None:
    if _seen:  # a second signal during cleanup: stop now
        os._exit(128 + _seen[0])
    _seen.append(signum)
    raise Interrupted(signum)


def install() -> dict[int, Any]:
    """Route SIGINT, SIGTERM and SIGHUP to :class:`Interrupted` (main thread only); returns the
    previous handlers for :func:`restore`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _seen.clear()
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def restore(previous: dict[int, Any]) -> None:
    for s, h in previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _seen.clear()


def received() -> int | None:
    """The stop signal received since :func:`install`, if any (an exception raised while one was
    being handled -- e.g. wrapped by a C extension -- is reported as that interrupt)."""
    return _seen[0] if _seen else None


def signum_of(e: BaseException) -> int:
    return getattr(e, "signum", None) or received() or signal.SIGINT


def exit_code(e: BaseException) -> int:
    """128 + the signal's number (130 for Ctrl-C)."""
    return 128 + signum_of(e)


def name_of(e: BaseException) -> str:
    return signal.Signals(signum_of(e)).name
