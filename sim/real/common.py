"""Bounds, sysctl tables and small helpers shared by the real backend's parts."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any


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
    asked_to_end: bool = False  # an exit step, or the backend killed it: its end is no fault

