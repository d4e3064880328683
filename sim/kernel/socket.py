"""net/socket.c: the socket-level calls that reach the protocol (socket, accept, socket options)."""

from __future__ import annotations

from typing import Any

from .errors import Block, SysError
from .handles import OpenFile, Process
from .rules import fact, rule
from .sockets import Sock, getsockopt, getsockopt_len, setsockopt, socket_kind
from .tcp_states import State


class SocketCalls:
    """Kernel functions of net/socket.c (a part of :class:`~.stack.Kernel`)."""

    def sockfd_lookup(self, p: Process, fd: int) -> tuple[OpenFile, Sock]:
        f = p.files.get(fd)
        return f, f.sock

    @rule("sys.socket", "sockets")
    def sys_socket(self, p: Process, family: str = "AF_INET", type: str = "SOCK_STREAM",
                   protocol: Any = 0, nonblock: bool = False, **_: Any) -> int:
        """__sys_socket() in net/socket.c: validate, reserve the lowest fd, then create the socket."""
        kind = socket_kind(family, type, protocol, "CAP_NET_RAW" in p.caps)
        fd = p.files.alloc_fd()
        self.files.charge(p.uid == 0)
        fam = 4 if family == "AF_INET" else 6
        sk = Sock(fam, kind, p.uid, self.sysctls["tcp_wmem"][1], self.sysctls["tcp_rmem"][1],
                  bool(self.sysctls["bindv6only"]))
        f = OpenFile(sk)
        f.nonblock = nonblock
        self.fd_install(p, fd, f)
        if kind == "tcp":
            self.socks.add(sk)
        return fd

    def do_sock_setsockopt(self, p: Process, sock: int, opt: str, value: Any = 1,
                           optlen: int | None = None) -> int:
        _, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp" and opt.startswith("TCP_"):
            raise SysError("ENOPROTOOPT", "sockopt.set")
        if optlen is None:
            self.sock_setsockopt(sk, opt, value)
        else:
            setsockopt(sk, opt, value, self.sysctls, optlen, p.capable)
        return 0

    def sock_setsockopt(self, sk: Sock, opt: str, value: Any) -> None:
        caller = self.caller
        setsockopt(sk, opt, value, self.sysctls, None, caller.capable if caller is not None else None)

    def do_sock_getsockopt(self, p: Process, sock: int, opt: str, optlen: int | None = None) -> Any:
        _, sk = self.sockfd_lookup(p, sock)
        if opt == "TCP_SYNCNT":
            val = sk.syn_retries or self.sysctls["tcp_syn_retries"]
        elif opt == "TCP_LINGER2":
            val = sk.linger2 if sk.linger2 < 0 else (sk.linger2 or self.sysctls["tcp_fin_timeout"])
        else:
            val = getsockopt(sk, opt)
        if optlen is None:
            return val
        val, n = getsockopt_len(opt, val, optlen)
        return {"value": val, "optlen": n}

    @rule("sys.sendto", "buffers")
    def sys_sendto(self, p: Process, sock: int, bytes: int, addr: str | None = None, port: int = 0,
                   flags: list[str] | None = None) -> int:
        """__sys_sendto() in net/socket.c, tcp_sendmsg_locked() in net/ipv4/tcp.c: TCP ignores the address (no MSG_FASTOPEN)."""
        if addr is not None:
            fact(f"the address {addr}:{port} is ignored by TCP")
        return self.tcp_sendmsg(p, sock, bytes, flags)

    @rule("sys.accept", "tcp")
    def do_accept(self, p: Process, sock: int, **kw: Any) -> int:
        """__sys_accept4_file() in net/socket.c: the new fd is reserved first (EMFILE), then inet_csk_accept() checks the listener."""
        f0 = p.files.fds.get(sock)
        if f0 is None:
            fact(f"fd {sock} is not open in this process")
            raise SysError("EBADF", "sys.accept")
        fd = p.files.alloc_fd()  # before anything else: EMFILE even on a socket that cannot accept
        f, sk = self.sockfd_lookup(p, sock)
        if sk.kind != "tcp":
            raise SysError("EOPNOTSUPP", "sys.accept")
        if sk.tcp_state != State.LISTEN:
            fact(f"the socket is {State(sk.tcp_state).name}, not LISTEN")
            raise SysError("EINVAL", "sys.accept")
        if not sk.accept_q:
            if f.nonblock:
                fact("the accept queue is empty and the socket is non-blocking")
                raise SysError("EAGAIN", "sys.accept")
            raise Block(lambda now: self.do_accept(p, sock), "accept: the accept queue is empty", sk)
        child = sk.accept_q.popleft()
        child.parent = None
        self.files.charge(p.uid == 0)
        self.fd_install(p, fd, OpenFile(child))
        self.ret_name = self.sock_name(child, child.raddr, child.rport)
        fact(f"dequeued a connection from {child.raddr}:{child.rport}; {len(sk.accept_q)} left")
        return fd
