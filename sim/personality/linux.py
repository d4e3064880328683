"""The ``linux`` personality: POSIX conventions, Linux x86_64 errno numbers, kernel 6.18 defaults."""

from __future__ import annotations

from .base import Personality

# include/uapi/asm-generic/errno-base.h and errno.h (x86_64 uses the generic numbers)
ERRNO = {
    "EPERM": 1, "ENOENT": 2, "EINTR": 4, "EBADF": 9, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13,
    "EFAULT": 14, "EINVAL": 22, "ENFILE": 23, "EMFILE": 24, "EPIPE": 32, "ENOSYS": 38,
    "ENOTSOCK": 88, "EDESTADDRREQ": 89, "EPROTOTYPE": 91, "ENOPROTOOPT": 92,
    "EPROTONOSUPPORT": 93, "ESOCKTNOSUPPORT": 94, "EOPNOTSUPP": 95, "EPFNOSUPPORT": 96,
    "EAFNOSUPPORT": 97, "EADDRINUSE": 98, "EADDRNOTAVAIL": 99, "ENETDOWN": 100,
    "ENETUNREACH": 101, "ECONNABORTED": 103, "ECONNRESET": 104, "ENOBUFS": 105, "EISCONN": 106,
    "ENOTCONN": 107, "ESHUTDOWN": 108, "ETIMEDOUT": 110, "ECONNREFUSED": 111, "EALREADY": 114,
    "EINPROGRESS": 115,
}

LINUX = Personality(
    name="linux",
    kernel_class="stack:Kernel",
    errno_numbers=ERRNO,
    defaults={},  # sim.kernel.stack.DEFAULT_SYSCTLS are the Linux 6.18 values measured here
    # Winsock-only calls in a portable program map onto their POSIX equivalents
    # (WSAStartup/WSACleanup do nothing on POSIX; closesocket is close; FIONBIO is O_NONBLOCK).
    aliases={"closesocket": "close", "ioctlsocket": "set_nonblocking", "WSAStartup": "nop",
             "WSACleanup": "nop", "WSAGetLastError": "get_errno"},
    citation="POSIX: a failed call returns -1 and sets errno (errno(3))",
)
