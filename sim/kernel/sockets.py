"""Open sockets (``struct socket`` + ``struct sock``/TCB), socket() validation and socket options."""

from __future__ import annotations

import functools
import ipaddress
from collections import deque
from typing import Any

from .addr import ip_addr
from . import buffers
from .errors import SysError
from .ports import V4_ANY, split_addr
from .rules import fact, rule
from .tcp_states import State

SS_UNCONNECTED, SS_CONNECTING, SS_CONNECTED, SS_DISCONNECTING = range(1, 5)
TCP_MIN_MSS, MAX_TCP_WINDOW = 88, 32767  # include/net/tcp.h: the bounds of TCP_MAXSEG
RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2


class Sock:
    """One open socket: the VFS ``struct socket`` and its protocol ``struct sock`` (the TCB for TCP)."""

    _ids = 0

    def __init__(self, family: int, kind: str, uid: int, sndbuf: int, rcvbuf: int, v6only_default: bool):
        Sock._ids += 1
        self.id = Sock._ids
        self.family = family  # 4 or 6
        self.kind = kind  # "tcp", "udp", "raw"
        self.uid = uid
        # options
        self.reuse = False
        self.reuseport = False
        self.linger: tuple[int, int] = (0, 0)
        self.v6only_opt = v6only_default
        self.bind_no_port = False
        self.nodelay = 0
        self.keepalive = 0
        self.linger2 = 0
        self.syn_retries: int | None = None
        self.user_mss = 0  # tp->rx_opt.user_mss (TCP_MAXSEG)
        self.window_clamp = 0  # tp->window_clamp (0 until set or connected)
        self.user_timeout = 0  # icsk_user_timeout, ms
        self.rcvlowat = 1  # sk_rcvlowat
        self.port_range = 0  # inet->local_port_range: (high << 16) | low, 0 when unset
        self.sndbuf, self.rcvbuf = sndbuf, rcvbuf
        self.snd_lock = self.rcv_lock = False
        # addressing / bind state
        self.tcp_state = int(State.CLOSE)
        self.sock_state = SS_UNCONNECTED
        self.addr6: ipaddress.IPv6Address | None = ipaddress.IPv6Address("::") if family == 6 else None
        self.saddr4 = V4_ANY
        self.laddr: str = "::" if family == 6 else "0.0.0.0"
        self.lport = 0
        self.sport = 0
        self.raddr: str | None = None
        self.rport = 0
        self.bindport_lock = False  # SOCK_BINDPORT_LOCK: keeps the port until close()
        self.bindaddr_lock = False  # SOCK_BINDADDR_LOCK: bind() chose the address
        self.connect_bind = False  # SOCK_CONNECT_BIND: the port came from connect()
        self.sent_syn = False  # connect() got as far as sending a SYN (the socket went SYN_SENT)
        self.listen_stopped = False  # shutdown(SHUT_RD) stopped this socket's listening
        self.in_bhash = False
        self.in_ehash = False
        # listener
        self.backlog = 0
        self.accept_q: deque[Sock] = deque()
        self.parent: Sock | None = None
        self.is_request = False
        self.listen_overflows = 0
        # connection
        self.err: str | None = None  # sk_err (pending error)
        self.shutdown = 0
        self.done = False  # SOCK_DONE: FIN received
        self.dead = False  # SOCK_DEAD: orphaned (no file refers to it)
        self.rcv_q = 0  # bytes received, not yet read (SIOCINQ)
        self.rcv_nxt = 0  # total bytes received
        self.write_seq = 0  # total bytes queued by the application
        self.snd_nxt = 0  # total bytes transmitted
        self.snd_una = 0  # total bytes acknowledged by the peer
        self.snd_edge = 0  # right edge of the peer's window (ack + wnd)
        self.max_window = 0  # tp->max_window: the largest window the peer offered
        self.syn_unacked = False  # our SYN took a sequence number the peer never acknowledged
        self.seq_gap = 0  # write_seq moved by tcp_disconnect(): max_window + 2
        self.purged = 0  # bytes of write_seq - snd_una freed by tcp_write_queue_purge()
        self.nospace = False  # SOCK_NOSPACE
        self.mapped_ops = False  # AF_INET6 socket switched to the ipv6_mapped ops by a v4 connect
        self.blackhole = False  # transmits through ops that cannot reach its peer
        # tp->scaling_ratio (payload per 256 bytes of truesize): TCP_DEFAULT_SCALING_RATIO until
        # tcp_measure_rcv_mss() learns it from an skb
        self.scaling_ratio = 128
        self.rcv_skbs: list = []  # the receive queue's skbs (skbuff.RcvSkb), oldest first
        self.rmem_alloc = 0  # sk_rmem_alloc: the truesize of those skbs
        self.backlog_len = 0  # sk_backlog.len: truesize waiting in the backlog of an owned socket
        self.rcv_lss = 0  # icsk_ack.last_seg_size
        self.mss_cache = 0  # tp->mss_cache: the sending MSS fixed by tcp_sync_mss() (0 until first used)
        self.fin_pending = False
        self.fin_sent = False
        self.fin_acked = False
        self.syn_gen = 0
        self.syn_tries = 0
        self.used_ts = False
        self.established_at: float | None = None
        self.tcp_init_sock()

    def tcp_init_sock(self) -> None:
        """tcp_init_sock() (net/ipv4/tcp.c): the fields that shape the connection's segments."""
        # receive window (tcp_select_window(); the wire's numbers: the SYN takes number 0)
        self.rcv_wnd = 0  # tp->rcv_wnd: the window last offered
        self.rcv_wup = 1  # tp->rcv_wup: rcv_nxt when it was offered
        self.rcv_wscale = 0  # tp->rx_opt.rcv_wscale
        self.rcv_ssthresh = 0  # tp->rcv_ssthresh
        self.window_clamp = 0  # tp->window_clamp
        self.rcv_mss = 536  # icsk_ack.rcv_mss: tcp_initialize_rcv_mss() starts at TCP_MSS_DEFAULT
        self.pushed_seq = 0  # tp->pushed_seq: the last byte marked PSH
        self.peer_max_window = 0  # tp->max_window, from the window fields the peer sent
        self.snd_wscale = 0  # tp->rx_opt.snd_wscale: the peer's window scale
        self.dsack = False  # the next pure ACK reports a duplicate segment (D-SACK, RFC 2883)
        self.syn_start = 0.0  # tp->retrans_stamp: when the first SYN went out
        self.ts_recent = False  # tp->rx_opt.ts_recent_stamp: inherited from a reused TIME_WAIT
        self.v4_addrs: tuple[str, str] | None = None  # inet_saddr, inet_daddr of a v4-mapped connect
        self.isn: int | None = None  # our initial sequence number (a new one per connect attempt)
        self.peer_isn = 0  # the peer's, from its SYN
        self.psh_marks: set[int] = set()  # ends of writes (tcp_push() marks the tail skb PSH)

    @property
    def snd_q(self) -> int:
        """Bytes queued and not yet acknowledged whose buffers are still held (sk_wmem_queued's
        payload): write_seq - snd_una, less what tcp_write_queue_purge() freed."""
        return self.write_seq - self.snd_una - self.purged

    @property
    def unsent(self) -> int:
        """Bytes queued and not yet sent (none once tcp_write_queue_purge() freed the queue)."""
        return 0 if self.purged else self.write_seq - self.snd_nxt

    # ---- bind-rule view (see ports.py)
    @property
    def ipv6only(self) -> bool:
        return self.family == 6 and self.v6only_opt

    def set_local(self, addr: str, port: int, bind: bool = False) -> None:
        fam = self.family
        if fam == 6 and ":" not in addr:
            addr = "::" if addr == "0.0.0.0" else f"::ffff:{addr}"  # an IPv4 peer of an AF_INET6 socket
        a6, s4, only = split_addr(fam, addr, self.v6only_opt)
        self.addr6, self.saddr4 = a6, s4
        if bind and fam == 6 and only and not self.v6only_opt:
            self.v6only_opt = True  # inet6_bind(): binding a specific IPv6 address sets ipv6only
        self.laddr = norm_addr(addr)
        self.lport = port  # inet_num: the port this socket holds in the bind table
        if port:
            self.sport = port  # inet_sport: what getsockname() shows, kept after the port is released

    def key(self) -> tuple:
        return (self.laddr, self.lport, self.raddr, self.rport)

    def describe(self) -> str:
        st = State(self.tcp_state).name if self.kind == "tcp" else self.kind.upper()
        r = f" -> {self.raddr}:{self.rport}" if self.raddr else ""
        return f"{self.kind} {self.laddr}:{self.lport}{r} {st}"


