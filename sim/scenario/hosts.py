"""The scenario's hosts and links: sysctls per network namespace, a host's settings, links with
their delay and bandwidth."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from pydantic import Field, field_validator, model_validator

from .fields import INT32, Name, NotBoolFloat, NotBoolInt, Port, Pos32, _Strict, _check_addr, relocated


# ----------------------------------------------------------------------------- host


class Sysctls(_Strict):
    """Per-network-namespace sysctls (Linux names, net.ipv4.* / net.core.* without prefix)."""

    ip_local_port_range: tuple[Annotated[int, NotBoolInt, Field(ge=1, le=65535)], Annotated[int, NotBoolInt, Field(ge=1, le=65535)]] = (32768, 60999)
    ip_local_reserved_ports: list[Port] = []
    ip_unprivileged_port_start: Port = 1024
    ip_autobind_reuse: Literal[0, 1] = 0
    # value ranges: what the kernel's proc handlers accept (measured in a namespace; see
    # docs/scenarios.md, "Sysctls"): a value the real kernel refuses is refused at load time
    tcp_max_tw_buckets: Annotated[int, NotBoolInt, Field(ge=0, le=INT32[1])] = 131072
    tcp_tw_reuse: Literal[0, 1, 2] = 2
    tcp_tw_reuse_delay: Annotated[int, NotBoolInt, Field(ge=1, le=60000)] = 1000  # ms (TCP_PAWS_MSL * 1000 at most)
    tcp_timestamps: Literal[0, 1, 2] = 1
    tcp_fin_timeout: Annotated[int, NotBoolInt, Field(ge=1, le=3600)] = 60
    somaxconn: Annotated[int, NotBoolInt, Field(ge=0, le=2147483647)] = 4096
    tcp_max_syn_backlog: Annotated[int, NotBoolInt, Field(ge=1, le=INT32[1])] = 2048
    tcp_syncookies: Literal[0, 1, 2] = 1
    tcp_abort_on_overflow: Literal[0, 1] = 0
    tcp_syn_retries: Annotated[int, NotBoolInt, Field(ge=1, le=127)] = 6
    tcp_wmem: tuple[Pos32, Pos32, Pos32] = (4096, 16384, 4194304)  # proc_dointvec_minmax, min 1
    tcp_rmem: tuple[Pos32, Pos32, Pos32] = (4096, 131072, 33554432)
    # Host-global on Linux (cannot be set inside a namespace): the real backend cannot apply them.
    # net/core/sysctl_net_core.c: at least SOCK_MIN_SNDBUF (4608) / SOCK_MIN_RCVBUF (2304)
    wmem_max: Annotated[int, NotBoolInt, Field(ge=4608, le=INT32[1])] = 4194304
    rmem_max: Annotated[int, NotBoolInt, Field(ge=2304, le=INT32[1])] = 4194304
    tcp_mem: tuple[Annotated[int, NotBoolInt, Field(ge=0)], Annotated[int, NotBoolInt, Field(ge=0)], Annotated[int, NotBoolInt, Field(ge=0)]] = (287898, 383867, 575796)  # pages
    bindv6only: Literal[0, 1] = 0
    # Windows (HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters and pool limits);
    # ignored by the linux personality
    TcpTimedWaitDelay: Annotated[int, NotBoolInt, Field(ge=30, le=300)] | None = None
    nonpaged_pool_bytes: Annotated[int, NotBoolInt, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _range_ordered(self) -> Sysctls:
        lo, hi = self.ip_local_port_range
        if lo > hi:
            raise ValueError(f"ip_local_port_range: low {lo} is above high {hi}")
        if self.ip_unprivileged_port_start > lo:
            # ipv4_local_port_range() / ipv4_privileged_ports() in net/ipv4/sysctl_net_ipv4.c:
            # the range may not start below the unprivileged ports (the kernel refuses, EINVAL)
            raise relocated("ip_local_port_range", f"a range starting at or above ip_unprivileged_port_start "
                            f"({self.ip_unprivileged_port_start}), as the kernel requires",
                            f"low {lo}")
        return self


HOST_GLOBAL_SYSCTLS = ("wmem_max", "rmem_max", "tcp_mem")


class DynamicPort(_Strict):
    """A Windows host's dynamic port range as ``netsh int ipv4 set dynamicport tcp start=N num=M``
    sets it (KB 929851: the range starts at 1025 or above and ends at 65535 at most; netsh's
    minimum of 255 ports is not enforced, so a scenario can exhaust a small range)."""

    start: Annotated[int, NotBoolInt, Field(ge=1025, le=65535)]
    num: Annotated[int, NotBoolInt, Field(ge=1, le=64511)]

    @model_validator(mode="after")
    def _ends_in_range(self) -> DynamicPort:
        end = self.start + self.num - 1
        if end > 65535:
            raise relocated("num", f"at most {65536 - self.start} ports from start={self.start} "
                            "(the range ends at 65535 at most)", f"num={self.num}, ending at {end}")
        return self


class Host(_Strict):
    personality: Literal["linux", "windows"] = "linux"
    sysctls: Sysctls = Sysctls()
    file_max: Annotated[int, NotBoolInt, Field(ge=1)] = 2466170  # fs.file-max (host-global)
    # one-way delay of the wire, seconds; 0 = Linux loopback (segments are processed in the
    # sending call's softirq, before the call returns)
    latency: Annotated[float, NotBoolFloat, Field(ge=0, le=10)] = 0.0
    # Windows: the dynamic port range, netsh's way (a Linux host sets sysctls.ip_local_port_range)
    dynamicport: DynamicPort | None = None

    @model_validator(mode="after")
    def _port_range_by_personality(self) -> Host:
        rng = self.sysctls.ip_local_port_range
        d = self.dynamicport
        # a model dump read back carries the default (or the range dynamicport set): not the user's;
        # on a Windows host the Linux sysctl alone is taken as the dynamic range (docs/windows.md)
        linux_range = ("ip_local_port_range" in self.sysctls.model_fields_set
                       and tuple(rng) != Sysctls.model_fields["ip_local_port_range"].default
                       and (d is None or tuple(rng) != (d.start, d.start + d.num - 1)))
        if d is not None and linux_range:
            raise relocated("sysctls.ip_local_port_range", "one dynamic port range: dynamicport: {start: N, "
                            "num: M} on a Windows host (drop the Linux sysctl)",
                            f"ip_local_port_range {rng[0]}-{rng[1]} besides dynamicport "
                            f"start={d.start} num={d.num}")
        if d is not None:
            if self.personality != "windows":
                raise relocated("dynamicport", "sysctls.ip_local_port_range on a Linux host "
                                "(dynamicport is the Windows setting)", "dynamicport")
            sysctls = self.sysctls.model_copy(update={"ip_local_port_range": (d.start, d.start + d.num - 1)})
            object.__setattr__(self, "sysctls", sysctls)  # a frozen model: set once, while validating
        return self


class HostSpec(Host):
    """One host of a scenario with several: its own kernel (personality, sysctls, limits) and the
    addresses of its network interface besides loopback."""

    addresses: list[str] = []

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            _check_addr(a)
            ip = ipaddress.ip_address(a)
            if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
                raise ValueError(f"{a} cannot be an interface address (loopback, any or multicast)")
        if len(set(v)) != len(v):
            raise ValueError("an address is listed twice")
        return v


class Link(_Strict):
    """A point-to-point link between two hosts (a veth pair on the real kernel): the segments
    from one host's addresses to the other's cross it after ``delay`` seconds (one way)."""

    between: tuple[Name, Name]
    delay: Annotated[float, NotBoolFloat, Field(ge=0, le=10)] = 0.0
    # a share of the segments lost in each direction; the model retransmits only SYNs
    # (tcp_retransmit_timer() for data and FIN is not modelled), so only 0 is accepted for now
    loss: Annotated[float, NotBoolFloat, Field(ge=0, le=1)] = 0.0
    # bits per second in each direction (a segment takes its size x 8 / bandwidth to send);
    # None: no limit
    bandwidth: Annotated[int, NotBoolInt, Field(ge=8000, le=10**12)] | None = None

    @model_validator(mode="after")
    def _two_hosts(self) -> Link:
        if self.between[0] == self.between[1]:
            raise ValueError(f"a link joins two different hosts, not {self.between[0]} with itself")
        return self

    @field_validator("loss")
    @classmethod
    def _no_loss_yet(cls, v: float) -> float:
        if v:
            raise ValueError("0: the model retransmits only SYNs (not data or FIN), so a lossy link "
                             "is not supported yet")
        return v
