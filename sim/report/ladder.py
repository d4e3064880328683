"""The wire as a ladder (sequence) diagram, as Wireshark's flow graph draws it.

One lifeline per endpoint (``address:port``), in order of first appearance; one arrow per
segment, top to bottom in the order the segments went on the wire, labelled with its flags,
relative sequence/acknowledgement numbers, length and window; the step that caused it in the
left margin (each segment is a link to its step: ``data-step``); the TCP state of each side
written on its lifeline where it changes. The page holds the segments as data
(:func:`ladder_data`, a few dozen bytes each) and its script draws the SVG (``ladder()`` in
:mod:`sim.report.pagejs`), highlights the current step's segments and dims the later ones.
"""

from __future__ import annotations

from typing import Any

from ..trace import Trace, WireSegment, options_text


def endpoints(wire: list[WireSegment]) -> list[str]:
    """Lifelines: a connection's initiator left of its responder, in order of first appearance."""
    out: list[str] = []
    for s in wire:
        first, second = (s.src, s.dst) if s.dir == ">" else (s.dst, s.src)
        for ep in (first, second):
            if ep not in out:
                out.append(ep)
    return out


def segment_label(s: WireSegment) -> str:
    text = f"{s.flags} seq={s.seq}"
    if "ACK" in s.flags.split("|"):
        text += f" ack={s.ack}"
    return text + f" len={s.len} win={s.win}"


def ladder_data(trace: Trace) -> dict[str, Any]:
    """The wire for the page's script, which draws the ladder: the lifelines, and per segment
    ``[step, connection, sender, receiver, label, options, sender's state, receiver's state]``
    (sender and receiver index the lifelines; options and states may be empty)."""
    eps = endpoints(trace.wire)
    ix = {ep: i for i, ep in enumerate(eps)}
    segs = []
    for s in trace.wire:
        st = (list(s.states) + ["", ""])[:2]
        segs.append([s.rec, s.conn, ix[s.src], ix[s.dst], segment_label(s),
                     options_text(s.opts) if s.opts else "", st[0] or "", st[1] or ""])
    return {"eps": eps, "segs": segs}


def ladder_panel(trace: Trace) -> str:
    n = len(trace.wire)
    conns = len({s.conn for s in trace.wire})
    return (f'<div class="panel" id="wire-box"><h2>The wire</h2><p class="hint">{n} segment'
            f'{"s" if n != 1 else ""} in {conns} connection{"s" if conns != 1 else ""}: sequence and '
            'acknowledgement numbers relative to each side\'s initial sequence number; the TCP state '
            'of each side (after the step) on its lifeline. Click a segment to go to its step.</p>'
            '<div id="ladder"></div></div>')


def wire_summary(trace: Any) -> dict[int, list[int]]:
    """Record index -> indices of the segments it caused (for the page's script)."""
    out: dict[int, list[int]] = {}
    for i, s in enumerate(trace.wire):
        out.setdefault(s.rec, []).append(i)
    return out
