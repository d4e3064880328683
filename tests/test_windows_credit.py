"""The rule credited for each step of the Windows scenarios is the rule that decided it.

"Decided" is checked here without the crediting code (``WinsockKernel.finish_outcome`` and
``decided()``):

- an **error** is decided by the Windows rule that produced its code: the innermost Windows rule
  running when the error was first raised, or, when the call reports an error stored on the socket
  earlier (a reset, an abort), the Windows rule that stored it -- found by watching the frames;
- a **success** is decided by a Windows rule *without which the result would differ*: the scenario
  is re-run with that rule knocked out during this step only (the shared model's behaviour takes
  its place: the Linux function it overrides, or for a Windows-only branch the Linux default
  written in ``KNOCKOUTS`` below) and the step's result (return value, error, returned address,
  completion time, the socket's local port) must change. When no consulted Windows rule changes
  the result, the credit goes to the call's own Winsock rule.

``test_a_wrong_credit_is_caught`` shows the check fails when a step is credited to a rule that
was consulted but did not decide.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import sim.kernel.winsock as winsock_mod
from sim.engine import SimBackend
from sim.kernel.errors import SysError
from sim.kernel.rules import RULES
from sim.kernel.sockets import Sock
from sim.kernel.stack import DEFAULT_SYSCTLS, Kernel
from sim.kernel.winsock import WinsockKernel
from sim.kernel.winsock_tables import NonPagedPool, WinHandleTable
from sim.scenario.loader import load_file
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = sorted((ROOT / "scenarios" / "windows").glob("*.yaml"))

# rule id -> the method of WinsockKernel that implements it
METHOD = {getattr(getattr(WinsockKernel, n), "rule_id"): n for n in dir(WinsockKernel)
          if str(getattr(getattr(WinsockKernel, n, None), "rule_id", "")).startswith("win.")}
CODE = {fn.__wrapped__.__code__: fn.rule_id
        for cls in (WinsockKernel, WinHandleTable, NonPagedPool) for fn in vars(cls).values()
        if str(getattr(fn, "rule_id", "")).startswith("win.")}
CODE.update({getattr(WinsockKernel, n).__wrapped__.__code__: rid for rid, n in METHOD.items()})
ERR_ATTRS = ("err", "win_reset_err", "win_so_error")

# A Windows call's own rule (the default credit of a success no branch rule decided).
ENTRY = {"socket": "win.socket", "bind": "win.bind", "listen": "win.listen", "connect": ("win.connect", "win.connect_result"),
         "accept": "win.accept", "send": "win.send", "recv": "win.recv", "shutdown": "win.shutdown",
         "closesocket": ("win.closesocket", "win.linger_wait"), "close": "win.closesocket",
         "setsockopt": "win.setsockopt", "getsockopt": "win.getsockopt", "getsockname": "win.getsockname",
         "getpeername": "win.getpeername", "ioctlsocket": "win.ioctlsocket_fionbio",
         "WSAStartup": "win.wsastartup", "WSACleanup": "win.wsacleanup", "fork": "win.thread"}


def _refuse(err: str) -> Callable[..., Any]:
    def ko(self: Any, *a: Any, **kw: Any) -> Any:
        raise SysError(err, "knocked-out")
    return ko


def _linux_port(self: Any, table: Any, sk: Sock, why: str) -> int:
    lo, hi = DEFAULT_SYSCTLS["ip_local_port_range"]
    return next(p for p in range(lo, hi + 1) if not table.owners(p))


def _linux_share(self: Any, table: Any, sk: Sock, port: int) -> None:
    table.check_explicit(sk, port)


def _linux_so_error(self: Any, sk: Sock) -> int:
    from sim.personality.windows import WSA_NUMBERS
    err, sk.err = sk.err, None  # sock_error(): read and clear
    return WSA_NUMBERS.get(err, 0) if err else 0


def _linux_send(self: Any, sk: Sock, total: int) -> int:
    return Kernel.tcp_sendmsg_locked(self, sk, total, True, 0)


def _linux_linger(self: Any, p: Any, sock: int, f: Any, sk: Sock, deadline: float) -> int:
    return Kernel.close_fd(self, p, sock) if p.files.fds.get(sock) is f else 0


def _linux_implicit(self: Any, sk: Sock, saddr: str, daddr: str, dport: int) -> None:
    Kernel.inet_hash_connect(self, sk, saddr, daddr, dport)


def _linux_set_optlen(self: Any, opt: str, value: Any, optlen: int) -> Any:
    from sim.kernel.sockets import check_optlen
    check_optlen(opt, optlen)  # EINVAL below an int or for a negative length
    return value


def _linux_get_optlen(self: Any, opt: str, optlen: int | None) -> int | None:
    if optlen is not None and optlen < 0:
        raise SysError("EINVAL", "knocked-out")
    return None if optlen is None else min(optlen, 4)


# What the host does without a Windows-only branch rule: the shared (Linux) model's default there.
KNOCKOUTS: dict[str, Callable[..., Any]] = {
    "win.abort_after_peer_close": lambda self, sk: None,  # the reset stays a reset
    "win.listen_backlog": lambda self, b: min(b if b >= 0 else 1 << 31, int(self.sysctls["somaxconn"])),
    "win.bind_share": _linux_share,  # Linux's bind conflict rule
    "win.bind_dual_stack": _refuse("EADDRINUSE"),  # a dual-stack wildcard owns its IPv4 side
    "win.bind_exclusive_linger": lambda self, sk, port, lingering: (
        None if sk.reuse else _refuse("EADDRINUSE")(self)),  # TIME_WAIT holds the port without SO_REUSEADDR
    "win.dynamic_port": _linux_port,  # a port of Linux's ephemeral range
    "win.first_bound_listener": lambda self, best, daddr, dport: best[-1],
    "win.connect_retry_after_failure": lambda self, sk: None,
    "win.connect_implicit_bind": _linux_implicit,
    "win.linger_wait": _linux_linger,
    "win.byte_option": lambda self, opt, v: v,  # an int option read whole
    "win.pool_refuses_connection": lambda self, seg: None,
    "win.shutdown_receive_reset": lambda self, sk, why: None,  # SHUT_RD resets nothing
    "win.reuse_exclusive_conflict": lambda self, sk, opt: None,
    "win.send_whole": _linux_send,  # a partial count
    "win.so_error": _linux_so_error,
    "win.connect_refused_retry": lambda self, sk: False,  # refused at the first RST
    "win.sockopt_optlen": _linux_set_optlen,
    "win.getsockopt_optlen": _linux_get_optlen,
    "win.recv_timeout": _refuse("EAGAIN"),  # socket(7): SO_RCVTIMEO runs out with EAGAIN
    "win.send_timeout": _refuse("EAGAIN"),  # socket(7): SO_SNDTIMEO runs out with EAGAIN
    "win.blocking_call_canceled": _refuse("EBADF"),
}


# Rules that only ever raise: their errors are checked by where they were raised, never knocked out.
ALWAYS_FAILS = {"win.wsa_not_initialised", "win.keepcnt_range", "win.fault"}


class MissingKnockout(LookupError):
    """A Windows rule the shared model has no counterpart of, and no entry in KNOCKOUTS."""


def knockout(rid: str) -> Callable[..., Any]:
    """The function that stands in for ``rid`` when it is knocked out: its entry in KNOCKOUTS, or
    the shared (Linux) method the Windows one overrides."""
    if rid in KNOCKOUTS:
        return KNOCKOUTS[rid]
    name = METHOD.get(rid)
    if name is None:
        raise MissingKnockout(f"{rid} is not a method of WinsockKernel: no rule of that name decides a step")
    base = getattr(Kernel, name, None)
    if base is None:
        raise MissingKnockout(
            f"{rid} (WinsockKernel.{name}) is a Windows-only branch rule with no entry in KNOCKOUTS: add "
            f"what the shared (Linux) model does in its place, e.g. KNOCKOUTS[{rid!r}] = _refuse('EAGAIN') "
            "for an error Linux would give, or a function with the same arguments returning Linux's value")
    return base


def missing_knockouts() -> list[str]:
    """Every Windows rule a step can be knocked out of (not a call's own rule, which stays) that has
    neither a KNOCKOUTS entry nor a shared method to fall back on."""
    entries = {r for e in ENTRY.values() for r in (e if isinstance(e, tuple) else (e,))}
    missing = []
    for rid in sorted(set(METHOD) - entries - ALWAYS_FAILS):
        try:
            knockout(rid)
        except MissingKnockout as e:
            missing.append(str(e))
    return missing


def _win_rule_on_stack() -> str | None:
    f = sys._getframe(1)
    while f is not None:
        rid = CODE.get(f.f_code)
        if rid is not None:
            return rid
        f = f.f_back
    return None


class _Probe:
    """Counts system calls across the run's kernels, knocks one rule out during one of them, and
    records where each error came from."""

    def __init__(self, target: int = -1, rid: str | None = None):
        self.n = -1
        self.current = -1  # the invocation running now (a resumed call counts as its own)
        self.target, self.rid = target, rid
        self.results: dict[int, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.origins: dict[int, list[tuple[str, str | None]]] = {}
        self.stored: dict[tuple[int, str], str | None] = {}

    def kernel_class(self) -> type:
        probe = self

        class K(WinsockKernel):
            def syscall(self, proc: str, call: str, args: dict[str, Any], now: float) -> Any:
                probe.n += 1
                probe.calls.append((proc, call))
                prev, probe.current = probe.current, probe.n
                try:
                    out = super().syscall(proc, call, args, now)
                finally:
                    probe.current = prev
                sk = None
                f = self.procs[proc].files.fds.get(args.get("sock")) if proc in self.procs else None
                if f is not None and f.sock is not None:
                    sk = f.sock.lport
                probe.results[probe.n] = sk
                return out

            def wrap_resume(self, fn: Callable[[float], Any], origin: str | None = None) -> Any:
                mine = probe.current

                def fn2(now: float) -> Any:
                    prev, probe.current = probe.current, mine
                    try:
                        return fn(now)
                    finally:
                        probe.current = prev

                return super().wrap_resume(fn2, origin)

        if self.rid is not None:
            name, orig, ko = METHOD[self.rid], getattr(WinsockKernel, METHOD[self.rid]), knockout(self.rid)

            def method(self_: Any, *a: Any, **kw: Any) -> Any:
                if probe.current == probe.target:
                    return ko(self_, *a, **kw)
                return orig(self_, *a, **kw)

            setattr(K, name, method)
        return K


def _signature(r: Any, lport: Any) -> tuple:
    t = None if r.completed_time is None else round(r.completed_time, 3)
    return (r.err, r.ret, str(r.name), r.blocked and r.completed_after is None, t, lport)


def _run(path: Path, probe: _Probe) -> tuple[list, Any]:
    sc = load_file(path)
    with pytest.MonkeyPatch.context() as mp:
        return _run_patched(sc, probe, mp)


def _run_patched(sc: Any, probe: _Probe, monkeypatch: Any) -> tuple[list, Any]:
    monkeypatch.setattr(winsock_mod, "WinsockKernel", probe.kernel_class())
    orig_init, orig_set = SysError.__init__, Sock.__setattr__

    def err_init(self: Any, name: str, rule: str | None = None, *a: Any) -> None:
        probe.origins.setdefault(probe.current, []).append((name, _win_rule_on_stack()))
        orig_init(self, name, rule, *a)

    def sock_set(self: Any, attr: str, value: Any) -> None:
        if attr in ERR_ATTRS and isinstance(value, str):
            probe.stored[(id(self), value)] = _win_rule_on_stack()
        orig_set(self, attr, value)

    monkeypatch.setattr(SysError, "__init__", err_init)
    monkeypatch.setattr(Sock, "__setattr__", sock_set)
    tr = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    calls = [r for r in tr.steps if r.kind == "call" and r.call != "WSAGetLastError"
             and r.err not in ("PROCESS_BUSY", "PROCESS_GONE")]
    return calls, tr


def _canonical(err: str) -> str:
    if err == "WSAEWOULDBLOCK":
        return "EAGAIN"
    return err[3:] if err.startswith("WSAE") else err


def _entry(call: str) -> tuple[str, ...]:
    e = ENTRY.get(call, f"win.{call}")
    return e if isinstance(e, tuple) else (e,)


def credit_violations(path: Path) -> list[tuple]:
    """Every step of ``path`` whose credited rule is not the one that decided it."""
    base = _Probe()
    calls, _ = _run(path, base)
    pairs = _pair(calls, base.calls)
    if pairs is None:
        return [("steps and system calls do not pair up", len(calls), base.n + 1)]
    bad = []
    for inv, r in pairs:
        if r.blocked and r.completed_after is None:
            continue
        if r.err:
            want = _origin(base, inv, _canonical(r.err))
            if want is not None and r.rule != want:
                bad.append((r.index, r.call, r.err, "credited", r.rule, "produced by", want))
            continue
        sig = _signature(r, base.results.get(inv))
        consulted = [rid for rid in dict.fromkeys(r.trail) if rid in METHOD and rid not in _entry(r.call)]
        deciding = [rid for rid in consulted if _changes(path, inv, rid, sig)]
        if deciding and r.rule not in deciding:
            bad.append((r.index, r.call, "credited", r.rule, "decided by", deciding))
        if not deciding and r.rule not in _entry(r.call):
            bad.append((r.index, r.call, "credited", r.rule, "no Windows branch changes it; the call's own rule", _entry(r.call)))
    return bad


ALIASES = {"closesocket": "close", "ioctlsocket": "set_nonblocking"}


def _pair(calls: list, invocations: list[tuple[str, str]]) -> list[tuple[int, Any]] | None:
    """Each call step with the system call it made (a load step's calls in between are skipped)."""
    out, i = [], 0
    for r in calls:
        want = (r.proc, ALIASES.get(r.call, r.call))
        while i < len(invocations) and invocations[i] != want:
            i += 1
        if i == len(invocations):
            return None
        out.append((i, r))
        i += 1
    return out


def _origin(probe: _Probe, inv: int, name: str) -> str | None:
    first = next(((n, rid) for n, rid in probe.origins.get(inv, []) if n == name), None)
    if first is None:
        return None
    stored = [rid for (sk, v), rid in probe.stored.items() if v == name and rid is not None
              and rid not in ("win.connect_result",)]
    return stored[-1] if stored and first[1] in ("win.recv", "win.send") else first[1]


def _changes(path: Path, inv: int, rid: str, sig: tuple) -> bool:
    probe = _Probe(inv, rid)
    calls, _ = _run(path, probe)
    r = next((r for i, r in _pair(calls, probe.calls) or [] if i == inv), None)
    return r is None or _signature(r, probe.results.get(inv)) != sig


def test_every_windows_branch_rule_has_a_knockout():
    """A new Windows-only branch rule needs to say what the shared model does in its place; the
    message names the rule (instead of a KeyError in the middle of a scenario's knock-out run)."""
    missing = missing_knockouts()
    assert not missing, "\n".join(missing)


def test_a_missing_knockout_is_named(monkeypatch):
    monkeypatch.delitem(KNOCKOUTS, "win.recv_timeout")
    missing = missing_knockouts()
    assert len(missing) == 1 and "win.recv_timeout" in missing[0] and "KNOCKOUTS" in missing[0], missing


@pytest.mark.parametrize("path", WINDOWS, ids=[p.stem for p in WINDOWS])
def test_every_windows_step_is_credited_to_its_deciding_rule(path):
    if missing_knockouts():
        pytest.fail("cannot knock out every Windows rule:\n" + "\n".join(missing_knockouts()), pytrace=False)
    bad = credit_violations(path)
    assert not bad, bad


def test_a_wrong_credit_is_caught(monkeypatch):
    """Credit every successful call to the last Windows rule it consulted (a bind to a free port
    then goes to the sharing table, a plain send to the whole-send rule...): the check objects."""
    def last_consulted(self: Any, out: Any) -> Any:
        wins = [r for r in out.trail if r.startswith("win.")]
        if out.err is None and wins:
            out.rule = wins[-1]
        return out

    monkeypatch.setattr(WinsockKernel, "finish_outcome", last_consulted)
    bad = credit_violations(ROOT / "scenarios" / "windows" / "win-wine-bind-states.yaml")
    assert bad


def test_a_wrong_credit_of_a_stored_error_is_caught(monkeypatch):
    """recv's WSAECONNABORTED was produced by the rule that stored the abort; credited to recv's own
    rule (as the crediting once did), the check objects."""
    from sim.kernel.winsock_io import WinsockIO

    monkeypatch.setattr(WinsockIO, "_reset_error",
                        staticmethod(lambda sk, call_rule: SysError(getattr(sk, "win_reset_err", None) or "ECONNRESET",
                                                                    call_rule)))
    bad = credit_violations(ROOT / "scenarios" / "windows" / "win-wine-send-to-closed-peer.yaml")
    assert any(b[1] == "recv" and "win.abort_after_peer_close" in b for b in bad), bad


def test_a_missing_credit_of_a_deciding_branch_is_caught(monkeypatch):
    """With the branch rules' decisions unrecorded, getsockopt(SO_ERROR) goes to getsockopt's own
    rule although SO_ERROR's rule decided it (knocked out, the value differs): the check objects."""
    monkeypatch.setattr(WinsockKernel, "decided", lambda self, rule_id, text: None)
    bad = credit_violations(ROOT / "scenarios" / "windows" / "win-wine-nonblocking-connect-so-error.yaml")
    assert any(b[1] == "getsockopt" and ["win.so_error"] in b for b in bad), bad
