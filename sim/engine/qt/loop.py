"""The Qt layer of the model: each scenario process's Qt objects and its event loop.

A Qt call (``QTcpServer.listen`` ...) runs against a :class:`QtProcess`, which makes the system
calls through the simulated kernel and keeps them, each with the kernel rule that decided it,
so the timeline can show both layers. After every scenario step the loop of each process that
is not blocked in a call runs passes until nothing more happens (the socket notifiers that
would fire, as tcp_poll() says), which is what real Qt does when its loop is processed until
idle around each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ...kernel.poll import tcp_poll
from ...kernel.rules import RULES, Trail, activate, fact, rule
from ...trace import CallResult
from .qabstractsocket import ERROR_STRINGS, QTcpSocket
from .qtcpserver import QTcpServer

MAX_PASSES = 50  # bound on loop passes after one step (a pass that changes nothing ends it)

SysFn = Callable[[str, str, dict[str, Any]], CallResult]


@dataclass
class QtProcess:
    """One scenario process as Qt sees it: its objects and the kernel calls they made."""

    name: str
    model: "QtModel"
    windows: bool
    objects: dict[str, Any] = field(default_factory=dict)
    wsa_started: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)  # system calls of the current Qt call
    last_err: str | None = None

    def sys(self, call: str, **args: Any) -> CallResult:
        """One system call on behalf of the Qt call being made; recorded for the timeline."""
        res = self.model.sys_fn(self.name, call, dict(args))
        activate(self.model.trail)  # the kernel recorded into its own trail; the Qt call's resumes
        self.last_err = res.err
        self.calls.append({"call": call, "args": args, "ret": res.ret, "err": res.err,
                           "rule": res.rule, "cite": res.cite})
        return res

    def poll(self, fd: int) -> int:
        sk = self.model.sock_of(self.name, fd)
        if sk is None:
            return 0
        return tcp_poll(sk)  # a minor rule: recorded in the Qt call's trail, never its decision

    def inq(self, fd: int) -> int:
        sk = self.model.sock_of(self.name, fd)
        return sk.rcv_q if sk is not None else 0

    @rule("qt.event_dispatcher", "qt", "minor")
    def core_application(self) -> None:
        """QEventDispatcherUNIX / QThreadPipe::init() (qeventdispatcher_unix.cpp): the event loop's wake-up eventfd, at the lowest free fd (Qt 6.12 measured); none on Windows (QEventDispatcherWin32 uses a window)."""
        if not self.windows:
            self.sys("eventfd")

    @rule("qt.engine_socket", "qt", "minor")
    def engine_socket(self) -> int:
        """QNativeSocketEngine::initialize() (qnativesocketengine.cpp, _unix.cpp createNewSocket()): a non-blocking close-on-exec socket with SO_OOBINLINE; on Windows after WSAStartup (QWindowsSockInit) and FIONBIO."""
        if self.windows and not self.wsa_started:
            fact("Windows: Qt's QWindowsSockInit calls WSAStartup once per process")
            self.sys("WSAStartup")
            self.wsa_started = True
        r = self.sys("socket", family="AF_INET", type="SOCK_STREAM", protocol=0,
                     nonblock=not self.windows)
        if r.err is not None or not isinstance(r.ret, int) or r.ret < 0:
            return -1
        if self.windows:
            self.sys("set_nonblocking", sock=r.ret, on=True)
        fact("SO_OOBINLINE is also set (ReceiveOutOfBandData); it changes none of the modelled outcomes")
        return r.ret


