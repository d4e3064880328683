"""``SimBackend``: one simulated host (kernel + processes) on one ``simpy.Environment``.

Time is SimPy's; the kernel model only ever sees ``now``. Segments travel on a loopback wire with
a fixed latency and kernel timers have fixed durations, so both sit in FIFOs that keep a single
pending SimPy timeout for their head (the way a timer wheel avoids per-timer cost): entries of one
duration expire in insertion order, and a re-armed or cancelled entry is skipped by generation.
"""

from __future__ import annotations

import gc
import weakref
from collections import deque
from typing import Any, Callable

import importlib

import simpy

from ..personality import get as get_personality
from ..kernel.rules import RULES
from ..kernel.stack import Blocked, Kernel, Outcome  # noqa: F401
from ..trace import CallResult, Completion, endpoint_text
from .net import Network
from .wire import WireRecorder

MAX_SETTLE_EVENTS = 1_000_000
GC_GEN0_DURING_LOAD = 50_000  # allocations between two collections of the youngest generation


class FifoTimers:
    """Fixed-duration timers: one deque per duration, one pending SimPy timeout per deque head.

    With ``flat`` (items are tuples of one length) an entry is not an object of its own: its due
    time and the item's fields lie side by side in the lane's deque, one slot each (8 bytes a
    field), the way a timer wheel links its timers without allocating anything per timer. A busy
    host holds hundreds of thousands of TIME_WAIT timers: 40 bytes each instead of 88 for a
    ``(due, kernel, kind, entry, gen)`` tuple and its deque slot.
    """

    def __init__(self, env: simpy.Environment, fire: Callable[[Any], None],
                 compact: Callable[[], bool] = lambda: False, flat: bool = False):
        self.env = env
        self.fire = fire
        self.queues: dict[float, deque[Any]] = {}
        self.wakeups: dict[float, simpy.Event | None] = {}
        self.pending = 0
        self.compact = compact
        self.flat = flat
        self.width = 0  # flat: slots per entry (the due time and the item's fields), set by the first item

    def items(self, key: Any) -> list[Any]:
        """The items queued in lane ``key``, oldest first (None: a bare wake-up)."""
        return [item for _, item in self._entries(self.queues.get(key, ()))]

    def _entries(self, q: Any) -> list[tuple[float, Any]]:
        if not self.flat:
            return list(q)
        w, slots = self.width, list(q)
        return [(slots[i], self._item(slots[i + 1:i + w])) for i in range(0, len(slots), w)]

    @staticmethod
    def _item(fields: Any) -> Any:
        """A flat entry's item from its fields (all None: a bare wake-up)."""
        return None if fields[0] is None else tuple(fields)

    def last(self, key: Any) -> tuple[float, Any] | None:
        """The newest entry of lane ``key`` as (due time, item), or None when the lane is empty."""
        q = self.queues.get(key)
        return self._last(q) if q else None

    def _last(self, q: deque) -> tuple[float, Any]:
        if not self.flat:
            return q[-1]
        w = self.width
        return q[-w], self._item([q[i] for i in range(-w + 1, 0)])

    def _pop_last(self, q: deque) -> None:
        for _ in range(self.width if self.flat else 1):
            q.pop()

    def _push(self, q: deque, when: float, item: Any) -> None:
        if not self.flat:
            q.append((when, item))
            return
        q.append(when)
        q.extend((None,) * (self.width - 1) if item is None else item)

    def add(self, delay: float, item: Any, due: float | None = None, lane: Any = None) -> None:
        """Queue ``item`` to fire after ``delay`` (or at ``due``, which must not decrease per
        lane); the lane is the delay itself unless given (a link direction with a bandwidth)."""
        if self.flat:
            if not self.width:
                self.width = 1 + len(item)
            elif len(item) != self.width - 1:
                raise ValueError(f"a flat timer queue holds items of {self.width - 1} fields, not {len(item)}")
        key = delay if lane is None else lane
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = deque()
            self.wakeups[key] = None
            self.env.process(self._run(key, q))
        when = self.env.now + delay if due is None else due
        if q and self.compact():
            last_due, last = self._last(q)
            if last_due == when:
                when = last_due  # one float for every entry of a timer-wheel bucket
            if _supersedes(item, last):
                self._pop_last(q)
                if last_due == when:  # the new entry fires at that very moment: it wakes in its place
                    self.pending -= 1
                else:  # keep the wake-up the older entry would have caused, not its socket
                    self._push(q, last_due, None)
        self._push(q, when, item)
        self.pending += 1
        ev = self.wakeups[key]
        if ev is not None and not ev.triggered:
            self.wakeups[key] = None
            ev.succeed()

    def _run(self, delay: float, q: deque) -> Any:
        env, flat = self.env, self.flat
        popleft = q.popleft
        while True:
            if not q:
                ev = self.wakeups[delay] = env.event()
                yield ev
                continue
            due = q[0] if flat else q[0][0]
            if due > env.now:
                yield env.timeout(due - env.now)
            while q and (q[0] if flat else q[0][0]) <= env.now:
                if flat:
                    popleft()
                    item = self._item([popleft() for _ in range(self.width - 1)])
                else:
                    item = popleft()[1]
                self.pending -= 1
                self.fire(item)


