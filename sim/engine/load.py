"""Load steps: a connection pattern repeated at a fixed rate, driven as SimPy processes.

The client process opens a socket, optionally sets SO_REUSEADDR and binds, connects, and closes
(or waits for the server's FIN when the server closes first). The server process, if given,
accepts each connection and closes it when the client has (or at once when it closes first).
Every call goes through the same kernel syscalls as a scenario step.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..kernel.stack import Blocked, Outcome
from .lifecycle import OneCallLifecycles

if TYPE_CHECKING:
    from .host import SimBackend

CONNECT_TIMEOUT = 2.0  # the real backend bounds each connect() at 2 s; so does the model

# TCP state numbers as include/net/tcp_states.h defines them (the ABI /proc/net/tcp shows), and
# the load samples' column for each; TIME_WAIT is counted from the TIME_WAIT table, LISTEN and
# CLOSE are not connections
TCP_STATE_COLUMNS = {2: "syn_sent", 3: "syn_recv", 1: "established", 4: "fin_wait1", 5: "fin_wait2",
                     8: "close_wait", 11: "closing", 9: "last_ack"}
SAMPLES = 2000  # samples per load step (one after every n-th connection attempt)
# segments of a load step the trace's wire keeps (the first ones, in transmission order); the
# others are counted (a step of a million connections would otherwise hold 7 million segments)
WIRE_LIMIT = 10_000
SAMPLE_COLUMNS = ["t", "time_wait", "ports_in_use", *TCP_STATE_COLUMNS.values()]


def state_counts(kernels: list[Any]) -> list[int]:
    """Connections per TCP state (other than TIME_WAIT) over every kernel's live sockets."""
    counts = dict.fromkeys(TCP_STATE_COLUMNS.values(), 0)
    for k in kernels:
        for sk in k.socks:
            col = TCP_STATE_COLUMNS.get(int(sk.tcp_state))
            if col is not None:
                counts[col] += 1
    return list(counts.values())


