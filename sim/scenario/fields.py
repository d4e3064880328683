"""The building blocks of the scenario models: strict models, names, ports, addresses, and
the error and option vocabularies (shared by the step, host and expectation models)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

ERRNO_NAMES = {
    "EPERM", "ENOENT", "EBADF", "EAGAIN", "EWOULDBLOCK", "ENOMEM", "EACCES", "EFAULT", "EINVAL",
    "ENFILE", "EMFILE", "EPIPE", "ENOTSOCK", "EDESTADDRREQ", "EPROTOTYPE", "ENOPROTOOPT",
    "EPROTONOSUPPORT", "ESOCKTNOSUPPORT", "EOPNOTSUPP", "ENOTSUP", "EPFNOSUPPORT", "EAFNOSUPPORT",
    "EADDRINUSE", "EADDRNOTAVAIL", "ENETDOWN", "ENETUNREACH", "ECONNABORTED", "ECONNRESET",
    "ENOBUFS", "EISCONN", "ENOTCONN", "ESHUTDOWN", "ETIMEDOUT", "ECONNREFUSED", "EALREADY",
    "EINPROGRESS", "EINTR",
}
WSA_NAMES = {"WSA" + n for n in ERRNO_NAMES if n.startswith("E")} | {
    "WSANOTINITIALISED", "WSASYSNOTREADY", "WSAVERNOTSUPPORTED", "WSA_OPERATION_ABORTED"}
OUTCOME_WORDS = {"ok", "error", "BLOCKED", "PROCESS_BUSY", "PROCESS_GONE"}

def _refuse_bool(kind: str):
    """YAML's true/false are not numbers (pydantic's lax mode would read them as 1 and 0)."""
    def check(v: Any) -> Any:
        if isinstance(v, bool):
            raise PydanticCustomError(kind, "a number, not a boolean")
        return v
    return BeforeValidator(check)


NotBoolInt, NotBoolFloat = _refuse_bool("int_type"), _refuse_bool("float_type")

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$", max_length=64)]
SockRef = Union[Annotated[int, NotBoolInt, Field(ge=0, le=1 << 20)], Name]
# a value an earlier step captured (``capture: NAME``): ``$NAME``, ``$NAME.port`` or ``$NAME.addr``
REF_PATTERN = r"^\$[A-Za-z_][A-Za-z0-9_\-]*(\.(port|addr))?$"
Ref = Annotated[str, Field(pattern=REF_PATTERN, max_length=70)]
Port = Annotated[int, NotBoolInt, Field(ge=0, le=65535)]
PortArg = Union[Port, Ref]
Int32 = Annotated[int, NotBoolInt, Field(ge=-(2**31), le=2**31 - 1)]
Seconds = Annotated[float, NotBoolFloat, Field(ge=0, le=10 * 24 * 3600)]

SOCKOPTS = (
    "SO_REUSEADDR", "SO_REUSEPORT", "SO_LINGER", "SO_SNDBUF", "SO_RCVBUF", "SO_KEEPALIVE",
    "SO_ERROR", "SO_TYPE", "SO_ACCEPTCONN", "IPV6_V6ONLY", "TCP_NODELAY", "TCP_MAXSEG",
    "IP_BIND_ADDRESS_NO_PORT", "TCP_LINGER2", "TCP_SYNCNT", "SO_EXCLUSIVEADDRUSE",
    "TCP_WINDOW_CLAMP", "SO_RCVBUFFORCE", "SO_SNDBUFFORCE", "IP_LOCAL_PORT_RANGE",
    "TCP_USER_TIMEOUT", "SO_RCVLOWAT",
    # Winsock's own (a Linux host answers ENOPROTOOPT; SO_RCVTIMEO/SO_SNDTIMEO are DWORD milliseconds)
    "SO_RCVTIMEO", "SO_SNDTIMEO", "SO_OOBINLINE", "SO_DONTLINGER", "SO_CONNECT_TIME",
    # modelled for Windows only (a Linux scenario is refused at load: see WINDOWS_ONLY_OPTIONS)
    "SO_DEBUG", "SO_DONTROUTE", "TCP_KEEPALIVE", "TCP_KEEPCNT", "TCP_KEEPINTVL",
)
# Options Linux has too (SO_DEBUG, SO_DONTROUTE, TCP_KEEPCNT, TCP_KEEPINTVL; TCP_KEEPALIVE is
# Linux's TCP_KEEPIDLE) but the Linux model does not: a Linux scenario naming one is refused at
# load rather than answered with a made-up ENOPROTOOPT.
WINDOWS_ONLY_OPTIONS = ("SO_DEBUG", "SO_DONTROUTE", "TCP_KEEPALIVE", "TCP_KEEPCNT", "TCP_KEEPINTVL")
PAIR_OPTS = ("SO_LINGER", "IP_LOCAL_PORT_RANGE")  # values written as [a, b]
# The capabilities a process can lack (capabilities(7)).
CAPS = ("CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW")
POLL_EVENTS = (
    "POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM", "POLLRDBAND",
    "POLLWRNORM", "POLLWRBAND", "POLLRDHUP",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_addr(v: str) -> str:
    if "%" in v:  # Python accepts a scope (fe80::1%lo); the scenario address fields have none
        raise ValueError(f"not an IPv4 or IPv6 address: {v!r} (a scoped address, %zone, is not supported)")
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {v!r}") from None
    return v


def relocated(where: str, expected: str, found: str) -> ValueError:
    """A problem the loader reports at ``where`` (a dotted path below the value being validated,
    e.g. ``expect.local``) rather than at the value itself."""
    return ValueError(f"@{where}|{expected}|{found}")


INT32 = (-(2**31), 2**31 - 1)
Pos32 = Annotated[int, NotBoolInt, Field(ge=1, le=INT32[1])]