class QtModel:
    """All Qt objects of a scenario on the simulated kernel."""

    def __init__(self, sys_fn: SysFn, backend: Any, windows: bool, trail: Trail) -> None:
        self.sys_fn, self.backend, self.windows = sys_fn, backend, windows
        self.trail = trail  # the Qt layer's rules and facts (above any kernel)
        self.procs: dict[str, QtProcess] = {}
        self.startup_calls: list[dict[str, Any]] = []

    @property
    def kernel(self) -> Any:
        return self.backend.kernel  # the simulated kernel (public tables only)

    def proc(self, name: str) -> QtProcess:
        """The Qt side of process ``name``; its first Qt use constructs the application."""
        if name not in self.procs:
            qp = self.procs[name] = QtProcess(name, self, self.windows)
            qp.calls = []
            prev = activate(self.trail)
            qp.core_application()
            activate(prev)
            self.startup_calls = list(qp.calls)
            qp.calls = []
        return self.procs[name]

    def sock_of(self, proc: str, fd: int) -> Any:
        p = self.kernel.procs.get(proc)
        if p is None or not p.alive:
            return None
        f = p.files.fds.get(fd)
        return None if f is None else f.sock

    # ------------------------------------------------------------------ one Qt call
    def call(self, proc: str, obj: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``Class.method`` on object ``obj`` of ``proc``: its return value, the system
        calls it made, the deciding Qt rule and the facts it looked at."""
        t = self.trail
        t.clear()
        prev = activate(t)
        fresh = proc not in self.procs
        qp = self.proc(proc)
        qp.calls = list(self.startup_calls) if fresh else []
        cls, _, meth = method.partition(".")
        ret = self._dispatch(qp, cls, obj, meth, args)
        activate(prev)
        qt_rules = [r for r in t.rules if r.startswith("qt.") and "minor" not in RULES[r].tags]
        # a failure is explained by the errno mapping; otherwise by the method's own rule
        rid = "qt.socket_error" if "qt.socket_error" in qt_rules else (qt_rules[0] if qt_rules else None)
        out = {"ret": ret, "calls": qp.calls, "rule": rid, "cite": RULES[rid].cite if rid in RULES else None,
               "trail": list(t.rules), "facts": list(t.facts)}
        qp.calls = []
        return out

    def _dispatch(self, qp: QtProcess, cls: str, name: str, meth: str, a: dict[str, Any]) -> Any:
        o = qp.objects.get(name)
        if o is None:
            o = QTcpServer(name, qp) if cls == "QTcpServer" else QTcpSocket(name, qp)
            qp.objects[name] = o
        if meth == "signals":
            got, o.signals = list(o.signals), []
            return got
        if isinstance(o, QTcpServer):
            return self._server(qp, o, meth, a)
        return self._socket(o, meth, a)

    @staticmethod
    def _server(qp: QtProcess, s: QTcpServer, meth: str, a: dict[str, Any]) -> Any:
        if meth == "listen":
            return s.listen(a.get("addr", "0.0.0.0"), int(a.get("port", 0)))
        if meth == "serverError":
            return s.error
        if meth == "errorString":
            return s.error_string
        if meth == "isListening":
            return s.listening
        if meth == "socketDescriptor":
            return s.fd
        if meth == "setListenBacklogSize":
            s.setListenBacklogSize(int(a["value"]))
            return None
        if meth == "setMaxPendingConnections":
            s.setMaxPendingConnections(int(a["value"]))
            return None
        if meth == "hasPendingConnections":
            return bool(s.pending)
        if meth == "nextPendingConnection":
            sock = s.nextPendingConnection()
            if sock is None:
                return None
            sock.name = a["as"]
            sock.signals = []  # a program connects to the socket's signals only once it has it
            qp.objects[a["as"]] = sock
            return a["as"]
        if meth == "close":
            s.close()
            return None
        raise ValueError(meth)

    @staticmethod
    def _socket(s: QTcpSocket, meth: str, a: dict[str, Any]) -> Any:
        simple = {"state": lambda: s.state, "error": lambda: s.error,
                  "errorString": lambda: s.error_string, "bytesAvailable": lambda: s.read_buffer,
                  "socketDescriptor": lambda: s.fd, "bytesToWrite": lambda: s.write_buffer}
        if meth in simple:
            return simple[meth]()
        if meth == "connectToHost":
            s.connectToHost(a["addr"], int(a["port"]))
            return None
        if meth == "write":
            return s.write(int(a["value"]))
        if meth == "readAll":
            n, s.read_buffer = s.read_buffer, 0
            return n
        if meth == "disconnectFromHost":
            s.disconnectFromHost()
            return None
        if meth == "abort":
            s.abort()
            return None
        raise ValueError(meth)

    # ------------------------------------------------------------------ the event loops
    def idle(self, busy: set[str]) -> list[dict[str, Any]]:
        """Loop passes in every process not blocked in a call, until a pass changes nothing.

        Returns the system calls the loops made (each tagged with its process and object)."""
        made: list[dict[str, Any]] = []
        for _ in range(MAX_PASSES):
            moved = False
            for qp in list(self.procs.values()):
                if qp.name in busy or self.sock_of_proc_gone(qp.name):
                    continue
                qp.calls = []
                objs = list(qp.objects.values())
                objs += [c for o in objs if isinstance(o, QTcpServer) for c in o.pending]
                for obj in objs:
                    self.trail.clear()
                    prev = activate(self.trail)
                    if obj.pass_once() if isinstance(obj, QTcpSocket) else obj.read_notification():
                        moved = True
                    activate(prev)
                    for c in qp.calls:
                        made.append({"proc": qp.name, "object": obj.name, **c})
                    qp.calls = []
            if not moved:
                break
        return made

    def sock_of_proc_gone(self, proc: str) -> bool:
        p = self.kernel.procs.get(proc)
        return p is None or not p.alive

    def fds(self, proc: str) -> dict[str, int]:
        """Object name -> its descriptor (-1 when it has none), for raw calls on a Qt socket."""
        qp = self.procs.get(proc)
        return {n: o.fd for n, o in qp.objects.items()} if qp else {}


__all__ = ["QtModel", "QtProcess", "QTcpServer", "QTcpSocket", "ERROR_STRINGS"]
