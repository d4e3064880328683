"""Windows-side tables the Winsock kernel (sim/kernel/winsock.py) uses: the process handle table,
the nonpaged pool, Microsoft's bind-sharing outcome tables and the errors each function page lists.

The bracketed tags ([W20] ...) are the references of sim/kernel/winsock.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .errors import SysError
from .handles import FileTable, OpenFile
from .rules import fact, rule


# ----------------------------------------------------------------------------- handles

HANDLE_BASE = 0x100  # first SOCKET value handed out in a process (inferred: values are undocumented)
HANDLE_STEP = 4  # kernel handles are multiples of 4 (the low two bits are tag bits) [W40]


class WinHandleTable(FileTable):
    """A process handle table as far as sockets see it: opaque multiples of 4, recycled at once.

    A SOCKET is a kernel handle (``\\Device\\Afd``) in the process handle table [W13, W24]; kernel
    handle values are multiples of 4 [W40]; a closed value "may immediately be reused" [W6, W41].
    The allocation order is undocumented: the model hands out the most recently freed value first
    (a free list), else the next unused multiple of 4 from ``HANDLE_BASE`` (inferred). There is no
    per-process socket limit (RLIMIT_NOFILE has no Windows counterpart; Microsoft's provider limits
    sockets only by memory [W15]).
    """

    __slots__ = ("free", "next_value")

    def __init__(self, nofile: int, base: int = HANDLE_BASE):
        super().__init__(nofile, 0)  # the std handles are not sockets and take no SOCKET value
        self.free: list[int] = []  # freed values, most recent last
        self.next_value = base

    def copy(self) -> WinHandleTable:
        t = WinHandleTable(self.nofile, self.next_value)
        t.free = list(self.free)
        t.fds = dict(self.fds)
        for f in t.fds.values():
            f.f_count += 1
        return t

    @rule("win.handle_alloc", "windows", "fd", "minor")
    def alloc_fd(self) -> int:
        """Socket Handles (Learn/winsock/socket-handles-2) and Raymond Chen on handle values: a SOCKET is an opaque kernel handle, a multiple of 4, reused at once after closesocket."""
        if self.free:
            v = self.free[-1]
            fact(f"handle value {v} was freed most recently: it is handed out again")
        else:
            v = self.next_value
            fact(f"handle value {v} is the next unused multiple of {HANDLE_STEP}")
        return v  # reserved only when installed: a blocked accept() takes nothing

    def install(self, fd: int, f: OpenFile) -> None:
        if self.free and self.free[-1] == fd:
            self.free.pop()
        elif fd == self.next_value:
            self.next_value += HANDLE_STEP
        elif fd in self.free:
            self.free.remove(fd)
        super().install(fd, f)

    def remove(self, fd: int) -> OpenFile:
        f = super().remove(fd)
        self.free.append(fd)
        return f

    @rule("win.handle_lookup", "windows", "fd", "minor")
    def get(self, fd: int) -> OpenFile:
        """Windows Sockets Error Codes (Learn/winsock/windows-sockets-error-codes-2): WSAENOTSOCK, an operation was attempted on something that is not a socket."""
        f = self.fds.get(fd)
        if f is None or f.sock is None:
            fact(f"{fd} is not an open SOCKET handle in this process")
            raise SysError("ENOTSOCK", "win.handle_lookup")
        return f


# ----------------------------------------------------------------------------- nonpaged pool

TCB_BYTES = 456  # one TCP connection's nonpaged allocation (Server 2003 R2, tag TCPT) [W48]
DEFAULT_POOL_LIMIT = 128 << 30  # "RAM or 128 GB, whichever is smaller" [W39]


class NonPagedPool:
    """The nonpaged pool as sockets use it: TCBs and buffered data, against one limit.

    Kernel memory that is never paged out [W25]; AFD buffers socket data in it and an app that
    lets data pile up can exhaust it (pool tags AfdB/AfdP), after which calls fail with WSAENOBUFS
    [W47]. Each connection is charged ``TCB_BYTES`` while it is hashed (a third-party measurement
    [W48]); TIME_WAIT entries and listening sockets are not charged (inferred). Same interface as
    the Linux ``TcpMemPool`` so the shared send/receive paths charge it unchanged.
    """

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.data = 0
        self.tcbs = 0
        self.peak = 0
        self.failures = 0
        self.pressure_events = 0
        self.in_pressure = False

    @property
    def bytes(self) -> int:
        return self.data + self.tcbs * TCB_BYTES

    @property
    def pages(self) -> int:
        return (self.bytes + 4095) // 4096

    def can_charge(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under the limit (noting the shortfall when they do not)."""
        if self.bytes + nbytes > self.limit:
            self.failures += 1
            fact(f"nonpaged pool: {self.bytes} bytes in use ({self.tcbs} TCBs, {self.data} bytes "
                 f"buffered) + {nbytes} would exceed the limit of {self.limit}")
            return False
        return True

    @rule("win.nonpaged_pool", "windows", "buffers", "minor")
    def reserve(self, nbytes: int) -> None:
        """KB 293841 / KB 917114 and Memory Pools (Learn/memory/memory-pools): socket buffers and TCBs live in nonpaged pool; when it is exhausted the call fails with WSAENOBUFS."""
        if not self.can_charge(nbytes):
            raise SysError("ENOBUFS", "win.nonpaged_pool")

    def charge(self, nbytes: int) -> None:
        self.data += nbytes
        self.peak = max(self.peak, self.bytes)

    def uncharge(self, nbytes: int) -> None:
        self.data -= nbytes

    def charge_tcb(self) -> None:
        self.tcbs += 1
        self.peak = max(self.peak, self.bytes)

    def uncharge_tcb(self) -> None:
        self.tcbs -= 1


