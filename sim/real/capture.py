"""Capture the segments on the namespace's loopback (and a link's veth end) while a scenario runs.

Why a packet socket and not a capture library (libpcap through a Python binding, scapy):

* no dependency: an ``AF_PACKET`` socket is in the standard library's :mod:`socket`, and the
  TCP/IP headers we need are a few fixed fields that :mod:`struct` reads;
* it works in the namespace: a socket belongs to the network namespace it was created in, so a
  short-lived thread of the controller enters the scenario's namespace (``setns(2)`` on
  ``/proc/<zygote>/ns/net``), creates the socket there, and returns to the host namespace -- the
  socket keeps seeing the scenario's ``lo`` and nothing else; no process inside the namespace
  has to run a capture tool, and nothing is left behind when the socket is closed;
* it needs nothing but root (``CAP_NET_RAW`` in the namespace's owner), which the real backend
  has whenever it made the namespace with ``unshare(CLONE_NEWNET)``.

On ``lo`` every frame is seen twice: once as ``PACKET_OUTGOING`` when the sender transmits it
(``dev_queue_xmit_nit()`` in net/core/dev.c) and once as ``PACKET_HOST`` when loopback hands it
back to the stack (``loopback_xmit()`` in drivers/net/loopback.c -> ``netif_rx()``). Only the
outgoing copy is kept: it is the moment the segment was put on the wire.

Frames are read with a short buffer: headers only; the payload length comes from the IP header
(``MSG_TRUNC`` tells the frame's real size). A segment carries the raw sequence numbers here;
:func:`sim.trace.relative_segments` turns them into numbers relative to each side's initial
sequence number, the same way for both backends.

This module is part of the ground truth: it imports only the standard library and
:mod:`sim.trace`.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from typing import Any

from sim.trace import TCP_FLAG_ORDER, RawSegment, endpoint_text

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_HOST = 0
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # asm-generic/socket.h: each frame's kernel receive time as a timespec
CMSG_SPACE_TIMESPEC = socket.CMSG_SPACE(16)
CLONE_NEWNET = 0x40000000
SNAPLEN = 256  # Ethernet (14) + IPv6 (40) + TCP with options (60) fits easily
RCVBUF = 8 << 20  # room for every header of a busy scenario between two drains

DRAIN_QUIET = 0.004  # a step's last segments: wait until nothing new arrived for this long
DRAIN_MAX = 0.05  # ... but never longer than this per drain

TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20,
             "ECE": 0x40, "CWR": 0x80}  # RFC 9293 §3.1 (ECE, CWR: RFC 3168)

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int


class CaptureUnavailable(OSError):
    """No packet socket could be opened in the scenario's namespace."""


