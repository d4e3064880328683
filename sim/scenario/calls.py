"""The call steps of a scenario (socket, bind, connect, ... and Winsock's calls): one typed model
per system call, each forbidding unknown keys; the step base they share (note, expect, tolerate)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union
from pydantic import Field, field_validator, model_validator

from .fields import (
    CAPS, ERRNO_NAMES, Int32, Name, NotBoolFloat, NotBoolInt, OUTCOME_WORDS, PAIR_OPTS,
    POLL_EVENTS, PortArg, REF_PATTERN, Ref, SOCKOPTS, SockRef, WSA_NAMES, _Strict, _check_addr,
    relocated,
)


class Tolerance(_Strict):
    """Where the real kernel legitimately differs from the model, and why (crosscheck only)."""

    # wire fields (docs/scenarios.md): "wire" any difference in the segments this step caused;
    # "wire.win" / "wire.opts" their windows / options; "wire.step" they may show up linked to the
    # next step instead (a delayed ACK that fires before or after the next step)
    field: Literal["ret", "err", "blocked", "completed_after", "obs", "name", "all",
                   "wire", "wire.win", "wire.opts", "wire.step"]
    reason: Annotated[str, Field(min_length=3)]
    rel: Annotated[float, NotBoolFloat, Field(ge=0, le=10)] | None = None  # relative tolerance for numbers
    abs: Annotated[float, NotBoolFloat, Field(ge=0)] | None = None  # absolute tolerance for numbers


class WireTolerance(_Strict):
    """A scenario-wide wire tolerance: windows or options of every segment (crosscheck only)."""

    field: Literal["wire.win", "wire.opts"]
    reason: Annotated[str, Field(min_length=3)]


class _Step(_Strict):
    note: str | None = None
    expect: Any = None
    tolerate: list[Tolerance] = []

    @field_validator("expect")
    @classmethod
    def _expect_word(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ERRNO_NAMES | OUTCOME_WORDS | WSA_NAMES:
            raise ValueError(
                f"expect: {v!r} is not 'ok', 'BLOCKED' or an errno name (e.g. EADDRINUSE)"
            )
        return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape(v: Any) -> str:
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, float):
        return f"the number {v}"
    return repr(v)


def check_expect_keys(expect: Any, keys: tuple[str, ...], what: str) -> None:
    """A mapping expectation names only keys the result has."""
    if not isinstance(expect, dict):
        raise relocated("expect", f"a word (ok, an errno name) or a mapping of {what}'s results "
                                  f"({', '.join(keys)})", _shape(expect))
    for k in expect:
        if k not in keys:
            raise relocated(f"expect.{k}<key>", f"a result of {what} (one of: {', '.join(keys)})",
                            f"unknown key {str(k)!r}")


class _Call(_Step):
    proc: Name
    # keep this call's result for later steps: ``$NAME`` (the value), ``$NAME.port``/``.addr``
    capture: Name | None = None



class SocketCall(_Call):
    call: Literal["socket"]
    family: Literal["AF_INET", "AF_INET6"] = "AF_INET"
    type: Literal["SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_SEQPACKET"] = "SOCK_STREAM"
    protocol: Literal[0, "IPPROTO_TCP", "IPPROTO_UDP"] = 0
    nonblock: bool = False
    as_: Name | None = Field(None, alias="as")


OptLen = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# Pointer arguments passed as NULL (``null: [addr]``) and the address length passed
# (``addrlen: N``): modelled for the Windows personality (WSAEFAULT); a Linux host refuses them
# at load (sim/scenario/validate.py, POINTER_KEYS).
AddrNull = list[Literal["addr"]]
AddrOutNull = list[Literal["addr", "addrlen"]]
ValueNull = list[Literal["value"]]


class SetsockoptCall(_Call):
    call: Literal["setsockopt"]
    sock: SockRef
    opt: Literal[SOCKOPTS]  # type: ignore[valid-type]
    # SO_LINGER takes [onoff, seconds], IP_LOCAL_PORT_RANGE [low, high]
    value: Union[Int32, tuple[Int32, Int32], Ref] = 1
    optlen: OptLen | None = None  # bytes passed (default: the option's size)
    null: ValueNull = []  # [value]: optval is a NULL pointer

    @model_validator(mode="after")
    def _value_shape(self) -> SetsockoptCall:
        pair = isinstance(self.value, tuple)
        if pair and self.opt not in PAIR_OPTS:
            raise ValueError(f"value: {self.opt} takes a whole number, found a pair")
        return self


class GetsockoptCall(_Call):
    call: Literal["getsockopt"]
    sock: SockRef
    opt: Literal[SOCKOPTS]  # type: ignore[valid-type]
    optlen: OptLen | None = None  # the buffer length passed (default: the option's size)
    null: ValueNull = []  # [value]: optval is a NULL pointer


def _check_addr_or_ref(v: str) -> str:
    import re

    if isinstance(v, str) and v.startswith("$"):
        if not re.match(REF_PATTERN, v):
            raise ValueError(f"not a captured value: {v!r} (write $NAME, $NAME.addr or $NAME.port)")
        return v
    return _check_addr(v)


class BindCall(_Call):
    call: Literal["bind"]
    sock: SockRef
    addr: str = "0.0.0.0"
    port: PortArg = 0
    addrlen: OptLen | None = None  # namelen passed (default: the size of the family's sockaddr)
    null: AddrNull = []  # [addr]: name is a NULL pointer

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr_or_ref(v)))


class ListenCall(_Call):
    call: Literal["listen"]
    sock: SockRef
    backlog: Annotated[int, NotBoolInt, Field(ge=-(2**31), le=2**31 - 1)] = 128


class ConnectCall(_Call):
    call: Literal["connect"]
    sock: SockRef
    addr: str = "127.0.0.1"
    port: PortArg
    addrlen: OptLen | None = None  # namelen passed (default: the size of the family's sockaddr)
    null: AddrNull = []  # [addr]: name is a NULL pointer

    _addr = field_validator("addr")(classmethod(lambda cls, v: _check_addr_or_ref(v)))


class AcceptCall(_Call):
    call: Literal["accept"]
    sock: SockRef
    as_: Name | None = Field(None, alias="as")
    addrlen: OptLen | None = None  # *addrlen: the size of the address buffer passed
    null: AddrOutNull = []  # [addr] and/or [addrlen] passed as NULL pointers


MsgFlag = Literal["MSG_DONTWAIT", "MSG_NOSIGNAL", "MSG_PEEK", "MSG_OOB", "MSG_WAITALL"]


class SendCall(_Call):
    call: Literal["send"]
    sock: SockRef
    bytes: Annotated[int, NotBoolInt, Field(ge=0, le=1 << 30)]
    flags: list[MsgFlag] = []


class RecvCall(_Call):
    call: Literal["recv"]
    sock: SockRef
    bytes: Annotated[int, NotBoolInt, Field(ge=0, le=1 << 30)] = 65536
    flags: list[MsgFlag] = []


class ShutdownCall(_Call):
    call: Literal["shutdown"]
    sock: SockRef
    # a name, or the raw number a program passes (0, 1, 2 are valid; anything else is EINVAL)
    how: Union[Literal["SHUT_RD", "SHUT_WR", "SHUT_RDWR", "SD_RECEIVE", "SD_SEND", "SD_BOTH"], Int32] = "SHUT_WR"


class SendtoCall(_Call):
    """sendto(2) on a TCP socket: the address is ignored once connected (EISCONN never arises)."""

    call: Literal["sendto"]
    sock: SockRef
    bytes: Annotated[int, Field(ge=0, le=1 << 30)]
    addr: str | None = None  # None: a NULL address
    port: PortArg = 0
    flags: list[MsgFlag] = []

    _addr = field_validator("addr")(classmethod(lambda cls, v: v if v is None else _check_addr_or_ref(v)))


class PollCall(_Call):
    """poll(2) on one socket with a zero timeout: the ready events (revents) after the network settled."""

    call: Literal["poll"]
    sock: SockRef
    events: list[Literal[POLL_EVENTS]] = ["POLLIN", "POLLOUT"]  # type: ignore[valid-type]


class GetpeernameCall(_Call):
    call: Literal["getpeername"]
    sock: SockRef


class SeteuidCall(_Call):
    """seteuid(2): the process's effective uid (and fsuid, which new sockets take as their owner)."""

    call: Literal["seteuid"]
    uid: Annotated[int, Field(ge=0, le=65535)]


