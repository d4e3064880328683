"""Real Qt inside a scenario process: QTimer, QTcpServer and QTcpSocket through PySide6.

Loaded by ``driver.py`` (a plain script: standard library only, nothing from ``sim``) into a
scenario process the first time the controller sends it a Qt command, with the directories
where PySide6 is installed. One QCoreApplication, hence one Qt event loop, per scenario
process. The loop runs only while the controller asks: ``qt_idle`` (process until idle around a
step), ``qt_run`` (until a deadline: the scenario sleeps) and during each Qt call. A timer's slot
makes its system calls with the driver's own raw calls, as the scenario process's other calls.

Static ``QTimer::singleShot`` goes through the (msec, receiver, member) overload, the C++ path
with Qt's own default timer type (PySide6's functor overload builds a CoarseTimer of its own).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

QtCore: Any = None
QtNetwork: Any = None


def load(paths: list[str]) -> tuple[str, str]:
    """Import PySide6 from ``paths``; return (PySide6 version, qVersion())."""
    global QtCore, QtNetwork
    if QtCore is None:
        for p in reversed(paths):
            if p not in sys.path:
                sys.path.insert(0, p)
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        import PySide6
        from PySide6 import QtCore as core, QtNetwork as net

        QtCore, QtNetwork = core, net
        QtCore.__dict__.setdefault("_socksim_pyside", PySide6.__version__)
    return QtCore._socksim_pyside, QtCore.qVersion()


def _watch(obj: Any, out: list[str]) -> None:
    """Record the signals a program would connect to, in the order Qt emits them."""
    if isinstance(obj, QtNetwork.QTcpServer):
        obj.newConnection.connect(lambda: out.append("newConnection()"))
        return
    obj.stateChanged.connect(lambda st: out.append(f"stateChanged({st.name})"))
    obj.errorOccurred.connect(lambda e: out.append(f"errorOccurred({e.name})"))
    obj.connected.connect(lambda: out.append("connected()"))
    obj.disconnected.connect(lambda: out.append("disconnected()"))
    obj.readyRead.connect(lambda: out.append("readyRead()"))


class QtChild:
    """The Qt side of one scenario process."""

    def __init__(self, call: Callable[[str, dict], tuple[dict, list[int]]]) -> None:
        self.call = call  # the driver's raw system call: (name, args) -> (reply, fds)
        self.app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
        self.objects: dict[str, Any] = {}
        self.signals: dict[str, list[str]] = {}
        self.timers: dict[str, _Timer] = {}
        self.events: list[dict] = []

    # ------------------------------------------------------------------ the loop
    def run_until(self, deadline: float) -> None:
        """Run the event loop until the monotonic ``deadline`` (at least one pass)."""
        self.app.processEvents()
        left = int((deadline - time.monotonic()) * 1000)
        if left > 0:
            loop = QtCore.QEventLoop()
            q = QtCore.QTimer()
            q.setTimerType(QtCore.Qt.PreciseTimer)
            q.setSingleShot(True)
            q.timeout.connect(loop.quit)
            q.start(left)
            loop.exec()
        self.app.processEvents()

    def handle(self, msg: dict) -> dict:
        op = msg["op"]
        if op == "qt_idle":
            self.run_until(time.monotonic() + float(msg.get("seconds", 0.03)))
        elif op == "qt_run":
            self.run_until(float(msg["until"]))
        elif op == "qt_call":
            reply = {"ret": self.qt_call(msg["object"], msg["method"], msg.get("args") or {})}
            return {**reply, **self._tail()}
        elif op == "qt_timer":
            reply = self.timer_op(msg)
            return {**reply, **self._tail()}
        elif op == "qt_timer_state":
            t = self.timers.get(msg["name"])
            return {"state": t.describe() if t else None}
        else:
            return {"internal": f"unknown Qt op {op!r}"}
        return self._tail()

    def _tail(self) -> dict:
        events, self.events = self.events, []
        fds = {}
        for n, o in self.objects.items():
            fds[n] = int(o.socketDescriptor()) if o is not None else -1
        return {"events": events, "fds": fds}

    # ------------------------------------------------------------------ objects
    def qt_call(self, name: str, method: str, a: dict) -> Any:
        cls, _, meth = method.partition(".")
        o = self.objects.get(name)
        if o is None:
            o = QtNetwork.QTcpServer() if cls == "QTcpServer" else QtNetwork.QTcpSocket()
            self.objects[name] = o
            self.signals[name] = []
            _watch(o, self.signals[name])
        if meth == "signals":
            got, self.signals[name][:] = list(self.signals[name]), []
            return got
        if meth == "listen":
            return bool(o.listen(QtNetwork.QHostAddress(a.get("addr", "0.0.0.0")), int(a.get("port", 0))))
        if meth == "connectToHost":
            o.connectToHost(a["addr"], int(a["port"]))
            return None
        if meth in ("serverError", "error"):
            return (o.serverError() if meth == "serverError" else o.error()).name
        if meth == "state":
            return o.state().name
        if meth == "nextPendingConnection":
            s = o.nextPendingConnection()
            if s is None:
                return None
            self.objects[a["as"]] = s
            self.signals[a["as"]] = []
            _watch(s, self.signals[a["as"]])
            return a["as"]
        if meth == "write":
            return int(o.write(b"x" * int(a["value"])))
        if meth == "readAll":
            return len(bytes(o.readAll()))
        if meth in ("setListenBacklogSize", "setMaxPendingConnections"):
            getattr(o, meth)(int(a["value"]))
            return None
        res = getattr(o, meth)()
        return int(res) if isinstance(res, int) and not isinstance(res, bool) else res

    # ------------------------------------------------------------------ timers
    def timer_op(self, m: dict) -> dict:
        name = m["name"]
        t = self.timers.get(name)
        if t is None:
            t = self.timers[name] = _Timer(self, name)
        t.slot = m.get("slot") or t.slot
        t.until_ok, t.max_shots = bool(m.get("until_ok")), int(m.get("max_shots") or 1000)
        if m.get("type"):
            t.qt.setTimerType(getattr(QtCore.Qt, m["type"]))
        if m.get("single_shot") is not None:
            t.qt.setSingleShot(bool(m["single_shot"]))
        op, iv = m["timer_op"], m.get("interval")
        if op == "start":
            t.static = False
            t.qt.start() if iv is None else t.qt.start(int(iv))
        elif op == "stop":
            t.qt.stop()
            t.static_deadline = None
        elif op == "setInterval":
            t.qt.setInterval(int(iv or 0))
        elif op == "singleShot":
            t.single_shot_static(int(iv or 0))
        d = t.describe()
        return {"remaining_ms": d["remaining_ms"] if d["active"] else None}


class _Timer:
    """A QTimer object, or the static singleShot scheduled under this name."""

    def __init__(self, child: QtChild, name: str) -> None:
        self.child, self.name = child, name
        self.qt = QtCore.QTimer()
        self.qt.timeout.connect(self.fire)
        self.receiver = _Receiver(self.fire)
        self.slot: list[dict] = []
        self.until_ok, self.max_shots, self.shots = False, 1000, 0
        self.static = False
        self.static_interval = 0
        self.static_deadline: float | None = None

    def single_shot_static(self, ms: int) -> None:
        self.static, self.static_interval = True, ms
        self.qt.stop()
        self.static_deadline = time.monotonic() + max(ms, 1 if ms < 0 else 0) / 1000.0
        QtCore.QTimer.singleShot(ms, self.receiver, QtCore.SLOT("fire()"))

    def fire(self) -> None:
        t = time.monotonic()
        if self.static:
            self.static_deadline = None
        self.shots += 1
        calls = []
        last_err = None
        for c in self.slot:
            if "qt" in c:  # a Qt call: it fails when it returns false (QTcpServer::listen())
                q = c["qt"]
                ret = self.child.qt_call(q["object"], q["method"], q.get("args") or {})
                calls.append({"qt": True, "ret": ret, "err": None, "t": time.monotonic()})
                last_err = "false" if ret is False else None
                continue
            reply, fds = self.child.call(c["call"], c.get("args") or {})
            for fd in fds:
                os.close(fd)
            calls.append({"call": c["call"], "ret": reply.get("ret"), "err": reply.get("err"),
                          "t": reply.get("t", time.monotonic())})
            last_err = reply.get("err")
        rearm = (self.until_ok and self.slot and last_err is not None and self.shots < self.max_shots)
        self.child.events.append({"t": t, "timer": self.name, "shot": self.shots, "calls": calls})
        if rearm:
            self.single_shot_static(self.static_interval if self.static else self.qt.interval())

    def describe(self) -> dict:
        if self.static:
            active = self.static_deadline is not None
            left = -1 if not active else max(0, int(-(-(self.static_deadline - time.monotonic()) * 1000 // 1)))
            kind = "PreciseTimer" if self.static_interval < 2000 else "CoarseTimer"
            return {"active": active, "interval": max(self.static_interval, 1) if self.static_interval < 0
                    else self.static_interval, "remaining_ms": left, "single_shot": True,
                    "type": kind, "timeouts": self.shots}
        q = self.qt
        return {"active": q.isActive(), "interval": q.interval(), "remaining_ms": q.remainingTime(),
                "single_shot": q.isSingleShot(), "type": q.timerType().name, "timeouts": self.shots}


def _receiver_class() -> Any:
    class Receiver(QtCore.QObject):
        def __init__(self, fn: Callable[[], None]) -> None:
            super().__init__()
            self.fn = fn

        @QtCore.Slot()
        def fire(self) -> None:
            self.fn()

    return Receiver


_RECEIVER: Any = None


def _Receiver(fn: Callable[[], None]) -> Any:
    global _RECEIVER
    if _RECEIVER is None:
        _RECEIVER = _receiver_class()
    return _RECEIVER(fn)
