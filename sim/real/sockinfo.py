"""Socket calls' results as the driver reports them: addresses, poll events, TCP_INFO, capabilities.

A helper of driver.py, run inside the namespace like it: standard library only, nothing from sim.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

libc = ctypes.CDLL(None, use_errno=True)
c_int, c_uint, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
_getsockopt = libc.getsockopt
_getsockopt.restype, _getsockopt.argtypes = c_int, [c_int, c_int, c_int, c_void_p, ctypes.POINTER(c_uint)]
_capget, _capset = libc.capget, libc.capset
for _f in (_capget, _capset):
    _f.restype, _f.argtypes = c_int, [c_void_p, c_void_p]
IPPROTO_TCP = 6
ERRNO_ALIASES = {"EWOULDBLOCK": "EAGAIN", "ENOTSUP": "EOPNOTSUPP", "EDEADLOCK": "EDEADLK"}


def errname(num: int) -> str:
    name = errno.errorcode.get(num, f"E{num}")
    return ERRNO_ALIASES.get(name, name)


POLL = {"POLLIN": 0x1, "POLLPRI": 0x2, "POLLOUT": 0x4, "POLLERR": 0x8, "POLLHUP": 0x10,
        "POLLNVAL": 0x20, "POLLRDNORM": 0x40, "POLLRDBAND": 0x80, "POLLWRNORM": 0x100,
        "POLLWRBAND": 0x200, "POLLRDHUP": 0x2000}
CAPS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
_CAP_VERSION_3 = 0x20080522
TCP_INFO = 11
# struct tcp_info (include/uapi/linux/tcp.h): byte offset and size of the fields a scenario reads
TCP_INFO_LAYOUT = {
    "state": (0, 1), "ca_state": (1, 1), "retransmits": (2, 1), "probes": (3, 1), "backoff": (4, 1),
    "rto": (8, 4), "unacked": (24, 4), "lost": (32, 4), "retrans": (36, 4), "snd_cwnd": (80, 4),
    "total_retrans": (100, 4), "bytes_acked": (120, 8), "bytes_received": (128, 8),
    "notsent_bytes": (164, 4),
}
TCP_STATE_NAMES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
                   6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
                   11: "CLOSING", 12: "NEW_SYN_RECV"}
CA_STATE_NAMES = {0: "OPEN", 1: "DISORDER", 2: "CWR", 3: "RECOVERY", 4: "LOSS"}


def sockaddr_name(raw: bytes) -> dict | None:
    """{addr, port} of a struct sockaddr_in / sockaddr_in6 (addresses as inet_ntop writes them)."""
    fam = struct.unpack_from("=H", raw, 0)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if fam == socket.AF_INET:
        return {"addr": socket.inet_ntop(socket.AF_INET, raw[4:8]), "port": port}
    if fam == socket.AF_INET6:
        return {"addr": socket.inet_ntop(socket.AF_INET6, raw[8:24]), "port": port}
    return None


def tcp_info(fd: int, fields: list) -> dict | str:
    """getsockopt(TCP_INFO): the named fields (state names for state and ca_state), or the errno."""
    size = 256
    buf = ctypes.create_string_buffer(size)
    ln = c_uint(size)
    if _getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, ctypes.byref(ln)) < 0:
        return errname(ctypes.get_errno())
    raw = buf.raw[: ln.value]
    out = {}
    for f in fields:
        off, n = TCP_INFO_LAYOUT[f]
        v = int.from_bytes(raw[off:off + n], "little") if off + n <= len(raw) else None
        if f == "state":
            v = TCP_STATE_NAMES.get(v, v)
        elif f == "ca_state":
            v = CA_STATE_NAMES.get(v, v)
        out[f] = v
    return out


def drop_caps(names: list) -> str | None:
    """capset(2): remove the named capabilities from the effective, permitted and inheritable sets."""
    hdr = struct.pack("Ii", _CAP_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)
    if _capget(hdr, data) < 0:
        return errname(ctypes.get_errno())
    words = list(struct.unpack("6I", data.raw))  # (effective, permitted, inheritable) x 2
    for n in names:
        bit = CAPS[n]
        for k in range(3):
            words[(bit // 32) * 3 + k] &= ~(1 << (bit % 32))
    new = ctypes.create_string_buffer(struct.pack("6I", *words), 24)
    if _capset(hdr, new) < 0:
        return errname(ctypes.get_errno())
    return None


# Names the scenario uses -> the numbers of the Linux ABI (the driver's calls take these).

FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_PACKET": 17}
TYPES = {"SOCK_STREAM": 1, "SOCK_DGRAM": 2, "SOCK_RAW": 3, "SOCK_SEQPACKET": 5}
PROTOCOLS = {0: 0, "0": 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17, "IPPROTO_SCTP": 132}
SOCK_NONBLOCK = 0o4000
SOL_SOCKET, IPPROTO_IP, IPPROTO_IPV6 = 1, 0, 41  # IPPROTO_TCP is above
OPTIONS = {
    "SO_REUSEADDR": (SOL_SOCKET, 2),
    "SO_REUSEPORT": (SOL_SOCKET, 15),
    "SO_LINGER": (SOL_SOCKET, 13),
    "SO_SNDBUF": (SOL_SOCKET, 7),
    "SO_RCVBUF": (SOL_SOCKET, 8),
    "SO_KEEPALIVE": (SOL_SOCKET, 9),
    "SO_ERROR": (SOL_SOCKET, 4),
    "SO_TYPE": (SOL_SOCKET, 3),
    "SO_ACCEPTCONN": (SOL_SOCKET, 30),
    "IPV6_V6ONLY": (IPPROTO_IPV6, 26),
    "TCP_NODELAY": (IPPROTO_TCP, 1),
    "TCP_MAXSEG": (IPPROTO_TCP, 2),
    "IP_BIND_ADDRESS_NO_PORT": (IPPROTO_IP, 24),
    "TCP_LINGER2": (IPPROTO_TCP, 8),
    "TCP_SYNCNT": (IPPROTO_TCP, 7),
    "TCP_WINDOW_CLAMP": (IPPROTO_TCP, 10),
    "TCP_USER_TIMEOUT": (IPPROTO_TCP, 18),
    "SO_RCVBUFFORCE": (SOL_SOCKET, 33),
    "SO_SNDBUFFORCE": (SOL_SOCKET, 32),
    "SO_RCVLOWAT": (SOL_SOCKET, 18),
    "IP_LOCAL_PORT_RANGE": (IPPROTO_IP, 51),
    # Winsock's number, (int)~SO_REUSEADDR; Linux has no such option and answers ENOPROTOOPT.
    "SO_EXCLUSIVEADDRUSE": (SOL_SOCKET, -5),
}
MSG_FLAGS = {"MSG_OOB": 0x1, "MSG_PEEK": 0x2, "MSG_DONTWAIT": 0x40, "MSG_WAITALL": 0x100,
             "MSG_NOSIGNAL": 0x4000}
SHUT = {"SHUT_RD": 0, "SHUT_WR": 1, "SHUT_RDWR": 2}