def _supersedes(item: Any, last: Any) -> bool:
    """Whether timer ``item`` re-arms the timer ``last`` of the same object (a newer generation).

    A kernel timer fires as a no-op when its generation is no longer the object's (``Kernel.timer``
    checks the generation first), so the older entry need not hold its socket (or TIME_WAIT entry)
    until it falls due: it leaves the queue when the new entry falls due at the same moment, and
    otherwise stays as a bare wake-up (``None``), since the engine retries blocked calls whenever a
    timer fires. Nothing observable changes.
    """
    return (type(item) is tuple and type(last) is tuple and len(item) == 4 and len(last) == 4
            and item[0] is last[0] and item[2] is last[2] and item[1] == last[1] and last[3] < item[3])


class SimBackend:
    """The simulator behind the :class:`sim.trace.Backend` contract."""

    name = "sim"

    def __init__(self, seed: int = 0, explain: bool = True, personality: str | None = None,
                 probes: tuple[Callable[[Any], None], ...] = (), fast: bool = True):
        """``fast=False`` keeps the plain engine (a process per connect() deadline, every timer entry
        kept until it falls due): the differential tests run both and compare."""
        self.fast = fast
        self.personality = personality
        self.probes = tuple(probes)  # subscribed to the kernel's events as soon as it exists
        self.seed = seed
        self.env = simpy.Environment()
        self.kernel: Kernel | None = None
        self.latency = 0.0
        self.pending: dict[str, tuple[int, Blocked]] = {}  # proc -> (step index, blocked call)
        # load steps' blocked calls by the wait queue that wakes them: key -> [(seq, call, then)]
        self.waiters: dict[Any, list[tuple[int, Blocked, Callable[[Outcome], None]]]] = {}
        self._wseq = 0
        self.done: list[Completion] = []
        self.segments = 0
        self.wire: FifoTimers | None = None
        self.timers: FifoTimers | None = None
        self.samples: list[dict[str, Any]] = []
        self._waking = False
        self.kernels: dict[str, Kernel] = {}  # host name -> its kernel ("host" with one host)
        self.proc_kernel: dict[str, Kernel] = {}
        self.latencies: dict[int, float] = {}  # id(kernel) -> its loopback's one-way delay
        self.net: Network | None = None  # links between hosts (scenarios with hosts:)

    def _kernel(self, host: dict[str, Any], seed: int) -> Kernel:
        pers = get_personality(self.personality or host.get("personality", "linux"))
        module, cls = pers.kernel_class.split(":")
        kclass = getattr(importlib.import_module(f"sim.kernel.{module}"), cls)
        return kclass(dict(host.get("sysctls", {})), int(host.get("file_max", 2466170)), seed=seed)

    def kernel_of(self, proc: str) -> Kernel:
        """The kernel of the host ``proc`` runs on (a forked child runs where its parent does)."""
        k = self.proc_kernel.get(proc)
        if k is None:
            k = next((k for k in self.kernels.values() if proc in k.procs), self.kernel)
            self.proc_kernel[proc] = k
        return k

    # ------------------------------------------------------------------ set-up
    def start(self, scenario: dict[str, Any]) -> None:
        hosts = scenario.get("hosts") or {"host": scenario.get("host", {})}
        for i, (name, host) in enumerate(hosts.items()):
            k = self._kernel(host, self.seed + i)
            for fn in self.probes:
                k.subscribe(fn)
            self.kernels[name] = k
            self.latencies[id(k)] = float(host.get("latency", 0.0))
        first = next(iter(self.kernels))
        self.kernel = self.kernels[first]
        self.wire_recorder = WireRecorder()
        self.latency = self.latencies[id(self.kernel)]
        for name, p in scenario["processes"].items():
            k = self.kernels[p.get("host") or first]
            proc = k.add_process(name, int(p.get("nofile", 1024)), int(p.get("uid", 0)))
            for cap in p.get("drop_caps") or []:
                proc.cred.permitted.discard(cap)
                proc.cred.effective.discard(cap)
            self.proc_kernel[name] = k
        if scenario.get("hosts"):
            self.net = Network(self, scenario)
        self.wire = FifoTimers(self.env, self._arrive, flat=True)
        self.timers = FifoTimers(self.env, self._timer, compact=self._compact_timers, flat=True)

    def set_clock_start(self, clock_start: float) -> None:
        """Follow a real run's clock: CLOCK_MONOTONIC at its t = 0 (whole milliseconds of it are
        what the kernel's tcp_clock_ms() compares, e.g. for TIME_WAIT reuse)."""
        for k in self.kernels.values():
            k.clock_start = clock_start

    def follow_call(self, call: tuple[float, bool | None] | None) -> None:
        """Following a real run, the real system call of the current step: (when it returned,
        whether it found an address), or None between steps. The kernel reads its clock somewhere in
        that window; where the window decides a rule, the real outcome does (tw_old_enough)."""
        for k in self.kernels.values():
            k.followed = call

    def _compact_timers(self) -> bool:
        """Superseded timers leave the queue only in the fast engine and only when nothing watches
        the kernel: a subscriber sees every timer fire, the no-ops included."""
        return self.fast and not any(k.probes for k in self.kernels.values())

    def now(self) -> float:
        return float(self.env.now)

    # ------------------------------------------------------------------ plumbing
    def _arrive(self, item: tuple[Kernel, Any]) -> None:
        k, seg = item
        self.segments += 1
        self._deliver(k, seg, self.env.now)
        self._flush()

    def _deliver(self, k: Kernel, seg: Any, now: float) -> None:
        self.wire_recorder.sent(seg)  # a call's or a timer's segment, if not known as an answer
        n0 = len(k.outbox)
        k.deliver(seg, now)
        for answer in k.outbox[n0:]:
            self.wire_recorder.sent(answer, seg)

    def _timer(self, item: tuple[Kernel, str, Any, int] | None) -> None:
        if item is None:  # a superseded timer: only the wake-up it would have caused
            self._flush()
            return
        k, kind, obj, gen = item
        if type(obj) is weakref.ref:
            obj = obj()
            if obj is None:  # the socket is gone: its timer cannot find it live, only the wake-up is left
                self._flush()
                return
        k.timer(kind, obj, gen, self.env.now)
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
        now = self.env.now
        busy = True
        while busy:
            busy = False
            for k in self.kernels.values():
                if k.outbox or k.timer_requests:
                    busy = True
                    self._drain_one(k, now)

    def _drain_one(self, k: Kernel, now: float) -> None:
        latency = self.latencies[id(k)]
        while k.outbox or k.timer_requests:
            out, k.outbox = k.outbox, []
            for seg in out:
                if self.net is not None and self.net.send(k, seg):
                    continue  # it left by a link
                if latency == 0.0:
                    self.segments += 1
                    self._deliver(k, seg, now)
                else:
                    self.wire.add(latency, (k, seg))
            if k.timer_requests:
                reqs, k.timer_requests = k.timer_requests, []
                compact = self._compact_timers()
                for kind, delay, obj, gen in reqs:
                    if compact and kind == "syn":
                        obj = weakref.ref(obj)  # the queue does not keep a closed socket alive
                    self.timers.add(delay, (k, kind, obj, gen), due=k.timer_expiry(now, delay))

    def _wake(self) -> None:
        """Retry every blocked call; a call that completes may unblock others, so repeat until quiet."""
        kernels = self.kernels.values()
        if self._waking:
            return
        if not self.pending and not self.waiters:
            for k in kernels:
                k.woken.clear()
            return
        self._waking = True
        try:
            progress = True
            while progress or any(k.woken for k in kernels):
                progress = False
                woken: set = set()
                for k in kernels:
                    woken |= k.woken
                    k.woken = set()
                for proc, (index, blk) in list(self.pending.items()):
                    if blk.key is not None and blk.key not in woken:
                        continue
                    out = blk.resume(self.env.now)
                    if out.blocked is not None:
                        self.pending[proc] = (index, Blocked(proc, blk.call, out.blocked.resume,
                                                             out.blocked.reason, out.blocked.key))
                        if self._busy():  # it made progress: let it cross the wire
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

    def add_waiter(self, blk: Blocked, then: Callable[[Outcome], None], seq: int | None = None) -> None:
        """Park a load step's blocked call on its wait queue; ``then`` gets its outcome."""
        if seq is None:
            seq = self._wseq = self._wseq + 1
        self.waiters.setdefault(blk.key, []).append((seq, blk, then))

    def drop_waiters(self, which: Callable[[Blocked], bool]) -> None:
        for key in list(self.waiters):
            kept = [w for w in self.waiters[key] if not which(w[1])]
            if kept:
                self.waiters[key] = kept
            else:
                del self.waiters[key]

    def _wake_waiters(self, woken: set) -> bool:
        """Retry the parked calls of the woken wait queues (and those with none), oldest first."""
        progress = False
        if self.waiters:
            batch = []
            for key in (*woken, None):
                parked = self.waiters.pop(key, None)
                if parked:
                    batch += parked
            batch.sort(key=lambda w: w[0])
            for seq, blk, cb in batch:
                out = blk.resume(self.env.now)
                if out.blocked is not None:
                    self.add_waiter(Blocked(blk.proc, blk.call, out.blocked.resume,
                                            out.blocked.reason, out.blocked.key), cb, seq)
                else:
                    progress = True
                    cb(out)
            if self._busy():
                self._flush()
        return progress

    def _busy(self) -> bool:
        return any(k.outbox or k.timer_requests for k in self.kernels.values())

    def settle(self) -> None:
        """Deliver every segment in flight (loopback is fast); timers due meanwhile fire too."""
        n = 0
        while self.wire.pending and n < MAX_SETTLE_EVENTS:
            self.env.step()
            n += 1

    @staticmethod
    def _result(out: Outcome) -> CallResult:
        rid = out.rule
        return CallResult(ret=out.ret, err=out.err, blocked=False, rule=rid, name=out.name,
                          cite=RULES[rid].cite if rid in RULES else None,
                          trail=out.trail, facts=out.facts)

    # ------------------------------------------------------------------ the contract
    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        k = self.kernel_of(proc)
        p = k.procs.get(proc)
        if p is None or not p.alive:
            return CallResult(ret=None, err="PROCESS_GONE")  # no call was made: no return value
        if proc in self.pending:
            return CallResult(ret=None, err="PROCESS_BUSY")
        args = dict(args)
        if call != "fork":
            args.pop("as", None)
        out = k.syscall(proc, call, args, self.env.now)
        if out.blocked is not None:
            self.pending[proc] = (index, out.blocked)
        self._flush()
        if out.blocked is not None:
            self.settle()
            # the call may have completed while the network settled
            for i, c in enumerate(self.done):
                if c.index == index and index >= 0:
                    self.done.pop(i)
                    self._step_end()
                    return c.result
            r = CallResult(ret=None, err="BLOCKED", blocked=True)
            r.facts = list(out.facts) + [out.blocked.reason]
            r.trail = list(out.trail)
            self._step_end()
            return r
        self.settle()
        self._step_end()
        return self._result(out)

    def _step_end(self) -> None:
        """Between two steps: pending delayed ACKs fire (the steps of a scenario are further
        apart than the delayed-ACK timeout; the real backend waits for outstanding ACKs too)."""
        fired = [k.tcp_delack_timer(self.env.now) for k in self.kernels.values()]
        if any(fired):
            self._flush()
            self.settle()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:  # SimPy refuses to run until the present moment
            self.env.run(until=self.env.now + seconds)
        self.settle()
        self._step_end()

    def wire_segments(self) -> list[Any]:
        """Segments sent since the last call, in loopback's transmission order (engine/wire.py)."""
        return self.wire_recorder.take()

    def observe(self, obs: dict[str, Any]) -> Any:
        what = obs["what"]
        if what == "tcp_states":  # every host's /proc/net/tcp, side by side
            port = obs["port"]
            rows = [r for k in self.kernels.values() for r in k.tcp_rows()]
            return {"local": sorted(r[4] for r in rows if r[1] == port),
                    "remote": sorted(r[4] for r in rows if r[3] == port and r[2] is not None)}
        if what == "sockstat":
            per = [k.sockstat() for k in self.kernels.values()]
            return {key: sum(s[key] for s in per) for key in per[0]}
        k = self.kernel_of(obs["proc"])
        p = k.procs.get(obs["proc"])
        if p is None or not p.alive:
            return "PROCESS_GONE"  # never created (a failed fork) or exited
        if what == "fds":
            return k.socket_fds(obs["proc"])
        if what == "queues":
            return k.queues(obs["proc"], obs["sock"])
        if what == "tcp_info":
            p = k.procs.get(obs["proc"])
            if p is None or not p.alive:
                return "PROCESS_GONE"
            if obs["proc"] in self.pending:
                return "PROCESS_BUSY"
            return k.tcp_info(obs["proc"], obs["sock"], list(obs["fields"]))
        raise ValueError(what)

    def sysctl(self, values: dict[str, Any]) -> str | None:
        for k in self.kernels.values():  # a sysctl step names no host: every host takes it
            k.set_sysctls(values, self.env.now)
        self._flush()
        return None

    def completions(self) -> list[Completion]:
        done, self.done = self.done, []
        return done

    def endpoint_states(self) -> dict[tuple[str, str], str]:
        """(local, remote) -> TCP state of every connected socket (what /proc/net/tcp lists)."""
        return {(endpoint_text((la, lp)), endpoint_text((ra, rp))): st
                for k in self.kernels.values() for la, lp, ra, rp, st in k.tcp_rows() if ra is not None}

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        from .load import WIRE_LIMIT, run_load

        rec = self.wire_recorder
        rec.limit, rec.dropped = len(rec.nodes) + WIRE_LIMIT, 0
        # a load step allocates and frees millions of small objects while holding hundreds of
        # thousands (TIME_WAIT entries, timer entries): the collector's youngest generation is
        # collected every 50,000 allocations instead of 700 (about 15 % of the step's time)
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], GC_GEN0_DURING_LOAD), *threshold[1:])
        try:
            stats = run_load(self, spec)
        finally:
            rec.limit = None
            gc.set_threshold(*threshold)
        stats["model"]["wire_segments_not_recorded"] = rec.dropped
        return stats

    def close(self) -> dict[str, Any]:
        out = {"time": self.env.now, "segments": self.segments, **self._summary(self.kernel)}
        if len(self.kernels) > 1:
            per = {name: self._summary(k) for name, k in self.kernels.items()}
            out = {**out, "hosts": per}
            # totals over the hosts; a peak is the sum of the hosts' own peaks (exact when one
            # host holds them, as the side that closes first holds TIME_WAIT)
            for key in ("time_wait", "time_wait_peak", "tw_overflows", "tw_recycled", "ports_in_use",
                        "tcp_mem_bytes", "tcp_mem_peak_bytes"):
                out[key] = sum(h[key] for h in per.values())
            out["sockstat"] = {key: sum(h["sockstat"][key] for h in per.values()) for key in out["sockstat"]}
            out["mib"] = {m: sum(h["mib"].get(m, 0) for h in per.values())
                          for m in sorted({m for h in per.values() for m in h["mib"]})}
            out["processes"] = {n: v for h in per.values() for n, v in h["processes"].items()}
            out["tcp"] = [r for h in per.values() for r in h["tcp"]]
        out["segments"] = self.segments
        out["rules_hit"] = sorted(set().union(*(k.rule_hits() for k in self.kernels.values())))
        return out

    @staticmethod
    def _summary(k: Kernel) -> dict[str, Any]:
        return {
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
            "tcp": [list(r) for r in k.iter_tcp_rows()],
            **({"windows": k.windows_view()} if hasattr(k, "windows_view") else {}),
        }
