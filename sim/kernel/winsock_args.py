"""Winsock's checks of pointer and length arguments (a part of :class:`~.winsock.WinsockKernel`).

A scenario can pass a pointer argument as NULL (``null: [addr]``, ``null: [value]``) and give the
length of an address buffer (``addrlen: N``); Windows answers WSAEFAULT before it does anything
else with the call. What Windows does is taken from Wine's conformance tests
(dlls/ws2_32/tests/sock.c, run on Windows): test_bind, test_getsockname, test_accept,
test_set_getsockopt; and from the function pages, which list WSAEFAULT for each call.
"""

from __future__ import annotations

from typing import Any

from .errors import SysError
from .rules import MINOR, fact, rule
from .sockets import Sock

# sizeof(SOCKADDR_IN), sizeof(SOCKADDR_IN6) (ws2def.h / ws2ipdef.h): the smallest name a call accepts
SOCKADDR_LEN = {4: 16, 6: 28}
SOCKADDR_NAME = {4: "SOCKADDR_IN", 6: "SOCKADDR_IN6"}


class WinsockArgs:
    """NULL pointers and short lengths: WSAEFAULT."""

    @rule("win.fault", "windows", "sockets", MINOR)
    def _fault(self, why: str) -> None:
        """Windows Sockets Error Codes (Learn/winsock/windows-sockets-error-codes-2): WSAEFAULT, a bad pointer or a length too small for the structure; bind, connect, accept, getsockname, setsockopt and getsockopt pages list it; Wine dlls/ws2_32/tests/sock.c (asserted on Windows): test_bind, test_getsockname, test_accept, test_set_getsockopt."""
        fact(why)
        raise SysError("EFAULT", "win.fault")

    def check_name_in(self, sk: Sock, call: str, null: Any, addrlen: int | None) -> None:
        """bind/connect: the name must be readable and at least a whole SOCKADDR of the family."""
        if "addr" in (null or ()):
            self._fault(f"{call}: the name pointer is NULL")
        need = SOCKADDR_LEN[sk.family]
        if addrlen is not None and addrlen < need:
            self._fault(f"{call}: namelen {addrlen} is smaller than a {SOCKADDR_NAME[sk.family]} ({need} bytes)")

    def check_name_out(self, sk: Sock, call: str, null: Any, addrlen: int | None) -> None:
        """getsockname/accept: the buffer the address is written to and its length. accept() takes a
        NULL address (nothing is written, the length is not read); getsockname() needs both."""
        null = tuple(null or ())
        if call == "accept" and ("addr" in null or "addrlen" in null):
            fact("no address is asked for: nothing is written" if "addr" in null
                 else "no length is given: the address is not written")
            return
        if "addr" in null or "addrlen" in null:
            self._fault(f"{call}: the {'name' if 'addr' in null else 'namelen'} pointer is NULL")
        need = SOCKADDR_LEN[sk.family]
        if addrlen is not None and addrlen < need:
            self._fault(f"{call}: a buffer of {addrlen} bytes cannot hold a {SOCKADDR_NAME[sk.family]} "
                        f"({need} bytes); the length is left as it was")

    def check_optval(self, opt: str, null: Any) -> None:
        """setsockopt/getsockopt: a NULL optval is WSAEFAULT whatever optlen says."""
        if "value" in (null or ()):
            self._fault(f"{opt}: optval is a NULL pointer")