def run_load(b: SimBackend, spec: dict[str, Any]) -> dict[str, Any]:
    env = b.env
    client, server = spec["proc"], spec.get("accept_proc")
    k = b.kernel_of(client)  # the client's host: its ports, its TIME_WAIT entries when it closes first
    kernels = list(b.kernels.values())
    rate, duration = float(spec["rate"]), float(spec["duration"])
    start = env.now
    n_total = int(round(rate * duration))
    stats: dict[str, Any] = {"attempts": 0, "ok": 0, "errors": {}, "first_error": None,
                             "first_error_at": None, "accepted": 0}
    state = {"stop": False, "accepting": True}
    samples: list[tuple[float, int, int]] = []
    deadlines = Deadlines(b)

    def sys(proc: str, call: str, then: Callable[[Outcome], None] | None = None,
            timeout_at: float | None = None, **args: Any) -> Outcome:
        """One syscall; a blocked call with ``then`` is queued on its socket's wait queue before
        the network runs, so its wakeup cannot be missed."""
        out = b.kernel_of(proc).syscall(proc, call, args, env.now)
        blk = out.blocked
        if blk is not None and then is not None:
            if timeout_at is not None:
                inner = blk

                def resume_or_timeout(now: float, inner: Blocked = inner) -> Outcome:
                    if now >= timeout_at:
                        return Outcome(ret=-1, err="ETIMEDOUT")
                    return inner.resume(now)

                blk = Blocked(proc, call, resume_or_timeout, inner.reason, inner.key)
                if b.fast:
                    then = _disarming(then, deadlines.arm(timeout_at, inner.key))
                else:
                    env.process(_poke(env, timeout_at, b, inner.key))
            b.add_waiter(Blocked(proc, call, blk.resume, blk.reason, blk.key), then)
            b._flush()
            return out
        b._flush()
        if then is not None:
            then(out)
        return out

    def quiet() -> bool:
        """Whether the engine would do nothing around the calls of an attempt: nothing watches the
        kernels, nothing is in flight, and no blocked call is retried on every wake-up."""
        return (not b._busy() and None not in b.waiters and not any(x.probes for x in kernels)
                and all(blk.key is not None for _, blk in b.pending.values()))

    def error(name: str) -> None:
        stats["errors"][name] = stats["errors"].get(name, 0) + 1
        if stats["first_error"] is None:
            stats["first_error"] = name
            stats["first_error_at"] = round(env.now - start, 6)
            if spec.get("stop_on_error"):
                state["stop"] = True

    def close_when_eof(proc: str, fd: int) -> None:
        def after_recv(o: Outcome) -> None:
            if o.err is None and o.ret and o.ret > 0:
                sys(proc, "recv", then=after_recv, sock=fd, bytes=65536)
                return
            sys(proc, "close", sock=fd)
        sys(proc, "recv", then=after_recv, sock=fd, bytes=65536)

    refused = [False]  # an attempt of this step was refused from a remembered fruitless port search
    addr, port = spec["addr"], spec["port"]
    replayable = b.fast and not spec.get("bind_addr")
    fast = OneCallLifecycles(b, spec, k) if OneCallLifecycles.eligible(b, spec, k) else None

    def one_connection() -> None:
        stats["attempts"] += 1
        if refused[0] and quiet() and k.connect_known_to_fail(client, addr, port, env.now):
            # the calls would take the very path of that attempt: same outcome, same rules,
            # nothing else changed (Kernel.connect_known_to_fail checks the state it depends on)
            error("EADDRNOTAVAIL")
            return
        if fast is not None and fast.idle(quiet):
            if fast.replay():
                stats["ok"] += 1
                stats["accepted"] += 1
                return
            fast.before(stats)
        general_connection()
        if fast is not None:
            fast.after(stats, quiet)

    def general_connection() -> None:
        o = sys(client, "socket")
        if o.err:
            error(o.err)
            return
        fd = o.ret
        if fast is not None:
            fast.csk = k.lifecycle_sock(client, fd)
        if spec.get("reuseaddr"):
            sys(client, "setsockopt", sock=fd, opt="SO_REUSEADDR", value=1)
        if spec.get("bind_addr"):
            o = sys(client, "bind", sock=fd, addr=spec["bind_addr"], port=0)
            if o.err:
                error(o.err)
                sys(client, "close", sock=fd)
                return

        spared = k.port_searches_spared

        def after_connect(o: Outcome) -> None:
            if o.err:
                if o.err == "EADDRNOTAVAIL" and replayable and k.port_searches_spared == spared + 1:
                    refused[0] = True
                error(o.err)
                sys(client, "close", sock=fd)
                return
            stats["ok"] += 1
            if spec.get("close_first", "client") == "client":
                sys(client, "close", sock=fd)
            else:
                close_when_eof(client, fd)

        sys(client, "connect", then=after_connect, timeout_at=env.now + CONNECT_TIMEOUT,
            sock=fd, addr=spec["addr"], port=spec["port"])

    def acceptor() -> Any:
        listener = spec["listener"]

        def accept_loop(o: Outcome | None = None) -> None:
            # a loop, not recursion: a full accept queue is drained without growing the stack;
            # a blocked accept() re-enters here from its wait queue
            while state["accepting"]:
                if o is None:
                    o = sys(server, "accept", then=accept_loop, sock=listener)
                    if o.blocked is not None:
                        return
                if o.err is not None:
                    return
                stats["accepted"] += 1
                fd = o.ret
                o = None
                if fast is not None:
                    fast.ssk = b.kernel_of(server).lifecycle_sock(server, fd)
                if spec.get("close_first", "client") == "server":
                    sys(server, "close", sock=fd)
                else:
                    close_when_eof(server, fd)

        accept_loop()
        yield env.timeout(0)

    every = max(1, n_total // SAMPLES)

    def generator() -> Any:
        for i in range(n_total):
            due = start + i / rate
            if due > env.now:
                yield env.timeout(due - env.now)
            if state["stop"]:
                break
            one_connection()
            if i % every == 0:
                samples.append((round(env.now - start, 6), sum(x.tw.count for x in kernels),
                                len(k.bhash.buckets), *state_counts(kernels)))

    if server is not None:
        env.process(acceptor())
    proc = env.process(generator())
    env.run(until=proc)
    env.run(until=max(env.now, start + duration))
    b.settle()
    state["accepting"] = False
    # abandon the acceptor's pending accept so it does not outlive the step
    b.drop_waiters(lambda blk: blk.proc == server and blk.call == "accept")
    # what only the model can know (not compared with the real kernel)
    stats["model"] = {"time_wait_peak": sum(x.tw.peak for x in kernels), "samples": samples,
                      "columns": SAMPLE_COLUMNS}
    return stats


def _poke(env: Any, at: float, b: SimBackend, key: Any) -> Any:
    """The plain engine: a process per connect() deadline that wakes the socket's waiters."""
    yield env.timeout(max(0.0, at - env.now))
    for k in b.kernels.values():
        k.woken.add(key)
    b._wake()


class Deadlines:
    """The connect() deadlines of one load step: one FIFO and one pending SimPy timeout for its head.

    Every deadline is CONNECT_TIMEOUT after its connect(), so they fall due in the order they were
    armed. At its deadline a connect() still waiting has its socket's waiters woken, so that the
    timeout is reported; a connect() that finished before disarms its deadline, which then holds
    no socket and wakes nobody (waking a finished connect's socket would only retry calls that
    already had their wake-up).
    """

    def __init__(self, b: SimBackend):
        self.b = b
        self.q: deque[list[Any]] = deque()  # [due, socket or None once disarmed]
        self.running = False

    def arm(self, due: float, key: Any) -> list[Any]:
        entry = [due, key]
        self.q.append(entry)
        if not self.running:
            self.running = True
            self.b.env.process(self._run())
        return entry

    def _run(self) -> Any:
        env, q = self.b.env, self.q
        while q:
            due = q[0][0]
            if due > env.now:
                yield env.timeout(due - env.now)
            while q and q[0][0] <= env.now:
                key = q.popleft()[1]
                if key is not None:
                    for k in self.b.kernels.values():
                        k.woken.add(key)
                    self.b._wake()
        self.running = False


def _disarming(then: Callable[[Outcome], None], entry: list[Any]) -> Callable[[Outcome], None]:
    def done(o: Outcome) -> None:
        entry[1] = None
        then(o)
    return done

