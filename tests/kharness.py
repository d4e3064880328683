"""A minimal driver for the pure kernel model: syscalls plus instant loopback delivery."""

from __future__ import annotations

from typing import Any

from sim.kernel.stack import Kernel, Outcome


class K:
    def __init__(self, procs=("a", "b"), nofile: int = 1024, uid: int = 0, seed: int = 1, **sysctls: Any):
        self.k = Kernel(sysctls, seed=seed)
        self.now = 0.0
        self.timers: list[tuple[float, str, Any, int]] = []
        for p in procs:
            self.k.add_process(p, nofile, uid)
        self.blocked: dict[str, Any] = {}

    def __call__(self, proc: str, call: str, **args: Any) -> Outcome:
        out = self.k.syscall(proc, call, args, self.now)
        self.settle()
        if out.blocked is not None:  # the network settled: the call may complete now
            again = out.blocked.resume(self.now)
            self.settle()
            if again.blocked is None:
                return again
            self.blocked[proc] = again.blocked
        return out

    def ok(self, proc: str, call: str, **args: Any) -> Any:
        out = self(proc, call, **args)
        assert out.err is None and out.blocked is None, (call, args, out)
        return out.ret

    def err(self, proc: str, call: str, **args: Any) -> str | None:
        return self(proc, call, **args).err

    def settle(self) -> None:
        k = self.k
        for _ in range(100000):
            if not k.outbox:
                # between two calls the delayed-ACK timers fire, as the engine has them do
                if not k.tcp_delack_timer(self.now):
                    break
                continue
            seg = k.outbox.pop(0)
            k.deliver(seg, self.now)
        for kind, delay, obj, gen in k.timer_requests:
            self.timers.append((self.now + delay, kind, obj, gen))
        k.timer_requests.clear()

    def resume(self, proc: str) -> Outcome:
        out = self.blocked.pop(proc).resume(self.now)
        if out.blocked is not None:
            self.blocked[proc] = out.blocked
        self.settle()
        return out

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            self.timers.sort(key=lambda t: t[0])
            if not self.timers or self.timers[0][0] > end:
                break
            due, kind, obj, gen = self.timers.pop(0)
            self.now = due
            self.k.timer(kind, obj, gen, due)
            self.settle()
        self.now = end

    def states(self, port: int) -> dict[str, list[str]]:
        rows = self.k.tcp_rows()
        return {"local": sorted(r[4] for r in rows if r[1] == port),
                "remote": sorted(r[4] for r in rows if r[3] == port and r[2] is not None)}

    def server(self, proc: str = "a", port: int = 8080, addr: str = "127.0.0.1", backlog: int = 16,
               reuse: bool = False) -> int:
        fd = self.ok(proc, "socket")
        if reuse:
            self.ok(proc, "setsockopt", sock=fd, opt="SO_REUSEADDR", value=1)
        self.ok(proc, "bind", sock=fd, addr=addr, port=port)
        self.ok(proc, "listen", sock=fd, backlog=backlog)
        return fd

    def pair(self, port: int = 8080, srv_proc: str = "a", cli_proc: str = "b", listener: int | None = None):
        if listener is None:
            listener = self.server(srv_proc, port)
        c = self.ok(cli_proc, "socket")
        self.ok(cli_proc, "connect", sock=c, addr="127.0.0.1", port=port)
        s = self.ok(srv_proc, "accept", sock=listener)
        return listener, s, c
