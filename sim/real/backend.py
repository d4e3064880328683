"""The real backend: the scenario runs on the host's kernel, inside a private network namespace.

Layout::

    controller (this object, host netns)
      └─ zygote  (driver.py --zygote; new netns, lo up, scenario sysctls; own session)
           ├─ scenario process "server"  ─┐ each driven over its own AF_UNIX SOCK_SEQPACKET
           ├─ scenario process "client"   ├ channel held by the controller (JSON messages;
           └─ forked processes (re-parented to the zygote)  new channels come by SCM_RIGHTS)

The controller sends one command and waits at most :data:`BLOCK_WAIT` for the reply; a call that
has not returned by then is reported ``blocked`` and its reply is collected later by
:meth:`RealBackend.completions`. Observations read ``/proc/<pid>/net/*`` of the zygote (the
controller itself stays in the host namespace) and ``/proc/<pid>/fd``.

Between steps the network is allowed to settle: SETTLE after any call that can put a segment on
loopback, then up to QUIESCE_MAX while a connection still waits for an ACK (delayed ACKs), then
up to PENDING_SETTLE for calls blocked in other processes to report -- so a completion is
attributed to the step that caused it.

Results, as the trace records them:

* calls: ``ret`` as the syscall returns it (fd, byte count, option value, port for getsockname,
  ``[onoff, secs]`` for SO_LINGER, the errno *name* or 0 for SO_ERROR); fork reports 0. On error
  ``ret`` is -1 and ``err`` the errno name (EAGAIN for EWOULDBLOCK, EOPNOTSUPP for ENOTSUP).
  ``BLOCKED`` / ``PROCESS_BUSY`` / ``PROCESS_GONE`` come with ``ret`` None.
* ``tcp_states {port}`` -> ``{"local": [...], "remote": [...]}``: sorted state names, one per
  /proc/net/tcp{,6} row whose local (remote) port is ``port``.
* ``fds {proc}`` -> sorted socket fd numbers >= 3 (the control channel left out).
* ``sockstat`` -> ``{"inuse": n, "orphan": n, "tw": n}``; sockstat's orphan figure is host-wide,
  so ``orphan`` counts this namespace's orphans from /proc/net/tcp (see ``_orphans``).
* ``queues {proc, sock}`` -> ``{"recv_q": SIOCINQ, "send_q": SIOCOUTQ}`` or the errno name.
* a process that has exited or was killed answers ``PROCESS_GONE`` (calls and observations).

Addresses are family-neutral: an IPv4 address on an AF_INET6 socket is used in its v4-mapped
form, and 0.0.0.0 there means ``::``.

This module is ground truth: it imports only the standard library, :mod:`sim.trace` and its own
driver -- never the model (``sim.kernel``, ``sim.engine``) or the scenario package.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from sim.trace import BLOCKED, PROCESS_BUSY, PROCESS_GONE, CallResult, Completion

from . import driver

# ----------------------------------------------------------------------------- bounds (seconds)

BLOCK_WAIT = 0.25  # a call with no reply within this is reported as blocked
SETTLE = 0.003  # after a call that may put segments on loopback, before the next step
QUIESCE_MAX = 0.25  # ... and then at most this long for outstanding ACKs (delayed ACK: 40-200 ms)
PENDING_SETTLE = 0.03  # after a call, how long blocked calls in other processes may take to wake
START_TIMEOUT = 10.0  # zygote start-up and each process spawn
REPLY_TIMEOUT = 5.0  # commands that never block (observations, load control)
EXIT_WAIT = 2.0  # exit(): wait for the process to be gone
KILL_WAIT = 3.0  # close(): wait for killed processes to disappear
LOAD_SLACK = 10.0  # load: extra time over the requested duration before giving up on the client

DRIVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver.py")

# Per-network-namespace sysctls the scenario sets: scenario key -> path under /proc/sys.
NETNS_SYSCTLS = {
    "ip_unprivileged_port_start": "net/ipv4/ip_unprivileged_port_start",
    "ip_local_port_range": "net/ipv4/ip_local_port_range",
    "ip_local_reserved_ports": "net/ipv4/ip_local_reserved_ports",
    "ip_autobind_reuse": "net/ipv4/ip_autobind_reuse",
    "tcp_max_tw_buckets": "net/ipv4/tcp_max_tw_buckets",
    "tcp_tw_reuse": "net/ipv4/tcp_tw_reuse",
    "tcp_tw_reuse_delay": "net/ipv4/tcp_tw_reuse_delay",
    "tcp_timestamps": "net/ipv4/tcp_timestamps",
    "tcp_fin_timeout": "net/ipv4/tcp_fin_timeout",
    "tcp_max_syn_backlog": "net/ipv4/tcp_max_syn_backlog",
    "tcp_syncookies": "net/ipv4/tcp_syncookies",
    "tcp_abort_on_overflow": "net/ipv4/tcp_abort_on_overflow",
    "tcp_syn_retries": "net/ipv4/tcp_syn_retries",
    "tcp_wmem": "net/ipv4/tcp_wmem",
    "tcp_rmem": "net/ipv4/tcp_rmem",
    "somaxconn": "net/core/somaxconn",
    "bindv6only": "net/ipv6/bindv6only",
}
# Host-global: never written (inside a netns they are absent or read-only; writing them from the
# host would change the machine). Read from the host and reported when they differ.
HOST_SYSCTLS = {
    "wmem_max": "/proc/sys/net/core/wmem_max",
    "rmem_max": "/proc/sys/net/core/rmem_max",
    "tcp_mem": "/proc/sys/net/ipv4/tcp_mem",
}
# Kernel defaults of the per-netns sysctls that an older kernel may not have.
ABSENT_DEFAULTS = {"tcp_tw_reuse_delay": 1000, "ip_autobind_reuse": 0, "bindv6only": 0}
HOST_GLOBAL_SLACK = 0.05  # relative difference below which a host-global value counts as equal
FILE_MAX_PATH = "/proc/sys/fs/file-max"
EHASH_PATH = "/proc/sys/net/ipv4/tcp_ehash_entries"

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}

# States in which an armed retransmit timer means "sent, not yet acknowledged".
_ACK_WAIT_STATES = frozenset({"ESTABLISHED", "FIN_WAIT1", "CLOSE_WAIT", "LAST_ACK", "CLOSING"})

_PIDFD_GETFD = 438  # x86_64 / generic syscall number (Linux 5.6+)
_libc = driver.libc


class RealBackendError(RuntimeError):
    """The real backend could not set up or lost its driver."""


# ----------------------------------------------------------------------------- helpers


def _sysctl_text(key: str, value: Any) -> str:
    if key == "ip_local_reserved_ports":
        return ",".join(str(int(p)) for p in value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(int(v)) for v in value)
    return str(int(value))


def _expand_ports(text: str) -> list[int]:
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return sorted(out)


def _same_value(key: str, wanted: str, got: str) -> bool:
    if key == "ip_local_reserved_ports":
        try:
            return _expand_ports(wanted) == _expand_ports(got)
        except ValueError:
            return False
    return wanted.split() == got.split()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _errname(num: int | None) -> str:
    return driver.errname(num or 0)


@dataclass
class _Proc:
    name: str
    pid: int
    chan: socket.socket
    pidfd: int | None
    ctrl_fd: int
    info: dict[str, Any] = field(default_factory=dict)
    pending: int | None = None  # step index of a blocked call
    pending_call: str | None = None
    pending_args: dict[str, Any] = field(default_factory=dict)
    gone: bool = False


_LIVE: weakref.WeakSet[RealBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        try:
            backend.close()
        except Exception:
            pass


class RealBackend:
    """The host kernel as a :class:`sim.trace.Backend`."""

    name = "real"

    _available: tuple[bool, str] | None = None
    _available_lock = threading.Lock()

    def __init__(self, block_wait: float = BLOCK_WAIT, settle: float = SETTLE,
                 pending_settle: float = PENDING_SETTLE, quiesce_max: float = QUIESCE_MAX) -> None:
        self.block_wait = block_wait
        self.settle = settle
        self.quiesce_max = quiesce_max
        self.pending_settle = pending_settle
        self.meta: dict[str, Any] = {"backend": "real", "kernel": os.uname().release}
        self._procs: dict[str, _Proc] = {}
        self._history: dict[str, int] = {}  # every process ever started: name -> pid
        self._done: list[Completion] = []
        self._zygote: subprocess.Popen | None = None
        self._zchan: socket.socket | None = None
        self._zpid: int | None = None
        self._log = None
        self._t0 = time.monotonic()
        self._orphan0 = 0
        self._closed = False
        self._summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ availability

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether a private network namespace can be made here (cached; leaves nothing behind).

        Runs the driver's probe in a throwaway process: unshare(CLONE_NEWNET) as root, or a user
        plus network namespace otherwise, then a loopback connect. The namespace dies with it.
        """
        with cls._available_lock:
            if cls._available is None:
                cls._available = cls._probe()
            return cls._available

    @staticmethod
    def _probe() -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, f"not Linux ({sys.platform})"
        try:
            res = subprocess.run([sys.executable, "-I", "-S", DRIVER_PATH, "--probe"],
                                 capture_output=True, text=True, timeout=20,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"namespace probe failed: {exc}"
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
            return False, f"cannot create a network namespace here: {why}"
        return True, f"{res.stdout.strip()} available (kernel {os.uname().release})"

    # ------------------------------------------------------------------ start

    def start(self, scenario: dict[str, Any]) -> None:
        _LIVE.add(self)
        try:
            self._start(scenario)
        except BaseException:
            self.close()
            raise

    def _start(self, scenario: dict[str, Any]) -> None:
        host = scenario.get("host") or {}
        sysctls = dict(host.get("sysctls") or {})
        self.meta["scenario"] = scenario.get("name")
        self.meta["bounds"] = {"block_wait": self.block_wait, "settle": self.settle,
                               "quiesce_max": self.quiesce_max,
                               "pending_settle": self.pending_settle,
                               "load_io_timeout": driver.LOAD_IO_TIMEOUT}
        self.meta["unapplied"] = self._host_globals(host, sysctls)

        self._log = tempfile.TemporaryFile(prefix="socksim-real-")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-I", "-S", DRIVER_PATH, "--zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
                pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        self._zchan = ours
        hello, _ = self._zrecv(START_TIMEOUT)
        if not hello.get("ready"):
            raise RealBackendError(f"network namespace setup failed: {hello.get('error', hello)}")
        self._zpid = int(hello["pid"])
        self.meta["netns"] = hello.get("mode")
        self.meta["ehash_entries"] = hello.get("ehash")  # None: shares the host's table
        self.meta["zygote_pid"] = self._zpid

        # Per-netns sysctls, written inside the namespace by the zygote. Two defaults follow the
        # size of the connection hash table, which is private here: when the scenario leaves
        # them out, give them the values a namespace sharing the host's table would have.
        ehash = abs(int(_read_text(EHASH_PATH) or 0))
        if ehash and hello.get("ehash"):
            sysctls.setdefault("tcp_max_tw_buckets", ehash // 2)
            sysctls.setdefault("tcp_max_syn_backlog", max(128, ehash // 128))
        items = [[path, _sysctl_text(key, sysctls[key])]
                 for key, path in NETNS_SYSCTLS.items() if key in sysctls]
        self._zsend({"op": "setup", "sysctls": items})
        res, _ = self._zrecv(START_TIMEOUT)
        by_path = {path: key for key, path in NETNS_SYSCTLS.items()}
        applied: dict[str, str] = {}
        mismatched: dict[str, Any] = {}
        for path, text in items:
            key = by_path[path]
            if path in res.get("absent", []):
                continue
            got = res.get("values", {}).get(path, "")
            applied[key] = got
            if not _same_value(key, text, got):
                mismatched[key] = {"scenario": text, "netns": got,
                                   "error": res.get("errors", {}).get(path)}
        absent = [by_path[p] for p in res.get("absent", [])]
        self.meta["sysctls"] = applied
        self.meta["sysctl_absent"] = absent
        for key in absent:
            # A sysctl this kernel lacks (tcp_tw_reuse_delay before 6.x) is skipped; it only
            # makes the run incomparable when the scenario asks for a non-default value.
            if sysctls.get(key) != ABSENT_DEFAULTS.get(key, object()):
                self.meta["unapplied"][key] = {"scenario": sysctls.get(key), "netns": "absent"}
        self.meta["unapplied"].update(mismatched)

        self._orphan0 = self._sockstat().get("orphan", 0)
        for name, spec in (scenario.get("processes") or {}).items():
            spec = spec or {}
            self._spawn(name, int(spec.get("nofile", 1024)), int(spec.get("uid", 0)))
        self._t0 = time.monotonic()

    def _host_globals(self, host: dict[str, Any], sysctls: dict[str, Any]) -> dict[str, Any]:
        """Compare the host-global settings with the scenario's; return the unapplied ones.

        Every difference is recorded in ``meta["host_globals"]``. Only a material one (more than
        HOST_GLOBAL_SLACK relative, in any component) counts as unapplied: tcp_mem and file-max
        are computed at boot from the memory size, so the model's defaults (this machine as
        measured) and today's values differ by a few pages or files, which no scenario short of
        those limits can notice -- while a scenario that tests the limits sets them far away.
        """
        wanted: dict[str, Any] = {k: sysctls[k] for k in HOST_SYSCTLS if k in sysctls}
        paths = dict(HOST_SYSCTLS)
        if "file_max" in host:
            wanted["file_max"] = host["file_max"]
            paths["file_max"] = FILE_MAX_PATH
        seen: dict[str, Any] = {}
        unapplied: dict[str, Any] = {}
        for key, value in wanted.items():
            text = _read_text(paths[key])
            want = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            try:
                have = [int(v) for v in text.split()] if text else None
            except ValueError:
                have = None
            if have == want:
                continue
            entry = {"scenario": value, "host": have if have is None or len(have) > 1 else have[0]}
            seen[key] = entry
            if have is None or len(have) != len(want) or any(
                    abs(w - h) > HOST_GLOBAL_SLACK * max(abs(h), 1) for w, h in zip(want, have)):
                unapplied[key] = entry
        self.meta["host_globals"] = seen
        return unapplied

    def _spawn(self, name: str, nofile: int, uid: int) -> None:
        self._zsend({"op": "spawn", "nofile": nofile, "uid": uid})
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

    def now(self) -> float:
        return time.monotonic() - self._t0

    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        p = self._procs.get(proc)
        if p is None or not self._alive(p):
            return CallResult(ret=None, err=PROCESS_GONE)
        if p.pending is not None:
            self._collect(p)
            if p.pending is not None:
                return CallResult(ret=None, err=PROCESS_BUSY)
            if p.gone:
                return CallResult(ret=None, err=PROCESS_GONE)
        if not self._send_to(p, {"op": "call", "call": call, "args": args}):
            return CallResult(ret=None, err=PROCESS_GONE)
        status, msg, fds = self._wait_reply(p, self.block_wait)
        if status == "timeout":
            p.pending, p.pending_call, p.pending_args = index, call, dict(args)
            return CallResult(ret=None, err=BLOCKED, blocked=True)
        if status == "gone":
            self._settle(call)
            return CallResult(ret=None, err=PROCESS_GONE)
        result = self._finish(p, call, args, msg, fds)
        self._settle(call)
        return result

    def _finish(self, p: _Proc, call: str, args: dict[str, Any], msg: dict[str, Any],
                fds: list[int]) -> CallResult:
        """Turn a reply into a CallResult; adopt a forked process; see an exited one out."""
        result = CallResult(ret=msg.get("ret"), err=msg.get("err"))
        if call == "fork":
            if fds:
                child = self._register(str(args.get("as")), fds[0])
                if child is None:
                    self.meta.setdefault("warnings", []).append(
                        f"{p.name}: forked process {args.get('as')!r} did not report")
            fds = []
        for fd in fds:
            os.close(fd)
        if call == "exit" and result.err is None:
            self._wait_exited(p, EXIT_WAIT)
            self._drop(p)
        return result

    def _collect(self, p: _Proc) -> None:
        """If p's blocked call has returned (or p died), queue its completion."""
        if p.pending is None:
            return
        index, call, args = p.pending, p.pending_call or "", p.pending_args
        if p.gone:
            status, msg, fds = "gone", {}, []
        else:
            status, msg, fds = self._wait_reply(p, 0)
        if status == "timeout":
            if self._alive(p):
                return
            status = "gone"
        p.pending, p.pending_call, p.pending_args = None, None, {}
        if status == "gone":
            self._done.append(Completion(index, CallResult(ret=None, err=PROCESS_GONE),
                                         self.now()))
            return
        result = self._finish(p, call, args, msg, fds)
        when = float(msg["t"]) - self._t0 if "t" in msg else self.now()
        self._done.append(Completion(index, result, when))

    def _settle(self, call: str) -> None:
        """Let loopback deliver what the call put in flight, and let woken calls report."""
        if call not in ("socket", "setsockopt", "getsockopt", "bind", "getsockname",
                        "set_nonblocking", "dup", "fork"):
            time.sleep(self.settle)
            self._quiesce()
        waiting = [p for p in self._procs.values() if p.pending is not None and not p.gone]
        if not waiting:
            return
        deadline = time.monotonic() + self.pending_settle
        while waiting:
            left = deadline - time.monotonic()
            poller = select.poll()
            for p in waiting:
                poller.register(p.chan.fileno(), select.POLLIN | select.POLLHUP)
            if left <= 0 or not poller.poll(max(0, int(left * 1000))):
                break
            for p in waiting:
                self._collect(p)
            waiting = [p for p in waiting if p.pending is not None and not p.gone]

    def _quiesce(self) -> None:
        """Wait (bounded) until no connection waits for an ACK.

        A FIN or data segment that the peer has received but not yet acknowledged leaves the
        sender with its retransmit timer armed (``tr`` 1 in /proc/net/tcp); on loopback that is
        a delayed ACK (measured: the ACK of a FIN that follows data comes 40-50 ms later, so the
        closer sits in FIN_WAIT1 meanwhile). SYN_SENT and SYN_RECV rows are left out: an
        unanswered SYN on loopback was dropped, and waiting would not change it.
        """
        deadline = time.monotonic() + self.quiesce_max
        while time.monotonic() < deadline:
            if not any(tr == 1 and st in _ACK_WAIT_STATES for _, _, st, tr in self._tcp_rows()):
                return
            time.sleep(0.002)

    def completions(self) -> list[Completion]:
        for p in list(self._procs.values()):
            if p.pending is not None:
                self._collect(p)
        done, self._done = self._done, []
        return sorted(done, key=lambda c: c.time)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    # ------------------------------------------------------------------ observations

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
        raise ValueError(f"unknown observation {what!r}")

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

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        stats: dict[str, Any] = {"attempts": 0, "ok": 0, "errors": {}, "first_error": None,
                                 "first_error_at": None, "accepted": 0}

        def refuse(why: str) -> dict[str, Any]:
            stats["errors"] = {why: 1}
            stats["first_error"], stats["first_error_at"] = why, 0.0
            return stats

        client = self._procs.get(str(spec["proc"]))
        server = None
        if client is None or not self._alive(client):
            return refuse(PROCESS_GONE)
        if client.pending is not None:
            self._collect(client)
            if client.pending is not None:
                return refuse(PROCESS_BUSY)
        if spec.get("accept_proc") is not None:
            server = self._procs.get(str(spec["accept_proc"]))
            if server is None or not self._alive(server):
                return refuse(PROCESS_GONE)
            if server.pending is not None:
                self._collect(server)
                if server.pending is not None:
                    return refuse(PROCESS_BUSY)
            if not self._send_to(server, {"op": "load_server_start",
                                          "listener": int(spec["listener"]),
                                          "close_first": spec.get("close_first", "client")}):
                return refuse(PROCESS_GONE)
            if self._wait_reply(server, REPLY_TIMEOUT)[0] != "ok":
                return refuse(PROCESS_GONE)
        extra: dict[str, Any] = {}
        try:
            if not self._send_to(client, {"op": "load_client", "spec": spec}):
                return refuse(PROCESS_GONE)
            status, msg, _ = self._wait_reply(client, float(spec["duration"]) * 1.25 + LOAD_SLACK)
            if status == "ok":
                for key in ("attempts", "ok", "errors", "first_error", "first_error_at"):
                    stats[key] = msg.get(key, stats[key])
                extra = {k: msg[k] for k in ("late", "truncated", "elapsed") if k in msg}
            else:
                if status == "timeout":  # the driver bounds itself; this should not happen
                    self._kill(client)
                refuse(PROCESS_GONE)
        finally:
            if server is not None and not server.gone:
                time.sleep(self.pending_settle)  # connections still in flight
                if self._send_to(server, {"op": "load_server_stop"}):
                    status, msg, _ = self._wait_reply(server, REPLY_TIMEOUT)
                    if status == "ok":
                        stats["accepted"] = int(msg.get("accepted", 0))
                        if msg.get("errors"):
                            extra["server_errors"] = msg["errors"]
            self.meta.setdefault("loads", {})[str(index)] = extra
            self._settle("load")
        return stats

    # ------------------------------------------------------------------ teardown

    def pids(self) -> dict[str, int]:
        """Every scenario process started so far (name -> pid), the exited ones included."""
        return dict(self._history)

    @property
    def zygote_pid(self) -> int | None:
        return self._zpid

    def _kill(self, p: _Proc) -> None:
        if p.pidfd is not None:
            try:
                signal.pidfd_send_signal(p.pidfd, signal.SIGKILL)
            except OSError:
                pass
        self._mark_gone(p)

    def close(self) -> dict[str, Any]:
        if self._closed:
            return self._summary or {}
        self._closed = True
        left: list[int] = []
        try:
            procs = list(self._procs.values())
            for p in procs:
                if p.pidfd is not None:
                    try:
                        signal.pidfd_send_signal(p.pidfd, signal.SIGKILL)
                    except OSError:
                        pass
            deadline = time.monotonic() + KILL_WAIT
            for p in procs:
                if p.pidfd is not None and not self._wait_exited(
                        p, max(0.0, deadline - time.monotonic())):
                    left.append(p.pid)
        finally:
            if self._zygote is not None:
                # The zygote leads its own process group: this also reaches anything unknown.
                try:
                    if self._zygote.poll() is None:
                        os.killpg(self._zygote.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    self._zygote.wait(timeout=KILL_WAIT)
                except subprocess.TimeoutExpired:
                    left.append(self._zygote.pid)
            for p in self._procs.values():
                self._drop(p)
            if self._zchan is not None:
                self._zchan.close()
                self._zchan = None
            log = self._log_tail()
            if self._log is not None:
                self._log.close()
                self._log = None
            _LIVE.discard(self)
        summary = {
            "kernel": self.meta.get("kernel"),
            "netns": self.meta.get("netns"),
            "unapplied": self.meta.get("unapplied", {}),
            "host_globals": self.meta.get("host_globals", {}),
            "sysctls": self.meta.get("sysctls", {}),
            "sysctl_absent": self.meta.get("sysctl_absent", []),
            "processes": dict(self._history),
            "duration": round(self.now(), 6),
            "left_running": left,
        }
        if self.meta.get("loads"):
            summary["loads"] = self.meta["loads"]
        if self.meta.get("warnings"):
            summary["warnings"] = self.meta["warnings"]
        if log:
            summary["driver_log"] = log
        self._summary = summary
        return summary

    def __enter__(self) -> RealBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