# ----------------------------------------------------------------------------- bind tables

# Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE [W20]. Row = first bind, column = second bind; D =
# no option, R = SO_REUSEADDR, X = SO_EXCLUSIVEADDRUSE; W = wildcard address, S = a specific
# address (the same one when both are S). OK = success, IU = WSAEADDRINUSE, AC = WSAEACCES.
SHARE_COLUMNS = ("DW", "DS", "RW", "RS", "XW", "XS")
SAME_USER = {  # Windows Server 2003 and later, both binds by the same user account
    "DW": "IU OK AC OK IU OK",
    "DS": "OK IU OK AC IU IU",
    "RW": "IU OK OK OK IU OK",
    "RS": "OK IU OK OK IU IU",
    "XW": "IU AC AC AC IU AC",
    "XS": "OK IU OK AC IU IU",
}
DIFFERENT_USERS = dict(SAME_USER, **{  # differs only in the D W and R W rows
    "DW": "IU AC AC AC IU AC",
    "RW": "IU AC OK OK IU AC",
})
BEFORE_2003 = {  # Windows XP and earlier: no enhanced socket security
    "DW": "IU IU OK OK IU IU", "DS": "IU IU OK OK IU IU",
    "RW": "IU IU OK OK IU IU", "RS": "IU IU OK OK IU IU",
    "XW": "IU IU AC AC IU IU", "XS": "IU IU AC AC IU IU",
}
CELL_ERR = {"OK": None, "IU": "EADDRINUSE", "AC": "EACCES"}


def share_outcome(first: str, second: str, same_user: bool, enhanced: bool = True) -> str | None:
    """The table cell for a first bind ``first`` (e.g. "DW") and a second bind ``second``: None or an error name."""
    table = (SAME_USER if same_user else DIFFERENT_USERS) if enhanced else BEFORE_2003
    return CELL_ERR[table[first].split()[SHARE_COLUMNS.index(second)]]


V4_ANY = ipaddress.IPv4Address("0.0.0.0")
V6_ANY = ipaddress.IPv6Address("::")