@functools.lru_cache(maxsize=4096)
def norm_addr(addr: str) -> str:
    """4-tuple form of an address: IPv4-mapped IPv6 addresses become plain IPv4."""
    ip = ip_addr(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


FAMILIES = {"AF_INET": 4, "AF_INET6": 6}
PROTOS = {0: 0, "IPPROTO_TCP": 6, "IPPROTO_UDP": 17}


@rule("socket.create", "sockets")
def socket_kind(family: str, type_: str, protocol: Any, privileged: bool) -> str:
    """inet_create() in net/ipv4/af_inet.c: the (type, protocol) pair must match an inetsw entry."""
    if family not in FAMILIES:
        raise SysError("EAFNOSUPPORT", "socket.create")
    proto = PROTOS.get(protocol, protocol)
    table = {"SOCK_STREAM": (6, "tcp"), "SOCK_DGRAM": (17, "udp")}
    if type_ == "SOCK_RAW":
        if proto == 0:
            fact("SOCK_RAW needs an explicit protocol (IPPROTO_IP is no wildcard for raw)")
            raise SysError("EPROTONOSUPPORT", "socket.create")
        if not privileged:
            fact("SOCK_RAW needs CAP_NET_RAW")
            raise SysError("EPERM", "socket.create")
        return "raw"
    if type_ not in table:
        fact(f"{family} has no {type_} protocol registered (inetsw)")
        raise SysError("ESOCKTNOSUPPORT", "socket.create")
    want, kind = table[type_]
    if proto not in (0, want):
        fact(f"{type_} with protocol {protocol} has no inetsw entry")
        raise SysError("EPROTONOSUPPORT", "socket.create")
    fact(f"{family}/{type_}/{protocol or 0} selects {kind.upper()}")
    return kind


SOL = {
    "SO_REUSEADDR": "reuse", "SO_REUSEPORT": "reuseport", "SO_KEEPALIVE": "keepalive",
    "TCP_NODELAY": "nodelay", "IP_BIND_ADDRESS_NO_PORT": "bind_no_port",
}


LEVELS = {"IP_BIND_ADDRESS_NO_PORT": "ip", "IP_LOCAL_PORT_RANGE": "ip", "IPV6_V6ONLY": "ipv6"}


def level_of(opt: str) -> str:
    """The option's level: SOL_SOCKET, SOL_IP, SOL_IPV6 or SOL_TCP."""
    return LEVELS.get(opt) or ("tcp" if opt.startswith("TCP_") else "socket")


@rule("sockopt.optlen", "sockets", "minor")
def check_optlen(opt: str, optlen: int | None) -> None:
    """__sys_setsockopt() in net/socket.c (negative length), sk_setsockopt() and do_tcp_setsockopt() (less than an int), do_ip_setsockopt() IP_LOCAL_PORT_RANGE (exactly a u32)."""
    if optlen is None:
        return
    size = 8 if opt == "SO_LINGER" else 4
    lvl = level_of(opt)
    if optlen < 0:
        fact(f"optlen {optlen} is negative")
        raise SysError("EINVAL", "sockopt.optlen")
    if opt == "IP_LOCAL_PORT_RANGE" and optlen != 4:
        fact(f"IP_LOCAL_PORT_RANGE takes exactly 4 bytes, optlen {optlen}")
        raise SysError("EINVAL", "sockopt.optlen")
    if lvl in ("socket", "tcp") and optlen < size:
        fact(f"{opt} needs {size} bytes, optlen {optlen}")
        raise SysError("EINVAL", "sockopt.optlen")
    if lvl == "ipv6" and optlen < 4:
        fact(f"{opt} needs an int, optlen {optlen}")
        raise SysError("EINVAL", "sockopt.optlen")


def short_int(value: int, optlen: int | None) -> int:
    """An int option read from fewer bytes than an int (do_ip_setsockopt() reads one byte)."""
    if optlen is None or optlen >= 4:
        return value
    return value & 0xFF if optlen >= 1 else 0


NEWER_OPTIONS = ("TCP_WINDOW_CLAMP", "TCP_USER_TIMEOUT", "SO_RCVBUFFORCE", "SO_SNDBUFFORCE", "SO_RCVLOWAT",
                 "IP_LOCAL_PORT_RANGE")


def set_newer_option(sk: Sock, opt: str, value: Any, sysctls: dict, capable: Any) -> None:
    """The options of sk_setsockopt(), do_tcp_setsockopt() and do_ip_setsockopt() the peer suites exercise."""
    from .tcp import tcp_set_rcvlowat, tcp_set_window_clamp  # tcp.py imports this module

    if opt == "TCP_WINDOW_CLAMP":
        sk.window_clamp = tcp_set_window_clamp(sk.window_clamp, int(value), sk.tcp_state == State.CLOSE)
    elif opt == "TCP_USER_TIMEOUT":
        if int(value) < 0:
            fact("TCP_USER_TIMEOUT must not be negative")
            raise SysError("EINVAL", "sockopt.set")
        sk.user_timeout = int(value)
    if opt in ("SO_RCVBUFFORCE", "SO_SNDBUFFORCE"):
        if capable is not None and not capable("CAP_NET_ADMIN"):
            fact(f"{opt} needs CAP_NET_ADMIN (sockopt_capable)")
            raise SysError("EPERM", "sockopt.set")
        if opt == "SO_RCVBUFFORCE":
            sk.rcvbuf = buffers.set_rcvbuf(min(int(value), (1 << 30) - 1), sysctls["rmem_max"], force=True)
            sk.rcv_lock = True
        else:
            sk.sndbuf = buffers.set_sndbuf(min(int(value), (1 << 30) - 1), sysctls["wmem_max"], force=True)
            sk.snd_lock = True
    elif opt == "SO_RCVLOWAT":
        v = int(value)
        v = (1 << 31) - 1 if v < 0 else v
        sk.rcvlowat = tcp_set_rcvlowat(v, sk.rcvbuf, sk.rcv_lock, sysctls["tcp_rmem"][2])
    elif opt == "IP_LOCAL_PORT_RANGE":
        lo, hi = (value if isinstance(value, (tuple, list)) else (value & 0xFFFF, (value >> 16) & 0xFFFF))
        lo, hi = int(lo) & 0xFFFF, int(hi) & 0xFFFF
        if lo and hi and lo > hi:
            fact(f"IP_LOCAL_PORT_RANGE {lo}-{hi}: low above high (do_ip_setsockopt)")
            raise SysError("EINVAL", "sockopt.set")
        sk.port_range = hi << 16 | lo


@rule("sockopt.set", "sockets")
def setsockopt(sk: Sock, opt: str, value: Any, sysctls: dict, optlen: int | None = None,
               capable: Any = None) -> None:
    """sk_setsockopt() in net/core/sock.c; do_tcp_setsockopt(); do_ipv6_setsockopt(); socket(7), tcp(7), ipv6(7)."""
    from .tcp import tcp_set_linger2  # tcp.py imports this module

    check_optlen(opt, optlen)
    if isinstance(value, int) and level_of(opt) == "ip":
        value = short_int(value, optlen)
    if opt in SOL:
        if not isinstance(value, int):
            raise SysError("EINVAL", "sockopt.set")
        setattr(sk, SOL[opt], 1 if value else 0)
        if opt in ("SO_REUSEADDR", "SO_REUSEPORT"):
            sk_attr = SOL[opt]
            setattr(sk, sk_attr, bool(value))
        return
    if opt == "SO_LINGER":
        if not isinstance(value, (tuple, list)):
            raise SysError("EINVAL", "sockopt.set")
        sk.linger = (1 if value[0] else 0, max(0, int(value[1])))
        return
    if opt == "SO_SNDBUF":
        sk.sndbuf = buffers.set_sndbuf(int(value), sysctls["wmem_max"])
        sk.snd_lock = True
        return
    if opt == "SO_RCVBUF":
        sk.rcvbuf = buffers.set_rcvbuf(int(value), sysctls["rmem_max"])
        sk.rcv_lock = True
        return
    if opt == "IPV6_V6ONLY":
        if sk.family != 6:
            fact("IPV6_V6ONLY is an IPPROTO_IPV6 option: an AF_INET socket has no such level")
            raise SysError("ENOPROTOOPT", "sockopt.set")
        if sk.lport or sk.in_bhash:
            fact("do_ipv6_setsockopt(): IPV6_V6ONLY cannot change once the socket is bound")
            raise SysError("EINVAL", "sockopt.set")
        sk.v6only_opt = bool(value)
        return
    if opt == "TCP_LINGER2":
        sk.linger2 = tcp_set_linger2(int(value))
        return
    if opt in NEWER_OPTIONS:
        set_newer_option(sk, opt, value, sysctls, capable)
        return
    if opt == "TCP_SYNCNT":
        if not 1 <= int(value) <= 127:
            raise SysError("EINVAL", "sockopt.set")
        sk.syn_retries = int(value)
        return
    if opt == "TCP_MAXSEG":
        v = int(value)
        if v and not TCP_MIN_MSS <= v <= MAX_TCP_WINDOW:
            fact(f"TCP_MAXSEG {v} is outside {TCP_MIN_MSS}-{MAX_TCP_WINDOW} (do_tcp_setsockopt)")
            raise SysError("EINVAL", "sockopt.set")
        sk.user_mss = v
        return
    if opt in ("SO_ERROR", "SO_TYPE", "SO_ACCEPTCONN"):
        fact(f"{opt} is read-only")
        raise SysError("ENOPROTOOPT", "sockopt.set")
    fact(f"{opt} is not a Linux socket option")
    raise SysError("ENOPROTOOPT", "sockopt.set")


@rule("sockopt.get", "sockets")
def getsockopt(sk: Sock, opt: str) -> Any:
    """sk_getsockopt() in net/core/sock.c; do_tcp_getsockopt(); socket(7), tcp(7)."""
    if opt in SOL:
        return int(getattr(sk, SOL[opt]))
    if opt == "SO_LINGER":
        return list(sk.linger)
    if opt == "SO_SNDBUF":
        return sk.sndbuf
    if opt == "SO_RCVBUF":
        return sk.rcvbuf
    if opt == "SO_ERROR":
        err, sk.err = sk.err, None
        return err or 0
    if opt == "SO_TYPE":
        return {"tcp": 1, "udp": 2, "raw": 3}[sk.kind]
    if opt == "SO_ACCEPTCONN":
        return int(sk.tcp_state == State.LISTEN)
    if opt == "IPV6_V6ONLY":
        if sk.family != 6:
            raise SysError("ENOPROTOOPT", "sockopt.get")
        return int(sk.v6only_opt)
    if opt == "TCP_LINGER2":
        return sk.linger2
    if opt == "TCP_WINDOW_CLAMP":
        return sk.window_clamp
    if opt == "TCP_USER_TIMEOUT":
        return sk.user_timeout
    if opt == "SO_RCVLOWAT":
        return sk.rcvlowat
    if opt == "IP_LOCAL_PORT_RANGE":
        return [sk.port_range & 0xFFFF, sk.port_range >> 16]
    if opt == "TCP_SYNCNT":
        return sk.syn_retries or 0
    if opt == "TCP_MAXSEG":
        if sk.user_mss and sk.tcp_state in (State.CLOSE, State.LISTEN):
            return sk.user_mss  # do_tcp_getsockopt(): rx_opt.user_mss before a connection
        return 536 if sk.tcp_state != State.ESTABLISHED else 32741
    fact(f"{opt} cannot be read with getsockopt")
    raise SysError("ENOPROTOOPT", "sockopt.get")


@rule("sockopt.get_len", "sockets", "minor")
def getsockopt_len(opt: str, value: Any, optlen: int) -> tuple[Any, int]:
    """sk_getsockopt() in net/core/sock.c, do_tcp_getsockopt() in net/ipv4/tcp.c, do_ip_getsockopt() in net/ipv4/ip_sockglue.c: the value cut to the buffer length given."""
    lvl = level_of(opt)
    size = 8 if opt == "SO_LINGER" else 4
    if lvl in ("socket", "ip") and optlen < 0:
        fact(f"optlen {optlen} is negative")
        raise SysError("EINVAL", "sockopt.get_len")
    if lvl in ("tcp", "ipv6"):
        n = min(optlen & 0xFFFFFFFF, size)  # min_t(unsigned int, len, sizeof(int))
    elif lvl == "ip" and 0 < optlen < 4 and isinstance(value, int) and 0 <= value <= 255:
        n = 1
    else:
        n = min(optlen, size)
    if isinstance(value, int) and n < 4:
        value = value & ((1 << (8 * n)) - 1) if n else 0
    return value, n
