"""Making the private network namespace: unshare, ``lo`` up, the scenario's sysctls.

Part of the namespace driver (``driver.py``), which runs as a plain script: standard library
only, nothing from ``sim``. ``loopbench`` uses the same set-up for its own namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

try:
    from .sockinfo import errname  # imported as sim.real.netns
except ImportError:
    from sockinfo import errname  # beside driver.py, run as a plain script

try:
    _unshare = ctypes.CDLL(None, use_errno=True).unshare
    _unshare.restype, _unshare.argtypes = ctypes.c_int, [ctypes.c_int]
except (OSError, AttributeError):  # not Linux: nothing here can run, but importing must not fail
    _unshare = None

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CHILD_EHASH = 8192  # buckets of the namespace's own established-connection hash table


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unshare_or_raise(flags: int, what: str) -> None:
    if _unshare(flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"unshare({what}): {os.strerror(e)}")


def enter_netns() -> dict:
    """unshare(CLONE_NEWNET) as root, or a user namespace plus a network namespace otherwise.

    A new namespace shares the host's established-connection hash table (262144 buckets here),
    and every read of /proc/net/tcp walks all of it (measured 7 ms per tcp+tcp6 read). So the
    first namespace only sets ``tcp_child_ehash_entries`` -- a sysctl of that throwaway
    namespace, read when a namespace is created from it -- and a second unshare makes the
    scenario's namespace with a private table of CHILD_EHASH buckets (0.2 ms per read).
    """
    if os.geteuid() == 0:
        _unshare_or_raise(CLONE_NEWNET, "CLONE_NEWNET")
        mode = "netns"
    else:
        uid, gid = os.getuid(), os.getgid()
        _unshare_or_raise(CLONE_NEWUSER | CLONE_NEWNET, "CLONE_NEWUSER|CLONE_NEWNET")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
        mode = "userns+netns"
    ehash = None
    try:
        _write("/proc/sys/net/ipv4/tcp_child_ehash_entries", str(CHILD_EHASH))
        _unshare_or_raise(CLONE_NEWNET, "CLONE_NEWNET")
        ehash = int(_read("/proc/sys/net/ipv4/tcp_ehash_entries"))
    except (OSError, ValueError):
        pass  # older kernel or no permission: keep the first namespace (shared table)
    return {"mode": mode, "ehash": ehash}


def lo_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def apply_sysctls(items: list[list[str]]) -> dict:
    """Write each (relative /proc/sys path, text) pair; several passes, since some depend on
    each other (ip_local_port_range's low end may not go below ip_unprivileged_port_start)."""
    absent, errors, values = [], {}, {}
    pending = []
    for path, text in items:
        if os.path.exists("/proc/sys/" + path):
            pending.append((path, text))
        else:
            absent.append(path)
    for _ in range(3):
        failed = []
        for path, text in pending:
            try:
                fd = os.open("/proc/sys/" + path, os.O_WRONLY)
                try:
                    os.write(fd, (text + "\n").encode())
                finally:
                    os.close(fd)
                errors.pop(path, None)
            except OSError as exc:
                errors[path] = errname(exc.errno)
                failed.append((path, text))
        pending = failed
        if not pending:
            break
    for path, _ in items:
        if path not in absent:
            try:
                values[path] = " ".join(_read("/proc/sys/" + path).split())
            except OSError as exc:
                values[path] = errname(exc.errno)
    return {"absent": absent, "errors": errors, "values": values}
