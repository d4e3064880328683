"""Explanations of a Windows run in Windows' terms.

The explainer reads the kernel's object graph, which speaks of the shared model (fd numbers, the
Linux sysctl names the scenario format uses, /proc files). On a Windows host the same facts are
said the way Winsock and a Windows administrator say them: SOCKET handles, the dynamic port range,
netstat; Linux-only notions (the backlog+1 of Linux's accept queue, /proc sources) are left out.
The Linux counterpart of a step is shown only by ``--compare-personalities``.
"""

from __future__ import annotations

import re
from typing import Any

# what an observation reads on Windows (the source line beside it)
SOURCES = {
    "observe:tcp_states": ("observation", "netstat -ano / GetExtendedTcpTable (iphlpapi): the TCP "
                           "connections and their states"),
    "observe:sockstat": ("observation", "netstat -s -p tcp: current connections and TIME_WAIT "
                         "entries (inferred counterpart)"),
    "observe:fds": ("observation", "the process's SOCKET handles (Process Explorer / handle.exe: "
                    "\\Device\\Afd handles)"),
    "observe:queues": ("observation", "ioctlsocket(FIONREAD) for the receive queue; the send "
                       "queue as the model counts it (inferred)"),
    "call": ("kernel", "the Winsock function's own page (Learn/api/winsock2)"),
}

# the Windows options a what-if may add where Linux would try SO_REUSEPORT
OPTIONS = (("SO_REUSEADDR", "reuse"), ("SO_EXCLUSIVEADDRUSE", "exclusive"))

_SUBS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"open fds in (\S+): (.*?); the lowest free one is \d+"),
     lambda m: f"SOCKET handles of {m.group(1)}: {m.group(2)}"),
    (re.compile(r" \(backlog (\d+) admits \d+\)"), ""),
    (re.compile(r"ip_local_port_range \((\d+), (\d+)\)"), lambda m: f"the dynamic port range {m.group(1)}-{m.group(2)}"),
    (re.compile(r"ip_local_port_range"), "the dynamic port range"),
    (re.compile(r"tcp_syn_retries"), "TcpMaxConnectRetransmissions"),
    (re.compile(r"\(fd (\d+)\)"), r"(SOCKET \1)"),
    (re.compile(r"\bfds\b"), "SOCKET handles"),
    (re.compile(r"\bfd (\d+)\b"), r"SOCKET \1"),
    (re.compile(r"\bfd\b"), "SOCKET"),
    (re.compile(r"/proc/net/tcp"), "netstat"),
]
# Linux-only wording with no Windows counterpart: such a line is left out
_LINUX_ONLY = re.compile(r"/proc|RLIMIT|sockstat|inetsw|\b_*[a-z0-9]+_[a-z0-9_]+\(\)|SO_REUSEPORT|"
                         r"tcp_tw_reuse|TCP_LINGER2|TCP_SYNCNT|SOCK_[A-Z]+_LOCK|\bsk_[a-z]")


def windows_terms(text: str) -> str | None:
    """``text`` said in Windows' terms, or None when it has no Windows counterpart."""
    for pat, repl in _SUBS:
        text = pat.sub(repl, text)
    return None if _LINUX_ONLY.search(text) else text


def _windows_lines(lines: list[str]) -> list[str]:
    return [t for t in (windows_terms(f) for f in lines) if t]


def translate(ex: Any) -> Any:
    """Put an explanation of a Windows run into Windows' terms, in place."""
    ex.facts = _windows_lines(ex.facts)
    ex.state = _windows_lines(ex.state)
    ex.during = _windows_lines(ex.during)
    ex.trail = [(rid, c) for rid, c in ex.trail if rid.startswith(("win.", "api."))]
    if ex.cite and not (ex.rule or "").startswith(("win.", "api.")):
        ex.cite = windows_terms(ex.cite) or ex.cite
    ex.whatifs = [w for w in ex.whatifs if windows_terms(w.label) is not None]
    for w in ex.whatifs:
        w.label = windows_terms(w.label) or w.label
    return ex
