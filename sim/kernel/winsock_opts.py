"""Winsock socket options (a part of :class:`~.winsock.WinsockKernel`): setsockopt/getsockopt as
Windows answers them -- values, sizes, defaults and option lengths.

What Windows does is taken from Wine's conformance tests (dlls/ws2_32/tests/sock.c, run on
Windows): test_set_getsockopt (values and its option-length table), test_timeout (SO_RCVTIMEO),
test_extendedSocketOptions (SO_DONTLINGER), test_connect_time (SO_CONNECT_TIME),
test_accept_inheritance (what an accepted socket copies from its listener); and from the SOL_SOCKET
Socket Options page (Learn/winsock/sol-socket-socket-options). The bracketed tags ([W16] ...) are
the references of sim/kernel/winsock.py.
"""

from __future__ import annotations

from typing import Any

from ..personality.windows import WSA_NUMBERS
from .errors import SysError
from .handles import Process
from .rules import MINOR, fact, rule
from .sockets import Sock
from .tcp_states import State
from .winsock_tables import DOCUMENTED, LINUX_ONLY_OPTIONS

# Options Windows keeps in one byte: a value is read from (and reported in) its low byte only
# (test_set_getsockopt's option-length table: size 1 for a 4-byte buffer).
BYTE_OPTIONS = frozenset({"TCP_NODELAY", "SO_KEEPALIVE", "IPV6_V6ONLY", "SO_DONTROUTE"})
# SOL_SOCKET BOOL options: any nonzero value reads back 1; an optlen of 0 is accepted.
BOOL_OPTIONS = frozenset({"SO_REUSEADDR", "SO_EXCLUSIVEADDRUSE", "SO_DONTLINGER", "SO_OOBINLINE"})
SHORT_LEN_OK = BYTE_OPTIONS | BOOL_OPTIONS  # accept an optlen of 1 or 2
TIMEOUTS = {"SO_RCVTIMEO": "win_rcvtimeo", "SO_SNDTIMEO": "win_sndtimeo"}  # DWORD milliseconds
READ_ONLY = frozenset({"SO_TYPE", "SO_ACCEPTCONN", "SO_CONNECT_TIME"})
# Options Winsock stores and reads back, with the value a new socket reads (the socket's attribute).
# SO_DEBUG: 0 (Wine test_so_debug); SO_DONTROUTE: off (its default is not asserted, inferred);
# TCP_KEEPALIVE / TCP_KEEPINTVL (seconds) and TCP_KEEPCNT: the host's KeepAliveTime (2 h),
# KeepAliveInterval (1 s) and the 10 probes of Windows Vista and later (TCP/IP registry values and
# SIO_KEEPALIVE_VALS pages; the defaults are not asserted by the Wine tests: inferred).
STORED = {"SO_DEBUG": ("win_debug", 0), "SO_DONTROUTE": ("win_dontroute", 0),
          "TCP_KEEPALIVE": ("win_keepidle", 7200), "TCP_KEEPINTVL": ("win_keepintvl", 1),
          "TCP_KEEPCNT": ("win_keepcnt", 10)}
TRUTH_VALUES = frozenset({"SO_DEBUG", "SO_DONTROUTE"})  # any nonzero value reads back 1
TCP_KEEPCNT_MAX = 255  # Wine test_set_getsockopt: 5 is kept, 0x100 is WSAEINVAL; 255 itself is inferred
NOT_CONNECTED = 0xFFFFFFFF  # SO_CONNECT_TIME of a socket that is not connected
CONNECTED_STATES = (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT1, State.FIN_WAIT2,
                    State.CLOSING, State.LAST_ACK)
# What an accepted socket copies from its listener beyond the shared model's list
INHERITED = ("win_rcvtimeo", "win_sndtimeo", "win_oobinline")


