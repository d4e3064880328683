"""Links between hosts: the segments one host's kernel sends to another host's address.

Each link of a scenario with ``hosts:`` joins two kernels (a veth pair on the real kernel). The
engine gives each end a device (``veth<N>``) with its host's addresses and a route to the other
end's addresses: that is kernel data, and the kernel decides where a segment goes
(``ip_route_output()``: loopback, a device, or nowhere). What the engine adds is time: a segment
that leaves by a link arrives at the other kernel ``delay`` seconds later, after waiting for the
segments before it when the link has a bandwidth (each takes its size x 8 / bandwidth to send).
Each direction of a link is one FIFO lane, so segments arrive in the order they were sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import SimBackend

# bytes of IPv4 and TCP headers, and of the timestamps option (RFC 7323; tcp_options_write() in
# net/ipv4/tcp_output.c pads it to 12) on every segment that carries it
HEADER_BYTES = 40
TIMESTAMP_BYTES = 12


@dataclass
class Direction:
    """One direction of a link: where its segments arrive, after how long."""

    to: Any  # the receiving kernel
    delay: float
    bandwidth: int | None
    lane: tuple[int, str]
    busy_until: float = 0.0
    sent: int = 0


def link_device(index: int) -> str:
    """The name of each end's device for the scenario's link ``index``."""
    return f"veth{index}"


class Network:
    """The links of a scenario with ``hosts:``, between the backend's kernels."""

    def __init__(self, backend: SimBackend, scenario: dict[str, Any]):
        self.b = backend
        self.out: dict[tuple[int, str], Direction] = {}
        self.dropped = 0  # segments to an address no route reaches
        hosts = scenario["hosts"]
        for name, spec in hosts.items():
            if spec.get("addresses") and not any(name in (link.get("between") or ()) for link in scenario.get("links") or ()):
                # an address with no link still belongs to the host (reachable from itself)
                for addr in spec["addresses"]:
                    backend.kernels[name].add_address("dummy0", addr)
        for i, link in enumerate(scenario.get("links") or []):
            a, c = link["between"]
            dev = link_device(i)
            for src, dst in ((a, c), (c, a)):
                ks, kd = backend.kernels[src], backend.kernels[dst]
                for addr in hosts[src].get("addresses") or []:
                    ks.add_address(dev, addr)
                for addr in hosts[dst].get("addresses") or []:
                    ks.add_route(addr, dev)
                self.out[(id(ks), dev)] = Direction(kd, float(link.get("delay", 0.0)),
                                                    link.get("bandwidth"), (i, src))

    def send(self, k: Any, seg: Any) -> bool:
        """Carry ``seg`` from kernel ``k`` if it leaves by a link; False when it stays on ``k``."""
        dev = k.ip_route_output(seg.dst[0])
        if dev == "lo":
            return False
        if dev is None:
            self.dropped += 1  # ip_route_output_key() failed: nothing is sent
            return True
        d = self.out[(id(k), dev)]
        now = self.b.env.now
        d.sent += 1
        if d.bandwidth:
            size = HEADER_BYTES + (TIMESTAMP_BYTES if seg.ts else 0) + seg.length
            d.busy_until = max(now, d.busy_until) + size * 8 / d.bandwidth
            due = d.busy_until + d.delay
        else:
            due = now + d.delay
        if due <= now:
            self.b.segments += 1
            d.to.deliver(seg, now)
        else:
            self.b.wire.add(due - now, (d.to, seg), due=due, lane=d.lane)
        return True
