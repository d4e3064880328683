"""kernel/capability.c and security/commoncap.c: the credentials the socket rules ask about.

Only the capabilities socket code checks are modelled (CAP_NET_BIND_SERVICE for ports below
ip_unprivileged_port_start, CAP_NET_ADMIN for SO_RCVBUFFORCE/SO_SNDBUFFORCE, CAP_NET_RAW for raw
sockets). A process of uid 0 starts with all of them; any other uid with none.
"""

from __future__ import annotations

from typing import Any

from .errors import SysError
from .rules import fact, rule

NET_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"})


class Cred:
    """``struct cred``: real, effective and saved uid, and the permitted and effective capability sets."""

    __slots__ = ("ruid", "euid", "suid", "permitted", "effective")

    def __init__(self, uid: int) -> None:
        self.ruid = self.euid = self.suid = uid
        self.permitted = set(NET_CAPS) if uid == 0 else set()
        self.effective = set(self.permitted)

    def copy(self) -> Cred:
        c = Cred(0)
        c.ruid, c.euid, c.suid = self.ruid, self.euid, self.suid
        c.permitted, c.effective = set(self.permitted), set(self.effective)
        return c


@rule("cred.capable", "minor")
def capable(cred: Cred, cap: str) -> bool:
    """ns_capable() in kernel/capability.c: the capability is in the task's effective set."""
    ok = cap in cred.effective
    if not ok:
        fact(f"the process lacks {cap} (euid {cred.euid})")
    return ok


@rule("cred.seteuid", "sockets")
def seteuid(cred: Cred, uid: int) -> None:
    """__sys_setresuid() in kernel/sys.c with cap_emulate_setxuid() in security/commoncap.c: leaving euid 0 clears the effective capabilities, returning to it restores them."""
    if uid not in (cred.ruid, cred.euid, cred.suid) and cred.euid != 0:
        # CAP_SETUID is not modelled apart: a process of euid 0 has it
        fact(f"uid {uid} is none of the real, effective or saved uids ({cred.ruid}, {cred.euid}, "
             f"{cred.suid}) and the process lacks CAP_SETUID")
        raise SysError("EPERM", "cred.seteuid")
    old = cred.euid
    cred.euid = uid
    if old == 0 and uid != 0:
        cred.effective = set()
        fact(f"euid 0 -> {uid}: the effective capabilities are cleared")
    elif old != 0 and uid == 0:
        cred.effective = set(cred.permitted)
        fact(f"euid {old} -> 0: the effective capabilities become the permitted ones")


@rule("cred.capset", "sockets")
def drop_caps(cred: Cred, caps: Any) -> None:
    """capset(2), cap_capset() in security/commoncap.c: capabilities can be dropped from the permitted and effective sets, never added back."""
    for c in caps:
        cred.permitted.discard(c)
        cred.effective.discard(c)
    fact(f"dropped {', '.join(caps)}")


class Credentials:
    """Kernel functions of kernel/capability.c that a scenario calls (a part of :class:`~.stack.Kernel`)."""

    @rule("sys.capset", "sockets")
    def sys_capset(self, p: Any, drop: list[str]) -> int:
        """capset(2) in kernel/capability.c: the process gives up capabilities."""
        drop_caps(p.cred, drop)
        return 0