class CapsetCall(_Call):
    """capset(2): the process gives up capabilities (from its effective and permitted sets)."""

    call: Literal["capset"]
    drop: Annotated[list[Literal[CAPS]], Field(min_length=1)]  # type: ignore[valid-type]


class CloseCall(_Call):
    call: Literal["close"]
    sock: SockRef


class DupCall(_Call):
    call: Literal["dup"]
    sock: SockRef
    as_: Name | None = Field(None, alias="as")


class Dup2Call(_Call):
    call: Literal["dup2"]
    sock: SockRef
    fd: Annotated[int, NotBoolInt, Field(ge=0, le=1 << 20)]
    as_: Name | None = Field(None, alias="as")


class ForkCall(_Call):
    call: Literal["fork"]
    as_: Name = Field(alias="as")


class ExitCall(_Call):
    call: Literal["exit"]


class GetsocknameCall(_Call):
    call: Literal["getsockname"]
    sock: SockRef
    addrlen: OptLen | None = None  # *namelen: the size of the address buffer passed
    null: AddrOutNull = []  # [addr] and/or [addrlen] passed as NULL pointers


class SetNonblockCall(_Call):
    """fcntl(F_SETFL, O_NONBLOCK) on Linux, ioctlsocket(FIONBIO) on Windows."""

    call: Literal["set_nonblocking"]
    sock: SockRef
    on: bool = True


