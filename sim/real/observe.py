"""The real backend's observations: /proc/<pid>/net of the namespace, fd tables, queues."""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from typing import Any

from sim.trace import PROCESS_BUSY, PROCESS_GONE

from . import driver
from .common import (
    NETNS_SYSCTLS, REPLY_TIMEOUT, RealBackendError, TCP_STATES, _PIDFD_GETFD, _Proc, _errname, _libc,
    _read_text, _sysctl_text,
)


class Observations:
    """The real backend's observations: /proc/<pid>/net of the namespace, fd tables, queues. (a part of RealBackend)"""

    def observe(self, obs: dict[str, Any]) -> Any:
        what = obs.get("what")
        if what == "tcp_states":
            return self._tcp_states(int(obs["port"]))
        if what == "fds":
            return self._fds(str(obs["proc"]))
        if what == "sockstat":
            st = self._sockstat()
            return {"inuse": st.get("inuse", 0), "orphan": self._orphans(), "tw": st.get("tw", 0)}
        if what == "queues":
            return self._queues(str(obs["proc"]), int(obs["sock"]))
        if what == "tcp_info":
            return self._tcp_info(str(obs["proc"]), int(obs["sock"]), list(obs["fields"]))
        raise ValueError(f"unknown observation {what!r}")

    def _tcp_info(self, proc: str, fd: int, fields: list[str]) -> Any:
        p = self._procs.get(proc)
        if p is None or not self._alive(p):
            return PROCESS_GONE
        if p.pending is not None:
            self._collect(p)
        if p.pending is not None:
            return PROCESS_BUSY
        if not self._send_to(p, {"op": "tcp_info", "sock": fd, "fields": fields}):
            return PROCESS_GONE
        status, msg, _ = self._wait_reply(p, REPLY_TIMEOUT)
        if status != "ok":
            return PROCESS_GONE
        return msg.get("error") or msg.get("info")

    def sysctl(self, values: dict[str, Any]) -> str | None:
        """Write per-namespace sysctls now (the zygote lives in the namespace)."""
        missing = [k for k in values if k not in NETNS_SYSCTLS]
        if missing:
            return f"{', '.join(missing)}: not a per-namespace setting the real backend can write"
        items = [[NETNS_SYSCTLS[k], _sysctl_text(k, v)] for k, v in values.items()]
        self._zsend({"op": "setup", "sysctls": items})
        res, _ = self._zrecv(REPLY_TIMEOUT)
        bad = dict(res.get("errors") or {})
        if res.get("absent") or bad:
            return f"refused by the kernel: {bad or res.get('absent')}"
        return None

    def _netfile(self, name: str) -> str | None:
        if self._zpid is None:
            raise RealBackendError("backend not started")
        return _read_text(f"/proc/{self._zpid}/net/{name}")

    def tcp_rows(self) -> list[tuple[int, int, str]]:
        """(local port, remote port, state name) of every row of /proc/net/tcp and tcp6."""
        return [(lp, rp, st) for lp, rp, st, _ in self._tcp_rows()]

    def _tcp_rows(self) -> list[tuple[int, int, str, int]]:
        rows = []
        for name in ("tcp", "tcp6"):
            text = self._netfile(name)
            if not text:
                continue
            for line in text.splitlines()[1:]:
                f = line.split()
                if len(f) < 4:
                    continue
                lport = int(f[1].rsplit(":", 1)[1], 16)
                rport = int(f[2].rsplit(":", 1)[1], 16)
                st = int(f[3], 16)
                tr = int(f[5].split(":", 1)[0], 16) if len(f) > 5 else 0
                rows.append((lport, rport, TCP_STATES.get(st, f"STATE_{st:02X}"), tr))
        return rows

    def _tcp_states(self, port: int) -> dict[str, list[str]]:
        rows = self.tcp_rows()
        return {"local": sorted(s for lp, _, s in rows if lp == port),
                "remote": sorted(s for _, rp, s in rows if rp == port)}

    def _fds(self, proc: str) -> Any:
        p = self._procs.get(proc)
        if p is None or not self._alive(p):
            return PROCESS_GONE
        out = []
        try:
            names = os.listdir(f"/proc/{p.pid}/fd")
        except OSError:
            return PROCESS_GONE
        for n in names:
            fd = int(n)
            if fd < 3 or fd == p.ctrl_fd:
                continue
            try:
                if os.readlink(f"/proc/{p.pid}/fd/{n}").startswith("socket:"):
                    out.append(fd)
            except OSError:
                continue
        return sorted(out)

    def _orphans(self) -> int:
        """This namespace's orphans: sockstat's ``orphan`` is host-wide (tcp_orphan_count_sum()),
        so orphans of other namespaces (one being torn down, a concurrent run) leak into it. An
        orphan is a socket with no file (inode 0 in /proc/net/tcp) in a state that only close()
        leaves it in: FIN_WAIT1, CLOSING or LAST_ACK (an orphaned FIN_WAIT2 is a minisock, counted
        in ``tw``)."""
        n = 0
        for name in ("tcp", "tcp6"):
            for line in (self._netfile(name) or "").splitlines()[1:]:
                f = line.split()
                if len(f) > 9 and f[9] == "0" and int(f[3], 16) in (4, 9, 11):
                    n += 1
        return n

    def _sockstat(self) -> dict[str, int]:
        text = self._netfile("sockstat") or ""
        for line in text.splitlines():
            if line.startswith("TCP:"):
                f = line.split()[1:]
                return {f[i]: int(f[i + 1]) for i in range(0, len(f) - 1, 2)}
        return {}

    def _queues(self, proc: str, fd: int) -> Any:
        p = self._procs.get(proc)
        if p is None or not self._alive(p):
            return PROCESS_GONE
        if p.pending is not None:
            self._collect(p)
        if p.pending is None:
            if not self._send_to(p, {"op": "queues", "sock": fd}):
                return PROCESS_GONE
            status, msg, _ = self._wait_reply(p, REPLY_TIMEOUT)
            if status != "ok":
                return PROCESS_GONE
            return msg.get("error") or msg
        # The process is blocked in a call: look at its socket from here (pidfd_getfd, 5.6+).
        return self._queues_from_outside(p, fd)

    def _queues_from_outside(self, p: _Proc, fd: int) -> Any:
        if p.pidfd is None:
            return PROCESS_BUSY
        mine = _libc.syscall(_PIDFD_GETFD, p.pidfd, fd, 0)
        if mine < 0:
            return _errname(ctypes.get_errno())
        try:
            out = {}
            for key, req in (("recv_q", driver.SIOCINQ), ("send_q", driver.SIOCOUTQ)):
                try:
                    out[key] = struct.unpack("i", fcntl.ioctl(mine, req, bytes(4)))[0]
                except OSError as exc:
                    return _errname(exc.errno)
            return out
        finally:
            os.close(mine)

    # ------------------------------------------------------------------ load
