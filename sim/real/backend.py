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
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Any

from sim.trace import BLOCKED, PROCESS_BUSY, PROCESS_GONE, CallResult, Completion

from . import capture, driver
from .common import (
    ABSENT_DEFAULTS, BLOCK_WAIT, DRIVER_PATH, EHASH_PATH, EXIT_WAIT, FILE_MAX_PATH,
    HOST_GLOBAL_SLACK, HOST_SYSCTLS, KILL_WAIT, LOAD_SLACK, NETNS_SYSCTLS, PENDING_SETTLE,
    QUIESCE_MAX, REPLY_TIMEOUT, RealBackendError, SETTLE, START_TIMEOUT, _ACK_WAIT_STATES, _Proc,
    _read_text, _same_value, _sysctl_text,
)
from .channels import ProcessChannels
from .faults import Faults, RealFault
from .observe import Observations

__all__ = ["RealBackend", "RealBackendError", "RealFault"]

_LIVE: weakref.WeakSet[RealBackend] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        try:
            backend.close()
        except Exception:
            pass


class RealBackend(ProcessChannels, Observations, Faults):
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
        self._capture: capture.Capture | None = None

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
        deaths = self._open_deaths()
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-I", "-S", DRIVER_PATH, "--zygote", str(theirs.fileno()), str(deaths)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
                pass_fds=(theirs.fileno(), deaths), start_new_session=True, close_fds=True)
        finally:
            theirs.close()
            os.close(deaths)
        self._zchan = ours
        hello, _ = self._zrecv(START_TIMEOUT)
        if not hello.get("ready"):
            raise RealFault(f"the network namespace could not be made: {hello.get('error', hello)}")
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
            self._spawn(name, int(spec.get("nofile", 1024)), int(spec.get("uid", 0)),
                        list(spec.get("drop_caps") or []))
        self._t0 = time.monotonic()
        try:
            self._capture = capture.Capture.open(self._zpid, self._t0)
            self.meta["wire"] = "captured on lo (AF_PACKET)"
        except capture.CaptureUnavailable as exc:
            self.meta["wire"] = f"not captured: {exc}"

    def endpoint_states(self) -> dict[tuple[str, str], str]:
        return capture.endpoint_states(self._zpid) if self._zpid is not None else {}

    def wire_segments(self) -> list[Any]:
        """The segments loopback carried since the last call (see :mod:`sim.real.capture`)."""
        return self._capture.drain() if self._capture is not None else []

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

    def now(self) -> float:
        return time.monotonic() - self._t0

    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        self._step_now = index
        self._fault_if_dead(index)
        p = self._procs.get(proc)
        if p is None or not self._alive(p):
            return CallResult(ret=None, err=PROCESS_GONE)
        if call == "exit":
            p.asked_to_end = True
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
            self._fault_if_dead(index)
            return CallResult(ret=None, err=PROCESS_GONE)
        result = self._finish(p, call, args, msg, fds)
        self._settle(call)
        self._fault_if_dead(index)
        return result

    def _finish(self, p: _Proc, call: str, args: dict[str, Any], msg: dict[str, Any],
                fds: list[int]) -> CallResult:
        """Turn a reply into a CallResult; adopt a forked process; see an exited one out."""
        result = CallResult(ret=msg.get("ret"), err=msg.get("err"), name=msg.get("name"))
        if isinstance(msg.get("t_in"), (int, float)):
            result.at = max(0.0, float(msg["t_in"]) - self._t0)  # the driver's clock is ours
            if isinstance(msg.get("t"), (int, float)):
                result.until = max(result.at, float(msg["t"]) - self._t0)
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
        if call not in ("socket", "setsockopt", "getsockopt", "bind", "getsockname", "getpeername",
                        "poll", "seteuid", "capset", "set_nonblocking", "dup", "fork"):
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
        self._fault_if_dead()
        if seconds > 0:
            self._watch_sleep(seconds)

    # ------------------------------------------------------------------ load

    def load(self, index: int, spec: dict[str, Any], server_side: RealBackend | None = None) -> dict[str, Any]:
        """Run a load step: the client's connections from this namespace; the accepting process
        in this namespace too, or in ``server_side``'s (another host's, joined by a link)."""
        srv = server_side if server_side is not None else self
        self._step_now = index
        self._fault_if_dead(index)
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
            server = srv._procs.get(str(spec["accept_proc"]))
            if server is None or not srv._alive(server):
                return refuse(PROCESS_GONE)
            if server.pending is not None:
                srv._collect(server)
                if server.pending is not None:
                    return refuse(PROCESS_BUSY)
            if not srv._send_to(server, {"op": "load_server_start",
                                          "listener": int(spec["listener"]),
                                          "close_first": spec.get("close_first", "client")}):
                return refuse(PROCESS_GONE)
            if srv._wait_reply(server, REPLY_TIMEOUT)[0] != "ok":
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
                    raise RealFault(f"step {index} (load) did not finish within "
                                    f"{float(spec['duration']) * 1.25 + LOAD_SLACK:g} s: its client "
                                    f"process {client.name!r} was stopped", proc=client.name, step=index,
                                    how="timed out")
                self._fault_if_dead(index)
                refuse(PROCESS_GONE)
        finally:
            if server is not None and not server.gone:
                time.sleep(self.pending_settle)  # connections still in flight
                if srv._send_to(server, {"op": "load_server_stop"}):
                    status, msg, _ = srv._wait_reply(server, REPLY_TIMEOUT)
                    if status == "ok":
                        stats["accepted"] = int(msg.get("accepted", 0))
                        if msg.get("errors"):
                            extra["server_errors"] = msg["errors"]
            self.meta.setdefault("loads", {})[str(index)] = extra
            self._settle("load")
            if srv is not self:
                srv._settle("load")
        return stats

    # ------------------------------------------------------------------ teardown

    def pids(self) -> dict[str, int]:
        """Every scenario process started so far (name -> pid), the exited ones included."""
        return dict(self._history)

    @property
    def zygote_pid(self) -> int | None:
        return self._zpid

    def close(self) -> dict[str, Any]:
        if self._closed:
            return self._summary or {}
        self._closed = True
        left: list[int] = []
        try:
            procs = list(self._procs.values())
            for p in procs:
                p.asked_to_end = True
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
            # The zygote is their subreaper and reaps them: let it finish before it goes, or a
            # zombie passes to an init that may reap it late (its /proc entry outliving close())
            self._await_reaped([p.pid for p in procs if p.pid not in left], deadline)
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
            if self._capture is not None:
                self._capture.close()
            if self._zchan is not None:
                self._zchan.close()
                self._zchan = None
            self._close_deaths()
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
            # CLOCK_MONOTONIC at t = 0 (the kernel's tcp_clock_ms() counts on this clock)
            "clock_start": self._t0,
            "left_running": left,
            "wire": self.meta.get("wire", "not captured: the namespace was not made"),
        }
        if self.meta.get("loads"):
            summary["loads"] = self.meta["loads"]
        if self.meta.get("qt"):
            summary["qt"] = self.meta["qt"]
        if self.meta.get("warnings"):
            summary["warnings"] = self.meta["warnings"]
        if log:
            summary["driver_log"] = log
        self._summary = summary
        return summary

    # ------------------------------------------------------------------ Qt (sim/real/qt_control.py)

    def qt_layer(self) -> Any:
        """Real Qt for this scenario's Qt steps and timers (one event loop per process)."""
        from .qt_control import RealQt

        if getattr(self, "_qt", None) is None:
            self._qt = RealQt(self)
        return self._qt

    def qt_exchange(self, msgs: dict[str, dict[str, Any]], timeout: float) -> dict[str, dict[str, Any]]:
        """Send one Qt command to each named process at once, then collect every reply within
        ``timeout``. Processes that are gone or still blocked in a call are left out."""
        sent = []
        for name, msg in msgs.items():
            p = self._procs.get(name)
            if p is None or not self._alive(p):
                continue
            if p.pending is not None:
                self._collect(p)
                if p.pending is not None:
                    continue
            if self._send_to(p, msg):
                sent.append(p)
        replies: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        for p in sent:
            status, msg, fds = self._wait_reply(p, max(0.0, deadline - time.monotonic()))
            for fd in fds:
                os.close(fd)
            if status == "timeout":
                raise RealBackendError(f"process {p.name!r} did not answer a Qt command within {timeout:.1f} s")
            if status == "ok":
                if "qt" in msg:
                    self.meta["qt"] = {"PySide6": msg["qt"][0], "qVersion": msg["qt"][1]}
                replies[p.name] = msg
        return replies

    def __enter__(self) -> RealBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