class WinsockOptions:
    """setsockopt()/getsockopt() on a Windows host."""

    # ------------------------------------------------------------------ setsockopt
    def do_sock_setsockopt(self, p: Process, sock: int, opt: str, value: Any = 1,
                           optlen: int | None = None, null: Any = ()) -> int:
        _, sk = self.sockfd_lookup(p, sock)
        self.check_optval(opt, null)
        if sk.kind != "tcp" and opt.startswith("TCP_"):
            fact(f"{opt} is an IPPROTO_TCP option: this socket is not TCP")
            raise SysError("ENOPROTOOPT", "win.setsockopt")
        if optlen is not None:
            value = self._set_optlen(opt, value, optlen)
            if value is None:
                return 0
        self.sock_setsockopt(sk, opt, value)
        return 0

    @rule("win.sockopt_optlen", "windows", "sockets", MINOR)
    def _set_optlen(self, opt: str, value: Any, optlen: int) -> Any:
        """Wine dlls/ws2_32/tests/sock.c, test_set_getsockopt option-length table (asserted on Windows): a SOL_SOCKET BOOL accepts any length (0: nothing is read), the one-byte and BOOL options accept 1 or 2 bytes, the others WSAEFAULT below 4; a negative length is WSAENOBUFS for one-byte and IPPROTO_TCP options (setsockopt function, Learn/api/winsock/nf-winsock-setsockopt: WSAEFAULT when optlen is too small)."""
        if optlen < 0:
            if opt in BYTE_OPTIONS or opt.startswith("TCP_"):
                fact(f"optlen {optlen} for {opt}: WSAENOBUFS")
                raise SysError("ENOBUFS", "win.sockopt_optlen")
            self.decided("win.sockopt_optlen", f"optlen {optlen}: a SOL_SOCKET option reads its whole value anyway")
            return value
        if optlen == 0:
            if opt in BOOL_OPTIONS:
                self.decided("win.sockopt_optlen", f"{opt} with optlen 0: accepted, nothing is read "
                             "(the option keeps its value)")
                return None
            fact(f"{opt} needs a value, optlen 0")
            raise SysError("EFAULT", "win.sockopt_optlen")
        if optlen < 4 and opt not in SHORT_LEN_OK:
            fact(f"{opt} needs 4 bytes, optlen {optlen}")
            raise SysError("EFAULT", "win.sockopt_optlen")
        if optlen < 4:
            self.decided("win.sockopt_optlen", f"{opt} takes {optlen} byte(s)")
            return value & ((1 << (8 * optlen)) - 1) if isinstance(value, int) else value
        return value

    @rule("win.setsockopt", "windows", "sockets")
    def sock_setsockopt(self, sk: Sock, opt: str, value: Any) -> None:
        """setsockopt function and SOL_SOCKET Socket Options (Learn/winsock/sol-socket-socket-options): SO_EXCLUSIVEADDRUSE, SO_DONTLINGER (the inverse of SO_LINGER's l_onoff), SO_OOBINLINE, SO_DEBUG, SO_DONTROUTE, SO_RCVTIMEO/SO_SNDTIMEO (DWORD milliseconds); SO_SNDBUF/SO_RCVBUF set the buffer space as given; IPPROTO_TCP TCP_KEEPALIVE/TCP_KEEPINTVL (seconds), TCP_KEEPCNT."""
        if opt in ("SO_EXCLUSIVEADDRUSE", "SO_REUSEADDR") and isinstance(value, int) and value:
            self._reuse_exclusive_conflict(sk, opt)
        if opt == "SO_ERROR" and isinstance(value, int):
            sk.win_so_error = value
            fact(f"SO_ERROR set to {value}: getsockopt(SO_ERROR) reads it back")
            return
        if opt in BYTE_OPTIONS and isinstance(value, int):
            value = self._byte_option(opt, value)
        if opt in LINUX_ONLY_OPTIONS or opt in READ_ONLY:
            fact(f"{opt} is not a Winsock option" if opt in LINUX_ONLY_OPTIONS else f"{opt} can only be read")
            raise SysError("ENOPROTOOPT", "win.setsockopt")
        if not isinstance(value, int) and opt != "SO_LINGER":
            raise SysError("EINVAL", "win.setsockopt")
        if opt == "SO_EXCLUSIVEADDRUSE":
            sk.exclusive = bool(value)
            if sk.lport:
                fact("set after bind(): it has no effect on the bind already made")
        elif opt == "SO_DONTLINGER":
            onoff, secs = sk.linger
            sk.linger = (0 if value else 1, secs)
            fact(f"SO_DONTLINGER {int(bool(value))}: SO_LINGER becomes {{{sk.linger[0]}, {secs}}}")
        elif opt == "SO_OOBINLINE":
            sk.win_oobinline = bool(value)
        elif opt in STORED:
            self._stored_option(sk, opt, value)
        elif opt in TIMEOUTS:
            setattr(sk, TIMEOUTS[opt], value & 0xFFFFFFFF)
            fact(f"{opt} {value & 0xFFFFFFFF} ms (0: wait forever)")
        elif opt in ("SO_SNDBUF", "SO_RCVBUF"):
            if value < 0:
                raise SysError("EINVAL", "win.setsockopt")
            if opt == "SO_SNDBUF":
                sk.sndbuf, sk.snd_lock = value, True  # setting SO_SNDBUF turns dynamic send buffering off [W16]
            else:
                sk.rcvbuf, sk.rcv_lock = value, True
            fact(f"{opt} {value}: stored as given (no doubling, no sysctl cap; inferred)")
        else:
            self._retag("win.setsockopt", DOCUMENTED["sockopt"], super().sock_setsockopt, sk, opt, value)

    def _stored_option(self, sk: Sock, opt: str, value: int) -> None:
        """SO_DEBUG and SO_DONTROUTE keep a truth value; TCP_KEEPALIVE, TCP_KEEPINTVL and
        TCP_KEEPCNT a DWORD (Wine test_set_getsockopt, test_so_debug; IPPROTO_TCP socket options)."""
        if opt.startswith("TCP_") and sk.kind != "tcp":
            raise SysError("ENOPROTOOPT", "win.setsockopt")
        if opt == "TCP_KEEPCNT" and not 0 <= value <= TCP_KEEPCNT_MAX:
            self._keepcnt_range(value)
        if opt in TRUTH_VALUES:
            value = int(bool(value))
        elif value < 0:
            fact(f"{opt} {value}: a DWORD count of seconds or probes cannot be negative (inferred)")
            raise SysError("EINVAL", "win.setsockopt")
        setattr(sk, STORED[opt][0], value)
        fact(f"{opt} {value}" + (" (any nonzero value is stored as 1)" if opt in TRUTH_VALUES else ""))

    @rule("win.keepcnt_range", "windows", "sockets")
    def _keepcnt_range(self, value: int) -> None:
        """Wine dlls/ws2_32/tests/sock.c, test_set_getsockopt option-length table (asserted on Windows): TCP_KEEPCNT refuses 0x100 with WSAEINVAL while TCP_KEEPALIVE and TCP_KEEPINTVL keep it (the bound, 255, is inferred); IPPROTO_TCP socket options (Learn/winsock/ipproto-tcp-socket-options): TCP_KEEPCNT is the number of keep-alive probes."""
        fact(f"TCP_KEEPCNT {value}: more than {TCP_KEEPCNT_MAX} probes")
        raise SysError("EINVAL", "win.keepcnt_range")

    @rule("win.reuse_exclusive_conflict", "windows", "sockets")
    def _reuse_exclusive_conflict(self, sk: Sock, opt: str) -> None:
        """Wine dlls/ws2_32/tests/sock.c, test_reuseaddr and test_ipv6only (asserted on Windows): SO_REUSEADDR and SO_EXCLUSIVEADDRUSE cannot both be on; setting the second fails with WSAEINVAL (Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE, Learn/winsock)."""
        other = "SO_REUSEADDR" if opt == "SO_EXCLUSIVEADDRUSE" else "SO_EXCLUSIVEADDRUSE"
        on = bool(sk.reuse) if other == "SO_REUSEADDR" else bool(getattr(sk, "exclusive", False))
        if on:
            fact(f"{other} is already set on this socket: the two options exclude each other")
            raise SysError("EINVAL", "win.reuse_exclusive_conflict")

    @rule("win.byte_option", "windows", "sockets", MINOR)
    def _byte_option(self, opt: str, value: int) -> int:
        """Wine dlls/ws2_32/tests/sock.c, test_set_getsockopt (asserted on Windows): TCP_NODELAY, SO_KEEPALIVE and IPV6_V6ONLY are kept in one byte, so 0x100 turns them off; IPPROTO_TCP and SOL_SOCKET Socket Options (Learn/winsock) call them BOOL or DWORD -- the assertion wins."""
        low = value & 0xFF
        if low != value:
            fact(f"{opt} {value:#x}: only the low byte counts, {low}")
        return low

    # ------------------------------------------------------------------ getsockopt
    @rule("win.getsockopt", "windows", "sockets")
    def do_sock_getsockopt(self, p: Process, sock: int, opt: str, optlen: int | None = None,
                           null: Any = ()) -> Any:
        """getsockopt function (Learn/api/winsock/nf-winsock-getsockopt): the option's current value; SO_CONNECT_TIME the seconds connected, 0xFFFFFFFF if not connected; WSAENOPROTOOPT for an option Winsock does not know, WSAEFAULT for a buffer too small."""
        _, sk = self.sockfd_lookup(p, sock)
        self.check_optval(opt, null)
        if opt in LINUX_ONLY_OPTIONS:
            fact(f"{opt} is not a Winsock option")
            raise SysError("ENOPROTOOPT", "win.getsockopt")
        size = self._get_optlen(opt, optlen)
        if opt == "SO_EXCLUSIVEADDRUSE":
            val: Any = int(getattr(sk, "exclusive", False))
        elif opt == "SO_ERROR":
            val = self._so_error(sk)
        elif opt == "SO_DONTLINGER":
            val = int(not sk.linger[0])
        elif opt == "SO_OOBINLINE":
            val = int(getattr(sk, "win_oobinline", False))
        elif opt in TIMEOUTS:
            val = getattr(sk, TIMEOUTS[opt], 0)
        elif opt in STORED:
            if opt.startswith("TCP_") and sk.kind != "tcp":
                raise SysError("ENOPROTOOPT", "win.getsockopt")
            val = getattr(sk, *STORED[opt])
        elif opt == "SO_CONNECT_TIME":
            val = self._connect_time(sk)
        else:
            val = self._retag("win.getsockopt", DOCUMENTED["sockopt"], super().do_sock_getsockopt, p, sock, opt)
        return val if size is None else {"value": val, "optlen": size}

    @rule("win.getsockopt_optlen", "windows", "sockets", MINOR)
    def _get_optlen(self, opt: str, optlen: int | None) -> int | None:
        """Wine dlls/ws2_32/tests/sock.c, test_set_getsockopt option-length table (asserted on Windows): a buffer of 0 or a negative length is WSAEFAULT; the one-byte and BOOL options fill 1 or 2 bytes (and report 1), the others WSAEFAULT below 4; one-byte options report size 1 even for a 4-byte buffer (getsockopt function, Learn/api/winsock/nf-winsock-getsockopt: WSAEFAULT when optlen is too small)."""
        if optlen is None:
            return None
        if optlen <= 0 or (optlen < 4 and opt not in SHORT_LEN_OK):
            fact(f"{opt}: a buffer of {optlen} byte(s) is too small")
            raise SysError("EFAULT", "win.getsockopt_optlen")
        size = 1 if opt in BYTE_OPTIONS or optlen < 4 else 4
        if size != min(optlen, 4):
            self.decided("win.getsockopt_optlen", f"{opt} fills {size} byte(s) of the {optlen} given")
        return size

    def _connect_time(self, sk: Sock) -> int:
        since = getattr(sk, "win_connected_at", None)
        if since is None or sk.tcp_state not in CONNECTED_STATES:
            fact("the socket is not connected: SO_CONNECT_TIME is 0xFFFFFFFF")
            return NOT_CONNECTED
        secs = int(self.now - since + 1e-9)
        fact(f"connected for {secs} s")
        return secs

    @rule("win.so_error", "windows", "sockets")
    def _so_error(self, sk: Sock) -> int:
        """Wine dlls/ws2_32/tests/sock.c, test_select, test_WSAPoll and test_tcp_reset (asserted on Windows): SO_ERROR holds a failed connect's error until a connect succeeds (reading does not clear it) and stays 0 after a reset; getsockopt function (Learn/api/winsock/nf-winsock-getsockopt) says it "returns and resets" -- the assertions win."""
        err = getattr(sk, "win_so_error", None)
        if err is None or err == 0:
            if sk.err:  # e.g. a reset by the peer: pending on the socket, not reported here
                self.decided("win.so_error", f"no failed connection attempt is recorded on this socket "
                             f"({sk.err} is not a connect failure): 0")
            else:
                fact("no failed connection attempt is recorded on this socket: 0")
            return 0
        if isinstance(err, int):
            self.decided("win.so_error", f"SO_ERROR was set to {err}: it reads back")
            return err
        text = f"the last connection attempt failed with {err}; reading SO_ERROR does not clear it"
        if err != sk.err:  # not merely the error still pending on the socket
            self.decided("win.so_error", text)
        else:
            fact(text)
        return WSA_NUMBERS.get(err, 0)

    @staticmethod
    def inherit_options(lsk: Sock, child: Sock) -> None:
        """Wine test_accept_inheritance: SO_RCVTIMEO, SO_SNDTIMEO and SO_OOBINLINE of the listener
        are the accepted socket's too (the shared model copies the others)."""
        for a in INHERITED:
            if hasattr(lsk, a) and not hasattr(child, a):
                setattr(child, a, getattr(lsk, a))
