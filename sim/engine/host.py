"""``SimBackend``: one simulated host (kernel + processes) on one ``simpy.Environment``.

Time is SimPy's; the kernel model only ever sees ``now``. Segments travel on a loopback wire with
a fixed latency and kernel timers have fixed durations, so both sit in FIFOs that keep a single
pending SimPy timeout for their head (the way a timer wheel avoids per-timer cost): entries of one
duration expire in insertion order, and a re-armed or cancelled entry is skipped by generation.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import importlib

import simpy

from ..personality import get as get_personality
from ..kernel.rules import RULES
from ..kernel.stack import Blocked, Kernel, Outcome  # noqa: F401
from ..trace import CallResult, Completion, endpoint_text

MAX_SETTLE_EVENTS = 1_000_000


class FifoTimers:
    """Fixed-duration timers: one deque per duration, one pending SimPy timeout per deque head."""

    def __init__(self, env: simpy.Environment, fire: Callable[[Any], None]):
        self.env = env
        self.fire = fire
        self.queues: dict[float, deque[tuple[float, Any]]] = {}
        self.wakeups: dict[float, simpy.Event | None] = {}
        self.pending = 0

    def add(self, delay: float, item: Any, due: float | None = None) -> None:
        """Queue ``item`` to fire after ``delay`` (or at ``due``, which must not decrease per delay)."""
        q = self.queues.get(delay)
        if q is None:
            q = self.queues[delay] = deque()
            self.wakeups[delay] = None
            self.env.process(self._run(delay, q))
        q.append((self.env.now + delay if due is None else due, item))
        self.pending += 1
        ev = self.wakeups[delay]
        if ev is not None and not ev.triggered:
            self.wakeups[delay] = None
            ev.succeed()

    def _run(self, delay: float, q: deque) -> Any:
        env = self.env
        while True:
            if not q:
                ev = self.wakeups[delay] = env.event()
                yield ev
                continue
            due = q[0][0]
            if due > env.now:
                yield env.timeout(due - env.now)
            while q and q[0][0] <= env.now:
                _, item = q.popleft()
                self.pending -= 1
                self.fire(item)


class SimBackend:
    """The simulator behind the :class:`sim.trace.Backend` contract."""

    name = "sim"

    def __init__(self, seed: int = 0, explain: bool = True, personality: str | None = None,
                 probes: tuple[Callable[[Any], None], ...] = ()):
        self.personality = personality
        self.probes = tuple(probes)  # subscribed to the kernel's events as soon as it exists
        self.seed = seed
        self.env = simpy.Environment()
        self.kernel: Kernel | None = None
        self.latency = 0.0
        self.pending: dict[str, tuple[int, Blocked]] = {}  # proc -> (step index, blocked call)
        self.waiters: list[tuple[Blocked, Callable[[Outcome], None]]] = []
        self.done: list[Completion] = []
        self.segments = 0
        self.wire: FifoTimers | None = None
        self.timers: FifoTimers | None = None
        self.samples: list[dict[str, Any]] = []
        self._waking = False

    # ------------------------------------------------------------------ set-up
    def start(self, scenario: dict[str, Any]) -> None:
        host = scenario.get("host", {})
        sysctls = dict(host.get("sysctls", {}))
        self.latency = float(host.get("latency", self.latency))
        pers = get_personality(self.personality or host.get("personality", "linux"))
        module, cls = pers.kernel_class.split(":")
        kclass = getattr(importlib.import_module(f"sim.kernel.{module}"), cls)
        self.kernel = kclass(sysctls, int(host.get("file_max", 2466170)), seed=self.seed)
        for fn in self.probes:
            self.kernel.subscribe(fn)
        for name, p in scenario["processes"].items():
            self.kernel.add_process(name, int(p.get("nofile", 1024)), int(p.get("uid", 0)))
        self.wire = FifoTimers(self.env, self._arrive)
        self.timers = FifoTimers(self.env, self._timer)

    def now(self) -> float:
        return float(self.env.now)

    # ------------------------------------------------------------------ plumbing
    def _arrive(self, seg: Any) -> None:
        self.segments += 1
        self.kernel.deliver(seg, self.env.now)
        self._flush()

    def _timer(self, item: tuple[str, Any, int]) -> None:
        kind, obj, gen = item
        self.kernel.timer(kind, obj, gen, self.env.now)
        self._flush()

    def _flush(self) -> None:
        self._drain()
        self._wake()

    def _drain(self) -> None:
        """Put the kernel's output on the wire and its timers on the wheel.

        With zero latency (the default) loopback is synchronous, as it is in Linux, where a
        segment sent on ``lo`` is processed in the sender's softirq before the call returns:
        segments are delivered here, in order, with no simulated delay and no SimPy event.
        """
        k = self.kernel
        now = self.env.now
        while k.outbox or k.timer_requests:
            out, k.outbox = k.outbox, []
            if self.latency == 0.0:
                self.segments += len(out)
                for seg in out:
                    k.deliver(seg, now)
            else:
                for seg in out:
                    self.wire.add(self.latency, seg)
            if k.timer_requests:
                reqs, k.timer_requests = k.timer_requests, []
                for kind, delay, obj, gen in reqs:
                    self.timers.add(delay, (kind, obj, gen), due=k.timer_expiry(now, delay))

    def _wake(self) -> None:
        """Retry every blocked call; a call that completes may unblock others, so repeat until quiet."""
        k = self.kernel
        if self._waking:
            return
        if not self.pending and not self.waiters:
            k.woken.clear()
            return
        self._waking = True
        try:
            progress = True
            while progress or k.woken:
                progress = False
                woken, k.woken = k.woken, set()
                for proc, (index, blk) in list(self.pending.items()):
                    if blk.key is not None and blk.key not in woken:
                        continue
                    out = blk.resume(self.env.now)
                    if out.blocked is not None:
                        self.pending[proc] = (index, Blocked(proc, blk.call, out.blocked.resume,
                                                             out.blocked.reason, out.blocked.key))
                        if k.outbox or k.timer_requests:  # it made progress: let it cross the wire
                            self._drain()
                            progress = True
                        continue
                    del self.pending[proc]
                    self.done.append(Completion(index, self._result(out), self.env.now))
                    self._flush()
                    progress = True
                progress = self._wake_waiters(woken) or progress
        finally:
            self._waking = False

    def _wake_waiters(self, woken: set) -> bool:
        progress = False
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for blk, cb in waiters:
                if blk.key is not None and blk.key not in woken:
                    self.waiters.append((blk, cb))
                    continue
                out = blk.resume(self.env.now)
                if out.blocked is not None:
                    self.waiters.append((Blocked(blk.proc, blk.call, out.blocked.resume,
                                                 out.blocked.reason, out.blocked.key), cb))
                else:
                    progress = True
                    cb(out)
            if self.kernel.outbox or self.kernel.timer_requests:
                self._flush()
        return progress

    def settle(self) -> None:
        """Deliver every segment in flight (loopback is fast); timers due meanwhile fire too."""
        n = 0
        while self.wire.pending and n < MAX_SETTLE_EVENTS:
            self.env.step()
            n += 1

    @staticmethod
    def _result(out: Outcome) -> CallResult:
        rid = out.rule
        return CallResult(ret=out.ret, err=out.err, blocked=False, rule=rid,
                          cite=RULES[rid].cite if rid in RULES else None,
                          trail=out.trail, facts=out.facts)

    # ------------------------------------------------------------------ the contract
    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        p = self.kernel.procs.get(proc)
        if p is None or not p.alive:
            return CallResult(ret=None, err="PROCESS_GONE")  # no call was made: no return value
        if proc in self.pending:
            return CallResult(ret=None, err="PROCESS_BUSY")
        args = dict(args)
        if call != "fork":
            args.pop("as", None)
        out = self.kernel.syscall(proc, call, args, self.env.now)
        if out.blocked is not None:
            self.pending[proc] = (index, out.blocked)
        self._flush()
        if out.blocked is not None:
            self.settle()
            # the call may have completed while the network settled
            for i, c in enumerate(self.done):
                if c.index == index:
                    self.done.pop(i)
                    return c.result
            r = CallResult(ret=None, err="BLOCKED", blocked=True)
            r.facts = list(out.facts) + [out.blocked.reason]
            r.trail = list(out.trail)
            return r
        self.settle()
        return self._result(out)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:  # SimPy refuses to run until the present moment
            self.env.run(until=self.env.now + seconds)
        self.settle()

    def observe(self, obs: dict[str, Any]) -> Any:
        k = self.kernel
        what = obs["what"]
        if what == "tcp_states":
            port = obs["port"]
            rows = k.tcp_rows()
            return {"local": sorted(r[4] for r in rows if r[1] == port),
                    "remote": sorted(r[4] for r in rows if r[3] == port and r[2] is not None)}
        if what in ("fds", "queues"):
            p = k.procs.get(obs["proc"])
            if p is None or not p.alive:
                return "PROCESS_GONE"  # never created (a failed fork) or exited
        if what == "fds":
            return k.socket_fds(obs["proc"])
        if what == "sockstat":
            return k.sockstat()
        if what == "queues":
            return k.queues(obs["proc"], obs["sock"])
        raise ValueError(what)

    def completions(self) -> list[Completion]:
        done, self.done = self.done, []
        return done

    def endpoint_states(self) -> dict[tuple[str, str], str]:
        """(local, remote) -> TCP state of every connected socket (what /proc/net/tcp lists)."""
        return {(endpoint_text((la, lp)), endpoint_text((ra, rp))): st
                for la, lp, ra, rp, st in self.kernel.tcp_rows() if ra is not None}

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        from .load import run_load

        return run_load(self, spec)

    def close(self) -> dict[str, Any]:
        k = self.kernel
        return {
            "time": self.env.now,
            "segments": self.segments,
            "sockstat": k.sockstat(),
            "time_wait": k.tw.count,
            "time_wait_peak": k.tw.peak,
            "tw_overflows": k.tw.overflows,
            "tw_recycled": k.tw.recycled,
            "ports_in_use": len(k.bhash.buckets),
            "tcp_mem_bytes": k.pool.bytes,
            "tcp_mem_peak_bytes": k.pool.peak,
            "mib": dict(k.mib),
            "processes": {n: {"fds": p.files.sockets(), "alive": p.alive} for n, p in k.procs.items()},
            "tcp": [list(r) for r in k.tcp_rows()],
            **({"windows": k.windows_view()} if hasattr(k, "windows_view") else {}),
            "rules_hit": sorted(k.rule_hits()),
        }
