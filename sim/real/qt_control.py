"""The controller's side of real Qt: Qt steps and timers of a scenario run through PySide6.

Each scenario process that uses Qt loads ``qt_driver.py`` and owns one Qt event loop. This
module sends it the Qt calls and timer operations, lets every such loop run until idle after
each step (so zero-delay events do not race the next step) and for the length of each sleep
(all loops at once), and brings back the timeouts that fired with the calls their slots made.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

IDLE_SECONDS = 0.03  # loop time after each step: loopback deliveries and zero timers settle
REPLY_SLACK = 10.0  # bound on a reply beyond the time the loop was asked to run


def pyside_paths() -> list[str] | None:
    """Directories to put on a scenario process's sys.path so it can import PySide6 (None:
    PySide6 is not installed here)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    paths = [os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))]
    shib = importlib.util.find_spec("shiboken6")
    if shib is not None and shib.submodule_search_locations:
        d = os.path.dirname(os.path.abspath(list(shib.submodule_search_locations)[0]))
        if d not in paths:
            paths.append(d)
    return paths


def available() -> tuple[bool, str]:
    if pyside_paths() is None:
        return False, "PySide6 is not installed (pip install 'socksim[qt]')"
    return True, "PySide6 available"


class RealQt:
    """Qt in the real backend's scenario processes."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.paths = pyside_paths()
        self.procs: list[str] = []  # processes that have a Qt event loop, in order of first use

    def _need(self, proc: str) -> None:
        if self.paths is None:
            from .backend import RealBackendError

            raise RealBackendError("this scenario drives Qt, but PySide6 is not installed "
                                   "(pip install 'socksim[qt]')")
        if proc not in self.procs:
            self.procs.append(proc)

    def _one(self, proc: str, msg: dict[str, Any], run: float = 0.0) -> dict[str, Any] | None:
        self._need(proc)
        got = self.backend.qt_exchange({proc: {"paths": self.paths, **msg}}, run + REPLY_SLACK)
        return got.get(proc)

    def _rel(self, t: float) -> float:
        return self.backend.now() - (time.monotonic() - t)

    def _events(self, proc: str, reply: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        for e in (reply or {}).get("events") or []:
            out.append({**e, "proc": proc, "t": self._rel(e["t"]),
                        "calls": [{**c, "t": self._rel(c["t"])} for c in e.get("calls", [])]})
        return out

    def start(self, procs: list[str]) -> None:
        """Load Qt and construct the application in each of ``procs`` (all at once)."""
        for p in procs:
            self._need(p)
        self._all({"op": "qt_idle", "seconds": 0}, 0.0)

    # ------------------------------------------------------------------ steps
    def call(self, proc: str, obj: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        reply = self._one(proc, {"op": "qt_call", "object": obj, "method": method, "args": args})
        if reply is None:
            return {"ret": None, "err": "PROCESS_GONE", "fds": {}, "events": []}
        return {"ret": reply.get("ret"), "fds": reply.get("fds") or {}, "events": self._events(proc, reply)}

    def timer(self, proc: str, spec: dict[str, Any]) -> dict[str, Any]:
        reply = self._one(proc, {"op": "qt_timer", **spec})
        if reply is None:
            return {"remaining_ms": None, "err": "PROCESS_GONE", "events": []}
        return {"remaining_ms": reply.get("remaining_ms"), "events": self._events(proc, reply)}

    def timer_state(self, proc: str, name: str) -> dict[str, Any] | None:
        if proc not in self.procs:
            return None
        reply = self._one(proc, {"op": "qt_timer_state", "name": name})
        return (reply or {}).get("state")

    # ------------------------------------------------------------------ the loops
    def _all(self, msg: dict[str, Any], run: float) -> tuple[list[dict[str, Any]], dict[str, dict]]:
        if not self.procs:
            return [], {}
        got = self.backend.qt_exchange({p: {"paths": self.paths, **msg} for p in self.procs},
                                       run + REPLY_SLACK)
        events = [e for p, r in got.items() for e in self._events(p, r)]
        return sorted(events, key=lambda e: e["t"]), {p: r.get("fds") or {} for p, r in got.items()}

    def idle(self) -> tuple[list[dict[str, Any]], dict[str, dict]]:
        """Every Qt loop that is free runs until idle; the timeouts that fired meanwhile."""
        return self._all({"op": "qt_idle", "seconds": IDLE_SECONDS}, IDLE_SECONDS)

    def run(self, seconds: float) -> tuple[list[dict[str, Any]], dict[str, dict]]:
        """Every free Qt loop runs for ``seconds`` (the scenario sleeps), all at once."""
        until = time.monotonic() + seconds
        got = self._all({"op": "qt_run", "until": until}, seconds)
        left = until - time.monotonic()
        if left > 0:  # every Qt process was blocked in a call: time passes all the same
            time.sleep(left)
        return got
