"""QTcpServer on top of the kernel: the system calls listen() and the accept loop make.

Sources: qtbase src/network/socket/qtcpserver.cpp (QTcpServer::listen(),
QTcpServerPrivate::configureCreatedSocket(), readNotification(), nextPendingConnection(),
close()), qnativesocketengine.cpp and qnativesocketengine_unix.cpp / _win.cpp; the Linux
sequence checked against real Qt 6.12 (strace of PySide6 6.12.0, docs/qt.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...kernel.poll import POLLIN
from ...kernel.rules import fact, rule
from .qabstractsocket import CONNECTED, ERROR_STRINGS, QTcpSocket, socket_error

if TYPE_CHECKING:
    from .loop import QtProcess

LISTEN_BACKLOG = 50  # QTcpServerPrivate::listenBacklog default (Qt 6.12 measured: listen(fd, 50))
MAX_PENDING = 30  # QTcpServerPrivate::maxConnections default ("By default, the limit is 30")


@dataclass
class QTcpServer:
    name: str
    proc: "QtProcess"
    fd: int = -1
    listening: bool = False
    backlog: int = LISTEN_BACKLOG
    max_pending: int = MAX_PENDING
    read_enabled: bool = False
    error: str = "UnknownSocketError"
    error_string: str = ""
    pending: list[QTcpSocket] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    def _fail(self, call: str, err: str) -> bool:
        self.error = socket_error(call, err, self.proc.windows)
        self.error_string = ERROR_STRINGS.get(self.error, "")
        return False

    @rule("qt.tcpserver_listen", "qt")
    def listen(self, addr: str, port: int) -> bool:
        """QTcpServer::listen() (qtcpserver.cpp): drop the old engine, new non-blocking socket, configureCreatedSocket(), bind(), listen(fd, listenBacklog)."""
        if self.listening:
            fact("QTcpServer::listen() called when already listening: false, nothing else happens")
            return False
        if self.fd >= 0:
            fact("listen() deletes the previous socket engine: its descriptor is closed first")
            self.proc.sys("close", sock=self.fd)
            self.fd = -1
        fd = self.proc.engine_socket()
        if fd < 0:
            return self._fail("socket", self.proc.last_err or "EMFILE")
        self.fd = fd
        self.configure_created_socket()
        r = self.proc.sys("bind", sock=fd, addr=addr, port=port)
        if r.err is not None:
            fact("the socket stays open until the next listen() or close() (QTcpServer keeps its engine)")
            return self._fail("bind", r.err)
        r = self.proc.sys("listen", sock=fd, backlog=self.backlog)
        if r.err is not None:
            return self._fail("listen", r.err)
        self.listening = self.read_enabled = True
        self.error, self.error_string = "UnknownSocketError", ""
        return True

    @rule("qt.configure_created_socket", "qt")
    def configure_created_socket(self) -> None:
        """QTcpServerPrivate::configureCreatedSocket() (qtcpserver.cpp): on Unix SO_REUSEADDR before bind, so a restart binds over TIME_WAIT; on Windows nothing (there SO_REUSEADDR would let listeners share a port)."""
        if self.proc.windows:
            fact("Windows: Qt sets no address-reuse option (configureCreatedSocket() is Unix-only)")
            return
        self.proc.sys("setsockopt", sock=self.fd, opt="SO_REUSEADDR", value=1)

    @rule("qt.tcpserver_backlog", "qt")
    def setListenBacklogSize(self, size: int) -> None:
        """QTcpServer::setListenBacklogSize() (qtcpserver.cpp, Qt 6.3+): the backlog the next listen() passes to listen(2); default 50."""
        self.backlog = size

    @rule("qt.tcpserver_max_pending", "qt")
    def setMaxPendingConnections(self, n: int) -> None:
        """QTcpServer::setMaxPendingConnections() (qtcpserver.cpp): accept no more than n connections before nextPendingConnection(); the kernel may still queue more."""
        self.max_pending = n

    @rule("qt.tcpserver_read_notification", "qt")
    def read_notification(self) -> bool:
        """QTcpServerPrivate::readNotification() (qtcpserver.cpp): accept until EAGAIN or maxPendingConnections, a QTcpSocket and newConnection() for each; at the limit the read notifier is disabled."""
        if not (self.listening and self.read_enabled) or not self.proc.poll(self.fd) & POLLIN:
            return False
        did = False
        while True:
            if len(self.pending) >= self.max_pending:
                fact(f"{len(self.pending)} pending connections = maxPendingConnections: accepting pauses")
                self.read_enabled = False
                return did
            r = self.proc.sys("accept", sock=self.fd)
            if r.err is not None or not isinstance(r.ret, int) or r.ret < 0:
                return did
            sock = QTcpSocket(f"{self.name}#{len(self.pending)}", self.proc, state=CONNECTED, fd=r.ret)
            self.proc.sys("set_nonblocking", sock=r.ret, on=True)
            self.pending.append(sock)
            self.signals.append("newConnection()")
            did = True

    @rule("qt.next_pending_connection", "qt")
    def nextPendingConnection(self) -> QTcpSocket | None:
        """QTcpServer::nextPendingConnection() (qtcpserver.cpp): the first pending socket or null; re-enables the read notifier."""
        if not self.pending:
            fact("no pending connection: nextPendingConnection() returns nullptr")
            return None
        if not self.read_enabled and self.listening:
            self.read_enabled = True
        return self.pending.pop(0)

    @rule("qt.tcpserver_close", "qt")
    def close(self) -> None:
        """QTcpServer::close() (qtcpserver.cpp): delete the pending sockets, close the listening descriptor."""
        for s in self.pending:
            if s.fd >= 0:
                self.proc.sys("close", sock=s.fd)
        self.pending.clear()
        if self.fd >= 0:
            self.proc.sys("close", sock=self.fd)
        self.fd, self.listening, self.read_enabled = -1, False, False
