"""The host's addresses and routes: which destinations are this host, which leave by a device.

A one-host scenario has loopback only (``127.0.0.0/8`` and ``::1`` on ``lo``). A host of a
scenario with ``hosts:`` also has the addresses of its devices (one per link, ``veth<N>``) and a
host route (``/32``, ``/128``) to each address at the other end of each link, as the real backend
configures them (``ip addr add A/32 dev veth0``, ``ip route add B/32 dev veth0``).

- The local table: an address of any device is local, and traffic to it stays on this host over
  ``lo`` (fib_table_insert() of the RTN_LOCAL route that fib_add_ifaddr() in
  net/ipv4/fib_frontend.c adds for every address).
- Output routing: a destination is local, or reached by the device of its route, or unreachable
  (ip_route_output_key_hash_rcu() in net/ipv4/route.c; -ENETUNREACH with no route).
- Source address: a socket bound to the any-address sends from the destination itself when the
  destination is local, else from the preferred source of the route's device, its first address
  (fib_result_prefsrc() / inet_select_addr() in net/ipv4/devinet.c).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .addr import ip_addr

LOOPBACK_DEV = "lo"
LO_MTU = 65536  # drivers/net/loopback.c: loopback_setup() (64 KiB)
ETH_DATA_LEN = 1500  # a veth device's MTU: veth_setup() -> ether_setup() (net/ethernet/eth.c)


def _v4(ip: Any) -> Any:
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


class Fib:
    """Addresses per device and host routes: plain data, read by bind(), connect() and the wire."""

    def __init__(self) -> None:
        self.local: dict[Any, str] = {}  # address -> the device that has it
        self.dev_addrs: dict[str, list[str]] = {}  # device -> its addresses, in the order added
        self.routes: dict[Any, str] = {}  # destination address -> device

    def add_address(self, dev: str, addr: str) -> None:
        ip = ip_addr(addr)
        self.local.setdefault(ip, dev)
        addrs = self.dev_addrs.setdefault(dev, [])
        if addr not in addrs:
            addrs.append(addr)

    def add_route(self, dst: str, dev: str) -> None:
        self.routes[ip_addr(dst)] = dev

    def is_local(self, addr: str) -> bool:
        """Loopback, or an address of one of this host's devices."""
        ip = _v4(ip_addr(addr))
        return ip.is_loopback or ip in self.local

    def is_loopback(self, addr: str) -> bool:
        return _v4(ip_addr(addr)).is_loopback

    def output(self, daddr: str) -> str | None:
        """The device a segment to ``daddr`` leaves by: ``lo`` when it is local, None when no
        route reaches it (ip_route_output_key_hash_rcu() in net/ipv4/route.c)."""
        ip = _v4(ip_addr(daddr))
        if ip.is_loopback or ip in self.local or ip.is_unspecified:
            return LOOPBACK_DEV
        return self.routes.get(ip)

    def mtu(self, daddr: str | None) -> int:
        """The MTU of the device a segment to ``daddr`` leaves by: loopback's 64 KiB, or an
        Ethernet device's 1500 for a link (dst_mtu() of the route; no path MTU is learnt)."""
        if daddr is None:
            return LO_MTU
        dev = self.output(daddr)
        return LO_MTU if dev in (None, LOOPBACK_DEV) else ETH_DATA_LEN

    def source(self, daddr: str) -> str | None:
        """The source address for ``daddr`` from an unbound socket: the destination itself when it
        is a local non-loopback address, the device's first address for a route, else None (the
        caller's loopback)."""
        ip = _v4(ip_addr(daddr))
        if ip in self.local:
            return str(ip)
        dev = self.routes.get(ip)
        if dev is not None and self.dev_addrs.get(dev):
            family = [a for a in self.dev_addrs[dev] if ip_addr(a).version == ip.version]
            return family[0] if family else None
        return None

    def describe(self) -> str:
        if not self.local and not self.routes:
            return "only loopback exists in the namespace"
        addrs = ", ".join(f"{a} on {d}" for a, d in self.local.items())
        routes = ", ".join(f"{a} via {d}" for a, d in self.routes.items())
        return f"this host has loopback, {addrs}" + (f"; routes: {routes}" if routes else "")


class Route:
    """Kernel functions of net/ipv4/route.c and fib_frontend.c (a part of :class:`~.stack.Kernel`)."""

    fib: Fib

    def add_address(self, dev: str, addr: str) -> None:
        """`ip addr add ADDR dev DEV`: fib_add_ifaddr() in net/ipv4/fib_frontend.c (a local route)."""
        self.fib.add_address(dev, addr)

    def add_route(self, dst: str, dev: str) -> None:
        """`ip route add DST dev DEV`: a host route out of a link's device (fib_table_insert())."""
        self.fib.add_route(dst, dev)

    def ip_route_output(self, daddr: str) -> str | None:
        """ip_route_output_key_hash_rcu() in net/ipv4/route.c: the device towards daddr (lo when local), None when unreachable."""
        return self.fib.output(daddr)
