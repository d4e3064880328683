"""The libc socket calls of the scenario processes, made through ctypes on plain fd numbers.

A sibling of driver.py, imported by it as a plain script (standard library only, nothing from
``sim``): the raw calls (``_socket`` ... ``_prctl``), their constants, the struct sockaddr
builder and the error convention (-1 and the errno's name).
"""

from __future__ import annotations

import ctypes
import mmap
import socket
import struct

from sockinfo import SOL_SOCKET, errname

try:
    libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # not a Unix: nothing here can run, but importing must not fail
    libc = None

c_int, c_uint, c_ulong, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_ulong, ctypes.c_void_p
c_size_t, c_ssize_t, c_long = ctypes.c_size_t, ctypes.c_ssize_t, ctypes.c_long


def _fn(name: str, restype, *argtypes):
    f = getattr(libc, name, None)
    if f is None:
        return None
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_socket = _fn("socket", c_int, c_int, c_int, c_int)
_bind = _fn("bind", c_int, c_int, c_void_p, c_uint)
_connect = _fn("connect", c_int, c_int, c_void_p, c_uint)
_listen = _fn("listen", c_int, c_int, c_int)
_accept = _fn("accept", c_int, c_int, c_void_p, c_void_p)
_send = _fn("send", c_ssize_t, c_int, c_void_p, c_size_t, c_int)
_recv = _fn("recv", c_ssize_t, c_int, c_void_p, c_size_t, c_int)
_shutdown = _fn("shutdown", c_int, c_int, c_int)
_close = _fn("close", c_int, c_int)
_dup = _fn("dup", c_int, c_int)
_dup2 = _fn("dup2", c_int, c_int, c_int)
_getsockname = _fn("getsockname", c_int, c_int, c_void_p, ctypes.POINTER(c_uint))
_getpeername = _fn("getpeername", c_int, c_int, c_void_p, ctypes.POINTER(c_uint))
_sendto = _fn("sendto", c_ssize_t, c_int, c_void_p, c_size_t, c_int, c_void_p, c_uint)
_poll = _fn("poll", c_int, c_void_p, c_ulong, c_int)
_seteuid = _fn("seteuid", c_int, c_uint)
_setsockopt = _fn("setsockopt", c_int, c_int, c_int, c_int, c_void_p, c_uint)
_getsockopt = _fn("getsockopt", c_int, c_int, c_int, c_int, c_void_p, ctypes.POINTER(c_uint))
_fcntl = _fn("fcntl", c_int, c_int, c_int, c_long)
_ioctl = _fn("ioctl", c_int, c_int, c_ulong, c_void_p)
_prctl = _fn("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SIOCINQ, SIOCOUTQ = 0x541B, 0x5411
F_GETFL, F_SETFL, O_NONBLOCK = 3, 4, 0o4000
SO_DOMAIN = 39

MAX_MSG = 1 << 16


def _result(rc: int) -> tuple[int, str | None]:
    if rc < 0:
        return -1, errname(ctypes.get_errno())
    return int(rc), None


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def sockaddr(addr: str, port: int, sock_family: int | None) -> bytes:
    """struct sockaddr_in / sockaddr_in6 for ``addr``.

    Scenario addresses are family-neutral: an IPv4 literal used on an AF_INET6 socket means its
    v4-mapped form, and 0.0.0.0 there means the IPv6 wildcard ``::``.
    """
    if ":" not in addr and sock_family == socket.AF_INET6:
        addr = "::" if addr == "0.0.0.0" else "::ffff:" + addr
    if ":" in addr:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + bytes(4)
                + socket.inet_pton(socket.AF_INET6, addr) + bytes(4))
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
            + socket.inet_pton(socket.AF_INET, addr) + bytes(8))


def sock_family(fd: int) -> int | None:
    val = c_int(0)
    ln = c_uint(4)
    if _getsockopt(fd, SOL_SOCKET, SO_DOMAIN, ctypes.byref(val), ctypes.byref(ln)) < 0:
        return None
    return val.value


class _Buffer:
    """An anonymous mapping reused for send/recv; untouched pages read as zeros."""

    def __init__(self) -> None:
        self.size = 0
        self.map: mmap.mmap | None = None
        self.ref = None
        self.addr = 0

    def get(self, n: int) -> int:
        if n > self.size:
            size = max(n, 1 << 16)
            m = mmap.mmap(-1, size)
            ref = ctypes.c_char.from_buffer(m)
            self.map, self.ref, self.addr, self.size = m, ref, ctypes.addressof(ref), size
        return self.addr


# ----------------------------------------------------------------------------- scenario process
