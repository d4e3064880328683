"""Load steps on the real kernel: the client's paced connection loop and the server's accept
thread, inside the scenario processes.

A sibling of driver.py, imported by it as a plain script (standard library only, nothing from
``sim``). Each connection is made with the raw libc calls of libcalls.py, bounded by
LOAD_IO_TIMEOUT per connect() and per wait for EOF.
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import threading
import time

from libcalls import _accept, _bind, _Buffer, _close, _connect, _recv, _setsockopt, _socket, sockaddr
from sockinfo import SOL_SOCKET, errname

LOAD_IO_TIMEOUT = 2.0  # load steps: bound on each connect() and each wait for EOF, seconds


class LoadClient:
    """The client side of a load step (a part of driver.Child: ``recvbuf`` is its buffer)."""

    recvbuf: _Buffer

    def load_client(self, spec: dict) -> dict:
        rate = float(spec["rate"])
        duration = float(spec["duration"])
        hard_stop = duration + max(1.0, 0.25 * duration)
        errors: dict[str, int] = {}
        stats = {"attempts": 0, "ok": 0, "errors": errors, "first_error": None,
                 "first_error_at": None, "late": 0.0, "truncated": False}
        start = time.monotonic()
        i = 0
        while True:
            offset = i / rate
            if offset >= duration:
                break
            due = start + offset
            now = time.monotonic()
            if now - start >= hard_stop:
                stats["truncated"] = True
                break
            if now < due:
                time.sleep(due - now)
            else:
                stats["late"] = max(stats["late"], now - due)
            i += 1
            stats["attempts"] += 1
            err = self._one_connection(spec)
            if err is None:
                stats["ok"] += 1
                continue
            errors[err] = errors.get(err, 0) + 1
            if stats["first_error"] is None:
                stats["first_error"] = err
                stats["first_error_at"] = time.monotonic() - start
            if spec.get("stop_on_error"):
                break
        # The step lasts its whole duration (as in the model), unless it stopped on an error.
        if not (spec.get("stop_on_error") and stats["first_error"] is not None):
            rest = start + duration - time.monotonic()
            if rest > 0:
                time.sleep(rest)
        stats["elapsed"] = time.monotonic() - start
        return stats

    def _one_connection(self, spec: dict) -> str | None:
        addr = spec.get("addr", "127.0.0.1")
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        fd = _socket(fam, socket.SOCK_STREAM, 0)
        if fd < 0:
            return errname(ctypes.get_errno())
        try:
            one = struct.pack("i", 1)
            if spec.get("reuseaddr"):
                if _setsockopt(fd, SOL_SOCKET, 2, one, 4) < 0:
                    return errname(ctypes.get_errno())
            tv = struct.pack("qq", int(LOAD_IO_TIMEOUT), 0)
            _setsockopt(fd, SOL_SOCKET, socket.SO_SNDTIMEO, tv, len(tv))  # bounds connect()
            _setsockopt(fd, SOL_SOCKET, socket.SO_RCVTIMEO, tv, len(tv))  # bounds recv()
            if spec.get("bind_addr"):
                sa = sockaddr(spec["bind_addr"], 0, fam)
                if _bind(fd, sa, len(sa)) < 0:
                    return errname(ctypes.get_errno())
            sa = sockaddr(addr, int(spec["port"]), fam)
            if _connect(fd, sa, len(sa)) < 0:
                e = errname(ctypes.get_errno())
                return "ETIMEDOUT" if e in ("EINPROGRESS", "EAGAIN") else e
            if spec.get("close_first", "client") == "client":
                return None
            return _drain(fd, self.recvbuf.get(65536))
        finally:
            _close(fd)


def _drain(fd: int, buf: int) -> str | None:
    """recv() until EOF; a wait beyond the socket's receive timeout counts as ETIMEDOUT."""
    while True:
        n = _recv(fd, buf, 65536, 0)
        if n == 0:
            return None
        if n < 0:
            e = errname(ctypes.get_errno())
            return "ETIMEDOUT" if e == "EAGAIN" else e


class _LoadServer:
    """Accept loop of a load step, in a thread of the accepting scenario process."""

    def __init__(self, listener: int, close_first: str) -> None:
        self.listener = listener
        self.close_first = close_first
        self.accepted = 0
        self.errors: dict[str, int] = {}
        self.stopping = threading.Event()
        self.buf = _Buffer()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        addr = self.buf.get(65536)
        while not self.stopping.is_set():
            try:
                ready = poller.poll(20)
            except OSError:
                time.sleep(0.01)
                continue
            if not ready:
                continue
            if ready[0][1] & select.POLLNVAL:
                self.errors["EBADF"] = self.errors.get("EBADF", 0) + 1
                return
            fd = _accept(self.listener, None, None)
            if fd < 0:
                e = errname(ctypes.get_errno())
                if e != "EAGAIN":
                    self.errors[e] = self.errors.get(e, 0) + 1
                    time.sleep(0.005)
                continue
            self.accepted += 1
            if self.close_first != "server":
                tv = struct.pack("qq", int(LOAD_IO_TIMEOUT), 0)
                _setsockopt(fd, SOL_SOCKET, socket.SO_RCVTIMEO, tv, len(tv))
                err = _drain(fd, addr)
                if err:
                    self.errors[err] = self.errors.get(err, 0) + 1
            _close(fd)

    def stop(self) -> dict:
        self.stopping.set()
        self.thread.join(LOAD_IO_TIMEOUT + 1.0)
        return {"accepted": self.accepted, "errors": dict(self.errors)}
