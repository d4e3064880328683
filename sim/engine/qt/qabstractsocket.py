"""QTcpSocket (QAbstractSocket) on top of the kernel: which system calls each call makes.

Each rule's first docstring line cites the qtbase source it restates (src/network/socket/
qabstractsocket.cpp, qnativesocketengine.cpp, qnativesocketengine_unix.cpp / _win.cpp). Where
the behaviour was read off real Qt 6.12 (strace of PySide6 6.12.0 on Linux) the docstring says
so. The socket talks to the kernel only through ``sys`` (a :class:`~sim.engine.qt.loop.QtProcess`),
so every call it makes shows in the timeline under the Qt call that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...kernel.poll import POLLERR, POLLHUP, POLLIN, POLLOUT
from ...kernel.rules import fact, rule

if TYPE_CHECKING:
    from .loop import QtProcess

UNCONNECTED, HOST_LOOKUP, CONNECTING = "UnconnectedState", "HostLookupState", "ConnectingState"
CONNECTED, CLOSING = "ConnectedState", "ClosingState"

# QNativeSocketEnginePrivate::ErrorString texts (qnativesocketengine.cpp), as QAbstractSocket
# reports them in errorString().
ERROR_STRINGS = {
    "AddressInUseError": "The bound address is already in use",
    "SocketAddressNotAvailableError": "The address is not available",
    "SocketAccessError": "The address is protected",
    "ConnectionRefusedError": "Connection refused",
    "RemoteHostClosedError": "The remote host closed the connection",
    "NetworkError": "Network unreachable",
    "UnsupportedSocketOperationError": "Unsupported socket operation",
    "SocketTimeoutError": "Connection timed out",
    "UnknownSocketError": "",
}


@rule("qt.socket_error", "qt")
def socket_error(call: str, errno_name: str, windows: bool) -> str:
    """QNativeSocketEnginePrivate::nativeBind()/nativeListen()/nativeConnect() (qnativesocketengine_unix.cpp, _win.cpp): the errno becomes a QAbstractSocket::SocketError."""
    table = {
        "EADDRINUSE": "AddressInUseError",
        "EACCES": "SocketAccessError",
        "EPERM": "SocketAccessError",
        "EADDRNOTAVAIL": "SocketAddressNotAvailableError",
        "ECONNREFUSED": "ConnectionRefusedError",
        "ETIMEDOUT": "SocketTimeoutError",
        "ENETUNREACH": "NetworkError",
        "EHOSTUNREACH": "NetworkError",
    }
    if call == "bind" and errno_name == "EINVAL":
        # Unix: already bound -> UnsupportedSocketOperationError; Winsock: WSAEINVAL is
        # reported as AddressInUseError (nativeBind() in qnativesocketengine_win.cpp).
        return "AddressInUseError" if windows else "UnsupportedSocketOperationError"
    name = table.get(errno_name, "UnknownSocketError")
    fact(f"{call}() failed with {errno_name}: Qt reports {name} ({ERROR_STRINGS.get(name, '')!r})")
    return name


@dataclass
class QTcpSocket:
    name: str
    proc: "QtProcess"
    state: str = UNCONNECTED
    error: str = "UnknownSocketError"
    error_string: str = "Unknown error"
    fd: int = -1
    peer: tuple[str, int] | None = None
    refused_once: bool = False
    write_buffer: int = 0  # bytes accepted by write(), not yet handed to send()
    read_buffer: int = 0  # bytes read from the kernel, not yet read by the program
    signals: list[str] = field(default_factory=list)

    def _state(self, st: str) -> None:
        if st != self.state:
            self.state = st
            self.signals.append(f"stateChanged({st})")

    def _error(self, err: str) -> None:
        self.error, self.error_string = err, ERROR_STRINGS.get(err, "Unknown error")
        self.signals.append(f"errorOccurred({err})")

    # ------------------------------------------------------------------ calls
    @rule("qt.connect_to_host", "qt")
    def connectToHost(self, addr: str, port: int) -> None:
        """QAbstractSocket::connectToHost() (qabstractsocket.cpp): HostLookupState, then _q_startConnecting(): a non-blocking socket, ConnectingState and connect()."""
        if self.state != UNCONNECTED:
            fact(f"QAbstractSocket::connectToHost() called when already in {self.state}: nothing happens")
            return
        self.peer = (addr, port)
        if self.fd >= 0:
            fact("resetSocketLayer(): the descriptor of the previous, failed attempt is closed first")
            self.proc.sys("close", sock=self.fd)
            self.fd = -1
        self._state(HOST_LOOKUP)
        fact("an IP literal needs no lookup: _q_startConnecting() runs at once")
        self._start_connecting()

    def _start_connecting(self) -> None:
        fd = self.proc.engine_socket()
        if fd < 0:
            self._state(UNCONNECTED)
            self._error("SocketResourceError")
            return
        self.fd = fd
        self._state(CONNECTING)
        r = self.proc.sys("connect", sock=fd, addr=self.peer[0], port=self.peer[1])
        if r.err in (None, "EISCONN"):
            self._connected()
        elif r.err not in ("EINPROGRESS", "EWOULDBLOCK", "EAGAIN", "EALREADY"):
            self._refused_or_failed(r.err)

    def _connected(self) -> None:
        self._state(CONNECTED)
        self.signals.append("connected()")

    @rule("qt.test_connection", "qt")
    def test_connection(self) -> bool:
        """QAbstractSocketPrivate::_q_testConnection() (qabstractsocket.cpp): when the write notifier fires, SO_ERROR says whether the connect succeeded."""
        mask = self.proc.poll(self.fd)
        if not mask & (POLLOUT | POLLERR | POLLHUP):
            return False
        r = self.proc.sys("getsockopt", sock=self.fd, opt="SO_ERROR")
        err = r.ret if isinstance(r.ret, str) and r.ret.startswith(("E", "WSAE")) else None
        if err and err.startswith("WSAE"):
            err = err[3:]
        if not err:
            fact("SO_ERROR is 0: the connection is up (fetchConnectionParameters() reads SO_TYPE)")
            self.proc.sys("getsockopt", sock=self.fd, opt="SO_TYPE")
            self._connected()
            return True
        self._refused_or_failed(err)
        return True

    @rule("qt.connect_refused", "qt")
    def _refused_or_failed(self, err: str) -> None:
        """_q_testConnection() then _q_connectToNextAddress() (qabstractsocket.cpp; Qt 6.12 measured): a refused connect is tried once more on a fresh socket, and the second refusal emits errorOccurred on the next loop pass."""
        if err == "ECONNREFUSED" and not self.refused_once:
            self.refused_once = True
            fact("first refusal: Qt closes the socket and connects again on a new one")
            self.proc.sys("close", sock=self.fd)
            self.fd = -1
            self._start_connecting()
            return
        self.refused_once = False
        self._state(UNCONNECTED)
        self._error(socket_error("connect", err, self.proc.windows))

    @rule("qt.write", "qt")
    def write(self, nbytes: int) -> int:
        """QAbstractSocket::writeData() (qabstractsocket.cpp): a TCP write is buffered and flushed by the write notifier on a later loop pass; -1 when the device is not open."""
        if self.state not in (CONNECTED, CONNECTING, HOST_LOOKUP):
            fact("QIODevice::write (QTcpSocket): device not open")
            return -1
        self.write_buffer += nbytes
        fact(f"{nbytes} bytes wait in Qt's write buffer until the next loop pass")
        return nbytes

    def flush(self) -> bool:
        """Hand buffered bytes to send() when the socket is writable (one loop pass)."""
        if self.write_buffer <= 0 or self.state not in (CONNECTED, CLOSING):
            return False
        if not self.proc.poll(self.fd) & POLLOUT:
            return False
        r = self.proc.sys("send", sock=self.fd, bytes=self.write_buffer)
        if r.err is None and isinstance(r.ret, int) and r.ret > 0:
            self.write_buffer -= r.ret
            return True
        return False

    @rule("qt.read_notification", "qt")
    def read_notification(self) -> bool:
        """QAbstractSocketPrivate::canReadNotification() (qabstractsocket.cpp): read what the kernel holds into Qt's buffer and emit readyRead(); end of file is RemoteHostClosedError, then disconnectFromHost()."""
        if self.state != CONNECTED or not self.proc.poll(self.fd) & (POLLIN | POLLHUP):
            return False
        q = self.proc.inq(self.fd)
        if q > 0:
            r = self.proc.sys("recv", sock=self.fd, bytes=q)
            if r.err is None and isinstance(r.ret, int) and r.ret > 0:
                self.read_buffer += r.ret
                self.signals.append("readyRead()")
                return True
        r = self.proc.sys("recv", sock=self.fd, bytes=4096)
        if r.err is None and r.ret == 0:
            fact("read() returned 0: the peer closed its side")
            self._error("RemoteHostClosedError")
            self._close_now(closing=True)
            return True
        return False

    @rule("qt.disconnect_from_host", "qt")
    def disconnectFromHost(self) -> None:
        """QAbstractSocket::disconnectFromHost() (qabstractsocket.cpp): ClosingState; with nothing left to write the socket is closed at once, else after the write buffer drains."""
        if self.state in (UNCONNECTED,):
            return
        if self.state in (HOST_LOOKUP, CONNECTING):
            self.abort()
            return
        self._state(CLOSING)
        if self.write_buffer == 0:
            self._close_now(closing=False)

    def _close_now(self, closing: bool) -> None:
        if closing:
            self._state(CLOSING)
        if self.fd >= 0:
            self.proc.sys("close", sock=self.fd)
            self.fd = -1
        self._state(UNCONNECTED)
        self.signals.append("disconnected()")

    @rule("qt.abort", "qt")
    def abort(self) -> None:
        """QAbstractSocket::abort() (qabstractsocket.cpp): drop the write buffer and close the descriptor now; UnconnectedState and disconnected() if it was connected; nothing on an unconnected socket."""
        was = self.state
        self.write_buffer = 0
        if was == UNCONNECTED:
            if self.fd >= 0:
                fact("abort() on an unconnected socket does nothing: the descriptor left by a failed "
                     "connect stays open until the object connects again or is destroyed (Qt 6.12 measured)")
            return
        if self.fd >= 0:
            self.proc.sys("close", sock=self.fd)
            self.fd = -1
        self._state(UNCONNECTED)
        if was in (CONNECTED, CLOSING):
            self.signals.append("disconnected()")

    def pass_once(self) -> bool:
        """One event-loop pass over this socket's notifiers; True when something happened."""
        if self.state == CONNECTING and self.fd >= 0:
            return self.test_connection()
        did = self.flush()
        if self.state == CLOSING and self.write_buffer == 0 and self.fd >= 0:
            self._close_now(closing=False)
            return True
        return self.read_notification() or did