def stack_views(o: Any) -> tuple[Any, Any]:
    """(IPv4 address, IPv6 address) an endpoint occupies; None where it is not on that stack."""
    if o.family == 4:
        return o.saddr4, None
    a6 = o.addr6
    if a6 is not None and a6.ipv4_mapped is not None:
        return a6.ipv4_mapped, None
    v4 = V4_ANY if (a6 in (None, V6_ANY) and not o.ipv6only) else None  # dual-stack wildcard
    return v4, (a6 or V6_ANY)


def overlap(a: Any, b: Any) -> bool:
    """Do two bound endpoints claim a common (stack, address)? Wildcards match every address."""
    a4, a6 = stack_views(a)
    b4, b6 = stack_views(b)
    if a4 is not None and b4 is not None and (a4 == b4 or V4_ANY in (a4, b4)):
        return True
    return a6 is not None and b6 is not None and (a6 == b6 or V6_ANY in (a6, b6))


def dual_stack_wildcard(o: Any) -> bool:
    """An AF_INET6 socket bound to [::] with IPV6_V6ONLY off: it listens on both stacks."""
    return o.family == 6 and not o.ipv6only and o.addr6 in (None, V6_ANY)


def is_wildcard(o: Any) -> bool:
    a4, a6 = stack_views(o)
    return a4 == V4_ANY or a6 == V6_ANY


def option_letter(reuse: bool, exclusive: bool) -> str:
    return "X" if exclusive else ("R" if reuse else "D")


# ----------------------------------------------------------------------------- errors per call
# The errors each function page lists (used to attribute an error found by a shared rule to the
# Windows page that documents it; any other error keeps the shared rule that raised it).
DOCUMENTED = {
    "socket": {"EAFNOSUPPORT", "EPROTONOSUPPORT", "EPROTOTYPE", "ESOCKTNOSUPPORT", "EINVAL",
               "EMFILE", "ENOBUFS"},
    "bind": {"EACCES", "EADDRINUSE", "EADDRNOTAVAIL", "EFAULT", "EINVAL", "ENOBUFS"},
    "connect": {"EADDRINUSE", "EALREADY", "EADDRNOTAVAIL", "EAFNOSUPPORT", "ECONNREFUSED",
                "EINVAL", "EISCONN", "ENETUNREACH", "EHOSTUNREACH", "ENOBUFS", "ETIMEDOUT",
                "EAGAIN", "EACCES"},
    "accept": {"ECONNRESET", "EINVAL", "EMFILE", "ENOBUFS", "EOPNOTSUPP", "EAGAIN"},
    "send": {"EACCES", "ENETRESET", "ENOBUFS", "ENOTCONN", "EOPNOTSUPP", "ESHUTDOWN", "EAGAIN",
             "EMSGSIZE", "EINVAL", "ECONNABORTED", "ECONNRESET", "ETIMEDOUT"},
    "recv": {"ENOTCONN", "ENETRESET", "EOPNOTSUPP", "ESHUTDOWN", "EAGAIN", "EMSGSIZE", "EINVAL",
             "ECONNABORTED", "ETIMEDOUT", "ECONNRESET"},
    "sockopt": {"EFAULT", "EINVAL", "ENETRESET", "ENOPROTOOPT", "ENOTCONN"},
}

SOMAXCONN = 0x7FFFFFFF  # winsock2.h [W30]
SOMAXCONN_HINT_MIN, SOMAXCONN_HINT_MAX = 200, 65535  # SOMAXCONN_HINT(N) is clamped to 200..65535 [W2]
LINUX_ONLY_OPTIONS = frozenset({"SO_REUSEPORT", "IP_BIND_ADDRESS_NO_PORT", "TCP_LINGER2", "TCP_SYNCNT",
                                "TCP_WINDOW_CLAMP", "SO_RCVBUFFORCE", "SO_SNDBUFFORCE",
                                "IP_LOCAL_PORT_RANGE", "TCP_USER_TIMEOUT", "SO_RCVLOWAT"})
