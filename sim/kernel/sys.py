"""kernel/sys.c: the setuid family of system calls (seteuid is setresuid(-1, euid, -1))."""

from __future__ import annotations

from .capability import seteuid
from .handles import Process
from .rules import rule


class Sys:
    """Kernel functions of kernel/sys.c (a part of :class:`~.stack.Kernel`)."""

    @rule("sys.seteuid", "sockets")
    def sys_seteuid(self, p: Process, uid: int) -> int:
        """seteuid(3) = __sys_setresuid(-1, uid, -1) in kernel/sys.c: sockets made from now on are owned by the new fsuid."""
        seteuid(p.cred, uid)
        return 0