def _open_in_netns(netns_path: str, dev: str = "lo") -> socket.socket:
    """Create an AF_PACKET socket bound to ``dev`` inside the namespace at ``netns_path``.

    setns() moves only the calling thread, so a fresh thread does it and moves back before it
    ends; the process's other threads (and the controller's own sockets) stay in the host
    namespace.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = -1
        try:
            target = os.open(netns_path, os.O_RDONLY)
            if _setns(target, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns({netns_path}): {os.strerror(e)}")
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                try:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE (root)
                    except OSError:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    s.bind((dev, ETH_P_ALL))
                    s.setblocking(False)
                except BaseException:
                    s.close()
                    raise
                box["sock"] = s
            finally:
                if _setns(home, CLONE_NEWNET) != 0:
                    box["fatal"] = "could not return to the host namespace"
        except OSError as exc:
            box["error"] = exc
        finally:
            if target >= 0:
                os.close(target)
            os.close(home)

    t = threading.Thread(target=work, name="socksim-capture-open", daemon=True)
    t.start()
    t.join(10.0)
    if "fatal" in box:  # the thread is gone with its namespace; nothing else is affected
        box.pop("sock").close()
        raise CaptureUnavailable(box["fatal"])
    if "error" in box:
        raise CaptureUnavailable(str(box["error"]))
    if "sock" not in box:
        raise CaptureUnavailable("opening the packet socket did not finish")
    return box["sock"]


def parse_frame(frame: bytes, wire_len: int) -> RawSegment | None:
    """One Ethernet frame from ``lo`` -> a :class:`RawSegment`, or None if it is not TCP.

    IPv4: header length from IHL, payload = total length - IHL*4 - data offset*4. IPv6: a fixed
    40-byte header whose next header is TCP (loopback TCP carries no extension headers),
    payload = payload length - data offset*4. ``wire_len`` (the frame's real size) is used when
    the IP length field is zero (a GSO packet larger than 64 KiB).
    """
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if ethertype == ETH_P_IP:
        if len(frame) < off + 20:
            return None
        vihl, _tos, total, _id, _frag, _ttl, proto = struct.unpack_from("!BBHHHBB", frame, off)
        ihl = (vihl & 0x0F) * 4
        if proto != socket.IPPROTO_TCP:
            return None
        src = socket.inet_ntop(socket.AF_INET, frame[off + 12:off + 16])
        dst = socket.inet_ntop(socket.AF_INET, frame[off + 16:off + 20])
        ip_payload = (total or (wire_len - off)) - ihl
        tcp = off + ihl
    elif ethertype == ETH_P_IPV6:
        if len(frame) < off + 40:
            return None
        plen, nxt = struct.unpack_from("!HB", frame, off + 4)
        if nxt != socket.IPPROTO_TCP:
            return None
        src = socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24])
        dst = socket.inet_ntop(socket.AF_INET6, frame[off + 24:off + 40])
        ip_payload = plen or (wire_len - off - 40)
        tcp = off + 40
    else:
        return None
    if len(frame) < tcp + 20:
        return None
    sport, dport, seq, ack, doff_flags, win = struct.unpack_from("!HHIIHH", frame, tcp)
    doff = (doff_flags >> 12) * 4
    bits = doff_flags & 0xFF
    flags = "|".join(name for name in TCP_FLAG_ORDER if bits & TCP_FLAGS[name])
    opts = parse_options(frame[tcp + 20:tcp + doff])
    return RawSegment(src=(src, sport), dst=(dst, dport), flags=flags, seq=seq,
                      ack=ack if bits & 0x10 else 0, length=max(0, ip_payload - doff), win=win,
                      opts=opts)


def parse_options(data: bytes) -> dict[str, Any]:
    """TCP options that matter on loopback: MSS, window scale, SACK permitted, SACK blocks,
    timestamps (present or not; their values are clock readings and never compared)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(data):
        kind = data[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= len(data):
            break
        size = data[i + 1]
        if size < 2 or i + size > len(data):
            break
        body = data[i + 2:i + size]
        if kind == 2 and size == 4:
            out["mss"] = struct.unpack("!H", body)[0]
        elif kind == 3 and size == 3:
            out["wscale"] = body[0]
        elif kind == 4:
            out["sack_ok"] = True
        elif kind == 5:
            out["sack"] = (size - 2) // 8
        elif kind == 8 and size == 10:
            out["ts"] = True
        i += size
    return out


TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")


def _proc_addr(text: str) -> str:
    """/proc/net/tcp's hex address (host byte order in 32-bit words) -> ``127.0.0.1:9500``."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
    return endpoint_text((ip, int(port, 16)))


def tcp_rows(netns_pid: int) -> list[list[str]]:
    """The rows of the namespace's /proc/net/tcp and tcp6, each split into its fields."""
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{netns_pid}/net/{name}") as f:
                rows += [line.split() for line in f.read().splitlines()[1:]]
        except OSError:
            continue
    return rows


def endpoint_states(netns_pid: int) -> dict[tuple[str, str], str]:
    """(local, remote) -> TCP state name for every connected row of the namespace's
    /proc/net/tcp and tcp6 (listeners left out)."""
    out: dict[tuple[str, str], str] = {}
    for f in tcp_rows(netns_pid):
        if len(f) < 4 or int(f[3], 16) == 10:
            continue
        st = int(f[3], 16)
        out[(_proc_addr(f[1]), _proc_addr(f[2]))] = (
            TCP_STATES[st] if st < len(TCP_STATES) else f"STATE_{st:02X}")
    return out


class Capture:
    """One interface of one namespace, read between steps.

    On ``lo`` only the outgoing copy of each frame is kept (see above). On a veth end each frame
    is seen once: ``PACKET_OUTGOING`` for what this namespace sends, ``PACKET_HOST`` for what its
    peer sent (``veth_xmit()`` in drivers/net/veth.c hands the frame to the peer's receive path),
    so both are kept and the capture in one namespace sees both directions of the link.

    Each frame carries the kernel's time of capture (``SO_TIMESTAMPNS``, CLOCK_REALTIME), turned
    into seconds since ``t0`` on the monotonic clock, so the segments of several captures (each
    namespace's ``lo``, a veth end) can be put in one order.
    """

    def __init__(self, sock: socket.socket, t0: float, dev: str = "lo") -> None:
        self.sock = sock
        self.t0 = t0
        self.dev = dev
        self.keep = (PACKET_OUTGOING,) if dev == "lo" else (PACKET_OUTGOING, PACKET_HOST)
        self.frames = 0  # every frame read (both copies on lo)
        self.kept = 0
        self._buf = bytearray(SNAPLEN)

    @classmethod
    def open(cls, netns_pid: int, t0: float, dev: str = "lo") -> Capture:
        return cls(_open_in_netns(f"/proc/{netns_pid}/ns/net", dev), t0, dev)

    def drain(self, quiet: float = DRAIN_QUIET, limit: float = DRAIN_MAX) -> list[RawSegment]:
        """Every segment sent since the last drain, in order.

        Reads what is queued, then keeps reading until nothing new came for ``quiet`` seconds
        (bounded by ``limit``): an ACK that loopback's softirq sends in answer to the step's last
        segment belongs to this step, not to the next one.
        """
        out: list[RawSegment] = []
        deadline = time.monotonic() + limit
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            got = self._read_queued(out)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not got and not poller.poll(int(min(quiet, left) * 1000) or 1):
                break
        return out

    def _stamp(self, ancdata: list[tuple[int, int, bytes]]) -> float:
        """The frame's kernel timestamp in seconds since t0 (monotonic), or now without one."""
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack_from("@qq", data)
                return sec + nsec / 1e9 - (time.time() - time.monotonic()) - self.t0
        return time.monotonic() - self.t0

    def _read_queued(self, out: list[RawSegment]) -> int:
        n = 0
        while True:
            try:
                size, anc, _flags, addr = self.sock.recvmsg_into(
                    [self._buf], CMSG_SPACE_TIMESPEC, socket.MSG_TRUNC)
            except BlockingIOError:
                return n
            n += 1
            self.frames += 1
            if addr[2] not in self.keep:
                continue  # the receiving copy of a frame already seen going out
            seg = parse_frame(bytes(self._buf[:min(size, SNAPLEN)]), size)
            if seg is None:
                continue
            seg.time = round(self._stamp(anc), 6)
            self.kept += 1
            out.append(seg)

    def close(self) -> None:
        self.sock.close()
