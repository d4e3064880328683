"""The receive window the model advertises, against values measured on the real kernel.

Every expected number below was measured on Linux 6.18 over loopback (Python sockets under
``unshare -n``; ``ss -tmi`` on both ends: the receiver's skmem ``r`` (sk_rmem_alloc),
``rcv_ssthresh``, ``rcvmss``, and the sender's ``snd_wnd`` -- the window the receiver last
advertised, scaled). Default sysctls of that host: tcp_rmem 4096 131072 33554432 (window scale
10 on loopback).
"""

from __future__ import annotations

import pytest

from sim.engine import SimBackend
from sim.scenario.loader import load_text
from sim.scenario.runner import run

HEAD = """name: w
processes: {a: {}, b: {}}
steps:
  - {proc: a, call: socket, as: srv}
%s  - {proc: a, call: bind, sock: srv, addr: 127.0.0.1, port: 7001}
  - {proc: a, call: listen, sock: srv}
  - {proc: b, call: socket, as: c}
  - {proc: b, call: connect, sock: c, addr: 127.0.0.1, port: 7001}
  - {proc: a, call: accept, sock: srv, as: k}
"""


def _windows(writes: list[int], rcvbuf: int | None = None) -> list[int]:
    """The window (bytes, scaled) of the receiver's last segment after each write of the client."""
    opt = f"  - {{proc: a, call: setsockopt, sock: srv, opt: SO_RCVBUF, value: {rcvbuf}}}\n" if rcvbuf else ""
    text = HEAD % opt + "".join(f"  - {{proc: b, call: send, sock: c, bytes: {n}}}\n" for n in writes)
    sc = load_text(text)
    trace = run(sc, SimBackend(seed=0), seed=0)
    wscale = next(s.opts["wscale"] for s in trace.wire if s.flags == "SYN|ACK")
    first = len(sc.steps) - len(writes)
    out = []
    for i in range(len(writes)):
        acks = [s for s in trace.wire if s.dir == "<" and s.rec == first + i and "SYN" not in s.flags]
        out.append(acks[-1].win << wscale)
    return out


@pytest.mark.parametrize("writes, windows", [
    # 999 bytes: scaling_ratio 999*256/1831 = 139; (131072 - 1831) * 139 / 256 = 70173 -> 70656
    ([999], [70656]),
    # the second 999 joins the first skb (r2830) and teaches nothing new: rcv_ssthresh stays 70173
    ([999, 999], [70656, 70656]),
    # 5000 after them: ratio 219, r7830, rcv_ssthresh 105429 -> 105472
    ([999, 999, 5000], [70656, 70656, 105472]),
    # one write of 20000: ratio 245, r20832, rcv_ssthresh 105503 -> 106496
    ([20000], [106496]),
])
def test_window_after_data_follows_skb_truesize(writes, windows) -> None:
    assert _windows(writes) == windows


def test_segments_of_one_write_are_separate_skbs() -> None:
    """SO_RCVBUF 4096 (sk_rcvbuf 8192, no window scale): a write of 4096 leaves as two segments
    of 2048 (half the 4096 window) that the receiver keeps as two skbs (r5760), so the window
    closes; two writes of 2048 share one skb (r4928) and leave 2048 open."""
    assert _windows([4096], rcvbuf=4096) == [0]
    assert _windows([2048, 2048], rcvbuf=4096) == [2048, 2048]
