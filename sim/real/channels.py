"""The real backend's processes and their control channels: spawn, send, receive, reap, kill."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
from typing import Any


from . import driver
from .common import RealBackendError, START_TIMEOUT, _Proc


class ProcessChannels:
    """The real backend's processes and their control channels: spawn, send, receive, reap, kill. (a part of RealBackend)"""

    def _spawn(self, name: str, nofile: int, uid: int, drop_caps: list[str] | None = None) -> None:
        self._zsend({"op": "spawn", "nofile": nofile, "uid": uid, "drop_caps": drop_caps or []})
        msg, fds = self._zrecv(START_TIMEOUT, maxfds=1)
        if "pid" not in msg or not fds:
            for fd in fds:
                os.close(fd)
            raise RealBackendError(f"cannot start process {name!r}: {msg.get('error', msg)}")
        if self._register(name, fds[0]) is None:
            raise RealBackendError(f"process {name!r} did not start" + self._log_tail())
        if uid and self._procs[name].info.get("uid") != uid:
            self.meta["unapplied"][f"uid:{name}"] = {"scenario": uid,
                                                     "real": self._procs[name].info.get("uid")}

    def _register(self, name: str, fd: int) -> _Proc | None:
        """Adopt a new process's channel and read its hello (pid, control fd, limits)."""
        chan = socket.socket(fileno=fd)
        hello = self._recv_on(chan, START_TIMEOUT)
        if hello is None or "hello" not in hello[0]:
            chan.close()
            return None
        info = hello[0]
        pid = int(info["hello"])
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        proc = _Proc(name=name, pid=pid, chan=chan, pidfd=pidfd, ctrl_fd=int(info["ctrl_fd"]),
                     info=info)
        old = self._procs.get(name)
        if old is not None:
            self._drop(old)
        self._procs[name] = proc
        self._history[name] = pid
        if info.get("warn"):
            self.meta.setdefault("warnings", []).extend(f"{name}: {w}" for w in info["warn"])
        return proc

    # ------------------------------------------------------------------ channels

    def _zsend(self, msg: dict[str, Any]) -> None:
        assert self._zchan is not None
        self._zchan.send(json.dumps(msg).encode())

    def _zrecv(self, timeout: float, maxfds: int = 0) -> tuple[dict[str, Any], list[int]]:
        assert self._zchan is not None
        got = self._recv_on(self._zchan, timeout, maxfds)
        if got is None:
            raise RealBackendError("the namespace driver did not answer" + self._log_tail())
        return got

    @staticmethod
    def _readable(sock: socket.socket, timeout: float) -> bool:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    def _recv_on(self, sock: socket.socket, timeout: float,
                 maxfds: int = 1) -> tuple[dict[str, Any], list[int]] | None:
        """One message within ``timeout``; None on EOF or timeout (use _readable to tell)."""
        if not self._readable(sock, timeout):
            return None
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, driver.MAX_MSG, max(1, maxfds))
        except OSError:
            return None
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        return json.loads(data), list(fds)

    def _send_to(self, p: _Proc, msg: dict[str, Any]) -> bool:
        try:
            p.chan.send(json.dumps(msg).encode())
            return True
        except OSError:
            self._mark_gone(p)
            return False

    def _wait_reply(self, p: _Proc, timeout: float) -> tuple[str, dict[str, Any], list[int]]:
        """('ok', msg, fds) | ('timeout', {}, []) | ('gone', {}, [])."""
        if not self._readable(p.chan, timeout):
            return "timeout", {}, []
        got = self._recv_on(p.chan, 0, maxfds=1)
        if got is None:
            self._mark_gone(p)
            return "gone", {}, []
        msg, fds = got
        if "internal" in msg:
            for fd in fds:
                os.close(fd)
            raise RealBackendError(f"driver error in process {p.name!r}: {msg['internal']}")
        return "ok", msg, fds

    def _mark_gone(self, p: _Proc) -> None:
        if p.gone:
            return
        p.gone = True
        try:
            p.chan.close()
        except OSError:
            pass

    def _drop(self, p: _Proc) -> None:
        self._mark_gone(p)
        if p.pidfd is not None:
            try:
                os.close(p.pidfd)
            except OSError:
                pass
            p.pidfd = None

    def _alive(self, p: _Proc) -> bool:
        if p.gone:
            return False
        if p.pidfd is not None:
            poller = select.poll()
            poller.register(p.pidfd, select.POLLIN)
            if poller.poll(0):
                self._mark_gone(p)
                return False
        return True

    def _wait_exited(self, p: _Proc, timeout: float) -> bool:
        if p.pidfd is None:
            return not os.path.exists(f"/proc/{p.pid}")
        poller = select.poll()
        poller.register(p.pidfd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0)
            text = self._log.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f"\n--- driver log ---\n{text}" if text else ""

    # ------------------------------------------------------------------ Backend protocol

    def _kill(self, p: _Proc) -> None:
        p.asked_to_end = True
        if p.pidfd is not None:
            try:
                signal.pidfd_send_signal(p.pidfd, signal.SIGKILL)
            except OSError:
                pass
        self._mark_gone(p)
