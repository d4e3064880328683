"""The ``windows`` personality: Winsock conventions, WSA error names and numbers, Windows defaults.

What a Winsock program sees (docs/windows.md has the sources):

- ``socket()``/``accept()`` return a SOCKET handle or ``INVALID_SOCKET``; every other call returns
  ``SOCKET_ERROR`` on failure, and the cause is read with ``WSAGetLastError()`` (per thread; a
  scenario process is one thread). Winsock never sets ``errno`` [W1-W7, W9, W11].
- Error numbers are ``WSABASEERR`` (10000) plus the BSD errno number; the names carry a ``WSA``
  prefix, and ``EAGAIN`` is ``WSAEWOULDBLOCK`` [W10, W30].
- ``closesocket`` is the socket close and ``ioctlsocket(FIONBIO)`` the non-blocking switch [W14,
  W18]. ``WSAStartup``/``WSACleanup`` are real calls here: the kernel model keeps the per-process
  reference count and refuses socket calls before startup with ``WSANOTINITIALISED`` [W8, W10].

The rule variants live in :mod:`sim.kernel.winsock` (``WinsockKernel``); the defaults below are
the ones the scenario's Linux-named settings fall back to on a Windows host.
"""

from __future__ import annotations

from .base import Personality

WSABASEERR = 10000

# Windows Sockets Error Codes (Learn/winsock/windows-sockets-error-codes-2) [W10]; each WSAE code is
# WSABASEERR + the BSD errno number (winsock2.h) [W30]. Keyed by the canonical (Linux) name.
_BSD = {
    "EINTR": 4, "EBADF": 9, "EACCES": 13, "EFAULT": 14, "EINVAL": 22, "EMFILE": 24,
    "EAGAIN": 35, "EINPROGRESS": 36, "EALREADY": 37, "ENOTSOCK": 38, "EDESTADDRREQ": 39,
    "EMSGSIZE": 40, "EPROTOTYPE": 41, "ENOPROTOOPT": 42, "EPROTONOSUPPORT": 43,
    "ESOCKTNOSUPPORT": 44, "EOPNOTSUPP": 45, "EPFNOSUPPORT": 46, "EAFNOSUPPORT": 47,
    "EADDRINUSE": 48, "EADDRNOTAVAIL": 49, "ENETDOWN": 50, "ENETUNREACH": 51, "ENETRESET": 52,
    "ECONNABORTED": 53, "ECONNRESET": 54, "ENOBUFS": 55, "EISCONN": 56, "ENOTCONN": 57,
    "ESHUTDOWN": 58, "ETIMEDOUT": 60, "ECONNREFUSED": 61, "EHOSTUNREACH": 65,
}
WSA_NUMBERS: dict[str, int] = {name: WSABASEERR + n for name, n in _BSD.items()}
WSA_NUMBERS.update({
    "WSANOTINITIALISED": 10093,  # no successful WSAStartup, or too many WSACleanup calls [W10]
    "WSASYSNOTREADY": 10091,
    "WSAVERNOTSUPPORTED": 10092,
    "WSA_OPERATION_ABORTED": 995,  # overlapped operation cancelled by closesocket/WSACleanup [W10]
})
WSA_NUMBERS["EWOULDBLOCK"] = WSA_NUMBERS["EAGAIN"]

# canonical name -> the name a Winsock program sees
WSA_NAMES: dict[str, str] = {name: "WSA" + name for name in _BSD}
WSA_NAMES["EAGAIN"] = "WSAEWOULDBLOCK"
WSA_NAMES["EWOULDBLOCK"] = "WSAEWOULDBLOCK"

# Windows values for settings the scenario format names after Linux sysctls. They replace the
# Linux defaults on a Windows host; a value a scenario sets explicitly still wins.
WINDOWS_DEFAULTS = {
    # Vista/2008 and later: dynamic port range 49152-65535 (16384 ports), per IANA [W21, W24]
    "ip_local_port_range": (49152, 65535),
    # SOMAXCONN -> "a maximum reasonable value" [W2]; 200 is the model's choice (inferred)
    "somaxconn": 200,
    # AFD DefaultSendWindow/DefaultReceiveWindow 8192 [W42]; 8192 reported on Windows 7 [W49].
    # [1] is the default SO_SNDBUF/SO_RCVBUF; [2] bounds dynamic send buffering (ISB <= 16 MB) [W16]
    "tcp_wmem": (4096, 8192, 16777216),
    "tcp_rmem": (4096, 8192, 16777216),
    # IPv6 sockets are IPv6-only by default on Vista and later (Learn/winsock/dual-stack-sockets)
    "bindv6only": 1,
    # TcpMaxConnectRetransmissions: default 2 (Server 2003 registry reference, cc758896)
    "tcp_syn_retries": 2,
    # no privileged port range: no Windows page restricts bind() below 1024 (inferred)
    "ip_unprivileged_port_start": 0,
}

WINDOWS = Personality(
    name="windows",
    kernel_class="winsock:WinsockKernel",
    errno_numbers=WSA_NUMBERS,
    display_names=WSA_NAMES,
    defaults=WINDOWS_DEFAULTS,
    aliases={"closesocket": "close", "ioctlsocket": "set_nonblocking", "WSAGetLastError": "get_errno"},
    invalid_handle="INVALID_SOCKET",  # (SOCKET)(~0) [W30]
    call_error="SOCKET_ERROR",  # -1 [W30]
    error_source="WSAGetLastError",
    citation="Winsock: a failed call returns INVALID_SOCKET or SOCKET_ERROR and WSAGetLastError() "
             "gives the calling thread's last error (Learn/api/winsock/nf-winsock-wsagetlasterror)",
)
