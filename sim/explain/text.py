"""What explanations say: where an outcome comes from, the texts of a call and its result, and the
rendering of an :class:`Explanation` as text."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..trace import StepRecord


MAX_WHATIFS = 10


# Where an outcome that no kernel rule decided comes from (observations, time, the runner).
SOURCES: dict[str, tuple[str, str]] = {
    "observe:tcp_states": ("observation", "/proc/net/tcp: tcp4_seq_show() in net/ipv4/tcp_ipv4.c "
                           "(listeners, established sockets, request and TIME_WAIT minisocks)"),
    "observe:sockstat": ("observation", "/proc/net/sockstat: sockstat_seq_show() in net/ipv4/proc.c "
                         "(inuse, orphan, tw)"),
    "observe:fds": ("observation", "/proc/PID/fd: proc_readfd() in fs/proc/fd.c, one entry per open fd"),
    "observe:queues": ("observation", "SIOCINQ / SIOCOUTQ: tcp_ioctl() in net/ipv4/tcp.c "
                       "(bytes unread, bytes not yet acknowledged)"),
    "observe:timer": ("observation", "QTimer::isActive(), interval(), remainingTime() (qtimer.cpp)"),
    "sleep": ("time", "nanosleep(2): time passes; kernel timers that fall due meanwhile fire "
              "(TIME_WAIT: tw_timer_handler() in net/ipv4/inet_timewait_sock.c; SYN retransmission: "
              "tcp_retransmit_timer() in net/ipv4/tcp_timer.c)"),
    "sleep:tw": ("timer", "tw_timer_handler() -> inet_twsk_kill() in net/ipv4/inet_timewait_sock.c: "
                 "after TCP_TIMEWAIT_LEN (60 s, include/net/tcp.h) the entry leaves ehash and the bind "
                 "bucket"),
    "PROCESS_GONE": ("runner", "do_exit() in kernel/exit.c: the process has exited, so a later step "
                     "of it cannot run (the scenario runner reports PROCESS_GONE)"),
    "PROCESS_BUSY": ("runner", "the process is still blocked in an earlier call: one thread per "
                     "process, so the scenario runner reports PROCESS_BUSY"),
    "call:getsockopt": ("kernel", "sk_getsockopt() in net/core/sock.c; do_tcp_getsockopt() in "
                        "net/ipv4/tcp.c; getsockopt(2), socket(7), tcp(7)"),
    "call:setsockopt": ("kernel", "sk_setsockopt() in net/core/sock.c; setsockopt(2), socket(7)"),
    "call:set_nonblocking": ("kernel", "fcntl(2) F_SETFL O_NONBLOCK: a flag of the open file"),
    "call:exit": ("kernel", "do_exit() -> exit_files() in kernel/exit.c: every fd is closed"),
    "call:fork": ("kernel", "fork(2), dup_fd() in fs/file.c: the child's fd table shares every open file"),
    "call": ("kernel", "the system call's own entry point (net/socket.c)"),
    "load": ("load", "each connection of the load step goes through the same system calls "
             "(__sys_connect() in net/socket.c, tcp_v4_connect() in net/ipv4/tcp_ipv4.c)"),
}


@dataclass
class WhatIf:
    label: str  # "with SO_REUSEADDR on the old listener srv (step 0) and on the new socket srv2 (step 13)"
    outcome: str  # what the model gave for the same step in that variant
    changed: bool
    kind: str = ""


@dataclass
class Explanation:
    index: int
    line: int
    time: float
    proc: str | None
    kind: str
    what: str
    outcome: str
    note: str | None = None
    via: str | None = None
    expect: Any = None
    expect_ok: bool | None = None
    rule: str | None = None
    cite: str | None = None
    doc: str | None = None
    decided_by: str = ""  # "rule", "observation", "time", "runner", ...
    trail: list[tuple[str, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # recorded by the rules
    state: list[str] = field(default_factory=list)  # read from the kernel's tables before the step
    during: list[str] = field(default_factory=list)  # transitions and timer events during the step
    whatifs: list[WhatIf] = field(default_factory=list)
    effect: str = ""
    syscalls: list[str] = field(default_factory=list)  # a Qt call's system calls, each with its rule

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def syscall_line(c: dict[str, Any]) -> str:
    """One system call a Qt call made: ``bind(4, 0.0.0.0, 5000) = -1 EADDRINUSE  [bind.explicit_port]``."""
    from ..report.terminal import syscall_text

    return syscall_text(c) + (f"  [{c['rule']}]" if c.get("rule") else "")


def call_text(rec: StepRecord) -> str:
    """``bind(srv2, 127.0.0.1, 8080)``, ``sleep 61 s``, ``observe tcp_states port=8080``."""
    a = dict(rec.args)
    if rec.kind == "sleep":
        return f"sleep {a.get('seconds')} s"
    if rec.kind == "observe":
        what = a.pop("what", "")
        return f"observe {what} " + " ".join(f"{k}={v}" for k, v in a.items() if v is not None)
    if rec.kind == "load":
        return f"load {a.get('rate')}/s for {a.get('duration')} s -> {a.get('addr')}:{a.get('port')}"
    if rec.kind == "qt":
        obj, meth = a.pop("object", "?"), (rec.call or "").partition(".")[2]
        parts = [str(a[k]) for k in ("addr", "port", "value") if a.get(k) is not None]
        return f"{obj}.{meth}({', '.join(parts)})" + (f" as {a['as']}" if a.get("as") else "")
    if rec.kind == "timer":
        extra = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("name", "op"))
        return f"{rec.call}({a.get('name')}{', ' + extra if extra else ''})"
    if rec.call == "socket":
        parts = [str(a.get("family", "AF_INET")), str(a.get("type", "SOCK_STREAM")), str(a.get("protocol", 0))]
        if a.get("nonblock"):
            parts[1] += "|SOCK_NONBLOCK"
        s = f"socket({', '.join(parts)})"
        return s + (f" as {a['as']}" if a.get("as") else "")
    order = ("sock", "addr", "port", "backlog", "opt", "value", "bytes", "how", "fd", "on")
    parts = [str(a[k]) for k in order if k in a and a[k] not in (None, [])]
    parts += [f"{k}={v}" for k, v in a.items() if k not in order and k != "as" and v not in (None, [])]
    s = f"{rec.call}({', '.join(parts)})"
    return s + (f" as {a['as']}" if a.get("as") else "")


def outcome_text(rec: StepRecord) -> str:
    """What the step returned, as a program sees it: ``3``, ``ok``, ``-1 EADDRINUSE``, ``0 (end of stream)``."""
    if rec.kind == "qt":
        return rec.err or json.dumps(rec.ret)
    if rec.kind == "observe":
        return json.dumps(rec.obs, separators=(", ", ": ")) if not isinstance(rec.obs, str) else str(rec.obs)
    if rec.kind == "load":
        o = rec.obs or {}
        errs = ", ".join(f"{k} x{v}" for k, v in (o.get("errors") or {}).items())
        return f"{o.get('ok', 0)}/{o.get('attempts', 0)} connections ok" + (f" ({errs})" if errs else "")
    if rec.kind == "sleep":
        return f"t = {rec.time + float(rec.args.get('seconds', 0)):g} s"
    if rec.kind == "timer":
        return f"fires in {rec.ret} ms" if rec.ret is not None else (rec.err or "inactive")
    if rec.blocked:
        if rec.completed_after is not None:
            return f"blocked, then {_result(rec)} after step {rec.completed_after}"
        return "BLOCKED (still waiting at the end)"
    return _result(rec)


def _result(rec: StepRecord) -> str:
    if rec.err in ("PROCESS_GONE", "PROCESS_BUSY"):
        return rec.err
    if rec.err:
        num = getattr(rec, "errno", None)
        shown = rec.ret if rec.ret is not None else -1
        return f"{shown} {rec.err}" + (f" ({num})" if num is not None and str(num) not in rec.err else "")
    if rec.call == "recv" and rec.ret == 0 and rec.args.get("bytes", 1):
        return "0 (end of stream)"
    if rec.ret is None or (rec.ret == 0 and rec.call not in ("recv", "send", "getsockopt", "getsockname",
                                                              "dup", "dup2", "socket", "accept")):
        return "ok"
    return str(rec.ret)


def _who(info: dict[str, Any] | None) -> str:
    return (info or {}).get("label") or "a socket"


def render_text(ex: Explanation) -> str:
    """A plain-text explanation of one step (what ``socksim explain`` prints)."""
    lines = []
    head = f"step {ex.index}"
    where = [f"line {ex.line}" if ex.line else "", f"t={ex.time:.6g} s"]
    head += f"  ({', '.join(w for w in where if w)})"
    who = f"{ex.proc}: " if ex.proc else ""
    lines.append(f"{head}  {who}{ex.what}  ->  {ex.outcome}")
    if ex.via:
        lines.append(f"  called by: {ex.via}")
    if ex.expect is not None:
        lines.append(f"  expected {ex.expect}: {'met' if ex.expect_ok else 'NOT met' if ex.expect_ok is False else '-'}")
    if ex.note:
        lines.append(f"  note: {ex.note}")
    lines.append("")
    if ex.rule:
        lines.append(f"  decided by  {ex.rule}")
    else:
        lines.append(f"  decided by  ({ex.decided_by})")
    lines.append(f"  source      {ex.cite or '-'}")
    if ex.doc and "\n" in ex.doc.strip():
        for d in ex.doc.strip().splitlines()[1:]:
            if d.strip():
                lines.append(f"              {d.strip()}")
    if ex.trail and len(ex.trail) > 1:
        lines.append("  rules consulted: " + ", ".join(r for r, _ in ex.trail))
    for title, items in (("the system calls Qt made", ex.syscalls), ("what the rule looked at", ex.facts),
                         ("the kernel's tables just before the step", ex.state),
                         ("during the step", ex.during)):
        if items:
            lines += ["", f"  {title}:"] + [f"    - {x}" for x in items]
    if ex.effect:
        lines.append(f"  afterwards: {ex.effect}")
    changed = [w for w in ex.whatifs if w.changed]
    same = [w for w in ex.whatifs if not w.changed]
    if changed:
        lines.append("")
        lines.append("  what would have changed the outcome (each variant re-run on the model):")
        lines += [f"    - {w.label}: {w.outcome}" for w in changed]
    if same:
        lines.append("")
        lines.append("  what would not have changed it:")
        lines += [f"    - {w.label}: still {w.outcome}" for w in same]
    return "\n".join(lines)