class WSAStartupCall(_Call):
    """WSAStartup(MAKEWORD(2,2), &wsaData): Winsock's per-process reference count (no-op on POSIX)."""

    call: Literal["WSAStartup"]


class WSACleanupCall(_Call):
    call: Literal["WSACleanup"]


class ClosesocketCall(_Call):
    """closesocket(s): Winsock's close (an alias of close on POSIX)."""

    call: Literal["closesocket"]
    sock: SockRef


class IoctlsocketCall(_Call):
    """ioctlsocket(s, FIONBIO, &on): Winsock's non-blocking switch (O_NONBLOCK on POSIX)."""

    call: Literal["ioctlsocket"]
    sock: SockRef
    cmd: Literal["FIONBIO"] = "FIONBIO"
    on: bool = True


class WSAGetLastErrorCall(_Call):
    """WSAGetLastError(): the calling thread's last error number (errno on POSIX)."""

    call: Literal["WSAGetLastError"]


Call = Annotated[
    Union[
        SocketCall, SetsockoptCall, GetsockoptCall, BindCall, ListenCall, ConnectCall, AcceptCall,
        SendCall, RecvCall, ShutdownCall, CloseCall, DupCall, Dup2Call, ForkCall, ExitCall,
        GetsocknameCall, SetNonblockCall, WSAStartupCall, WSACleanupCall, ClosesocketCall,
        IoctlsocketCall, WSAGetLastErrorCall, SendtoCall, PollCall, GetpeernameCall, SeteuidCall,
        CapsetCall,
    ],
    Field(discriminator="call"),
]
CALL_NAMES = (
    "socket", "setsockopt", "getsockopt", "bind", "listen", "connect", "accept", "send", "recv",
    "shutdown", "close", "dup", "dup2", "fork", "exit", "getsockname", "set_nonblocking",
    "WSAStartup", "WSACleanup", "closesocket", "ioctlsocket", "WSAGetLastError", "sendto", "poll",
    "getpeername", "seteuid", "capset",
)
# calls whose result names a socket address ({addr, port}): the local one, or the peer's
NAME_CALLS = ("getsockname", "getpeername", "accept")
