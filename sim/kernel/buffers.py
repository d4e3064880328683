"""Socket buffers: SO_SNDBUF/SO_RCVBUF as stored and reported, queue capacities, the TCP pool.

Socket buffer memory is kernel memory that is never paged out (skbs are allocated from slab
caches in the kernel's direct map). TCP charges it to one global pool measured in pages against
``net.ipv4.tcp_mem`` (min, pressure, max).
"""

from __future__ import annotations

from .rules import fact, rule

SKB_TRUESIZE_OVERHEAD = 256  # SKB_DATA_ALIGN(sizeof(struct sk_buff)) on x86_64
TCP_SKB_MIN_TRUESIZE = 2048 + SKB_TRUESIZE_OVERHEAD
SOCK_MIN_SNDBUF = 2 * TCP_SKB_MIN_TRUESIZE  # 4608
SOCK_MIN_RCVBUF = TCP_SKB_MIN_TRUESIZE  # 2304
PAGE = 4096
# Payload that fits in a buffer of a given size: the kernel charges skb truesize, not payload.
# Measured on loopback (6.18): about three quarters of the buffer holds payload.
PAYLOAD_RATIO = 0.75
SKB_FIRST_OVERHEAD = 2048  # measured: 8192-byte SO_SNDBUF -> 6144 bytes accepted by one send()
# tcp_sndbuf_expand(): 2 * per_mss * nr_segs on loopback (MSS 65483); measured 3939840 = 30 * 131328.
LOOPBACK_EXPANDED_SNDBUF = 3939840


@rule("buf.sndbuf", "buffers")
def set_sndbuf(val: int, wmem_max: int, force: bool = False) -> int:
    """sk_setsockopt() SO_SNDBUF in net/core/sock.c: min(val, wmem_max) doubled, at least SOCK_MIN_SNDBUF."""
    # min_t(u32, val, wmem_max): a negative value is a huge unsigned one, so it takes the cap
    v = val if force else min(val & 0xFFFFFFFF, wmem_max)
    v = max(v, 0)
    stored = max(v * 2, SOCK_MIN_SNDBUF)
    fact(f"SO_SNDBUF {val}: capped by wmem_max {wmem_max} -> {v}, doubled and floored at "
         f"{SOCK_MIN_SNDBUF} -> {stored}")
    return stored


@rule("buf.rcvbuf", "buffers")
def set_rcvbuf(val: int, rmem_max: int, force: bool = False) -> int:
    """__sock_set_rcvbuf() in net/core/sock.c: min(val, rmem_max) doubled, at least SOCK_MIN_RCVBUF."""
    # min_t(u32, val, rmem_max): a negative value is a huge unsigned one, so it takes the cap
    v = val if force else min(val & 0xFFFFFFFF, rmem_max)
    v = max(v, 0)
    stored = max(v * 2, SOCK_MIN_RCVBUF)
    fact(f"SO_RCVBUF {val}: capped by rmem_max {rmem_max} -> {v}, doubled and floored at "
         f"{SOCK_MIN_RCVBUF} -> {stored}")
    return stored


@rule("buf.sndbuf_expand", "buffers")
def expand_sndbuf(current: int, wmem_max2: int) -> int:
    """tcp_sndbuf_expand() in net/ipv4/tcp_input.c: an unlocked send buffer grows at connection setup."""
    new = min(max(current, LOOPBACK_EXPANDED_SNDBUF), wmem_max2)
    if new != current:
        fact(f"send buffer autotuned from {current} to {new} (tcp_wmem[2] = {wmem_max2})")
    return new


@rule("buf.sndbuf_grow", "buffers")
def grow_sndbuf(current: int, wmem_max2: int) -> int:
    """tcp_new_space() in net/ipv4/tcp_input.c: after the queue filled, the send buffer grows to tcp_wmem[2]."""
    new = max(current, wmem_max2)
    if new != current:
        fact(f"send buffer autotuned from {current} to {new} (tcp_wmem[2])")
    return new


def payload_capacity(buf: int) -> int:
    return int(buf * PAYLOAD_RATIO)


@rule("buf.send_capacity", "buffers", "minor")
def send_capacity(sndbuf: int) -> int:
    """sk_stream_memory_free() in include/net/sock.h: sk_wmem_queued (skb truesize) below sk_sndbuf."""
    # one skb's overhead (measured: 6144 payload bytes fit in an 8192-byte send buffer)
    return max(0, sndbuf - SKB_FIRST_OVERHEAD)


TCP_RMEM_TO_WIN_SCALE = 8  # include/net/tcp.h: scaling_ratio is payload per 256 bytes of truesize
TCP_DEFAULT_SCALING_RATIO = 1 << (TCP_RMEM_TO_WIN_SCALE - 1)  # half the memory is payload


@rule("buf.receive_window", "buffers", "minor")
def tcp_win_from_space(space: int, ratio: int) -> int:
    """tcp_win_from_space() in include/net/tcp.h: the window that ``space`` bytes of skb memory hold (space * scaling_ratio / 256)."""
    return (space * ratio) >> TCP_RMEM_TO_WIN_SCALE


def pages(nbytes: int) -> int:
    return (nbytes + PAGE - 1) // PAGE


class TcpMemPool:
    """``tcp_memory_allocated`` against ``tcp_mem`` (pages): the pool that can never be paged out."""

    def __init__(self, tcp_mem: tuple[int, int, int]):
        self.low, self.pressure, self.high = tcp_mem
        self.bytes = 0
        self.peak = 0
        self.pressure_events = 0
        self.in_pressure = False

    @property
    def pages(self) -> int:
        return pages(self.bytes)

    @rule("buf.tcp_mem", "buffers", "minor")
    def can_charge(self, nbytes: int) -> bool:
        """__sk_mem_raise_allocated() in net/core/sock.c: charges over tcp_mem[2] fail (sk_stream_wait_memory)."""
        after = pages(self.bytes + nbytes)
        if after > self.high:
            fact(f"TCP memory would be {after} pages, over tcp_mem[2] = {self.high}")
            return False
        if after > self.pressure and not self.in_pressure:
            self.in_pressure = True
            self.pressure_events += 1
            fact(f"TCP memory {after} pages is over tcp_mem[1] = {self.pressure}: memory pressure")
        return True

    def charge(self, nbytes: int) -> None:
        self.bytes += nbytes
        self.peak = max(self.peak, self.bytes)

    def uncharge(self, nbytes: int) -> None:
        self.bytes -= nbytes
        if self.in_pressure and pages(self.bytes) < self.low:
            self.in_pressure = False
