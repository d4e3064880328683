"""The wire as an SVG ladder (sequence) diagram, as Wireshark's flow graph draws it.

One lifeline per endpoint (``address:port``), in order of first appearance; one arrow per
segment, top to bottom in the order the segments went on the wire, labelled with its flags,
relative sequence/acknowledgement numbers, length and window; the step that caused it in the
left margin (each segment is a link to its step: ``data-step``); the TCP state of each side
written on its lifeline where it changes. Plain SVG text, no script: the page's JavaScript
highlights the current step's segments and dims the later ones.
"""

from __future__ import annotations

import html
from typing import Any

from ..trace import Trace, WireSegment, options_text

E = html.escape

ROW = 30  # vertical distance between two segments
COL = 290  # distance between two lifelines
MARGIN = 64  # left margin: the step numbers
TOP = 44  # room for the endpoint names
STATE_W = 84  # a state label's box on a lifeline
FONT = 11


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


def ladder_svg(trace: Trace, step_titles: dict[int, str] | None = None) -> str:
    """The trace's segments as one ``<svg>`` element (an empty-wire note if there are none)."""
    wire = trace.wire
    if not wire:
        return '<p class="empty">No segment was put on the wire.</p>'
    eps = endpoints(wire)
    xs = {ep: MARGIN + STATE_W // 2 + 40 + i * COL for i, ep in enumerate(eps)}
    width = MARGIN + STATE_W + 80 + (len(eps) - 1) * COL
    height = TOP + (len(wire) + 1) * ROW + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="ui-monospace, Menlo, Consolas, monospace" '
             f'font-size="{FONT}" role="img" aria-label="segments on the wire">',
             '<defs><marker id="ladder-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
             'fill="context-stroke"/></marker></defs>']
    for ep, x in xs.items():
        parts.append(f'<text class="ep" x="{x}" y="16" text-anchor="middle" font-weight="bold">{E(ep)}</text>')
        parts.append(f'<line class="life" x1="{x}" y1="24" x2="{x}" y2="{height - 6}" stroke="#9aa5b1" '
                     'stroke-dasharray="4 3"/>')
    shown: dict[str, str] = {}
    last_rec = None
    for i, s in enumerate(wire):
        y = TOP + i * ROW + ROW // 2
        x1, x2 = xs[s.src], xs[s.dst]
        title = (step_titles or {}).get(s.rec, f"step {s.rec}")
        parts.append(f'<g class="seg" data-step="{s.rec}" data-conn="{s.conn}">')
        parts.append(f"<title>{E(title)}: {E(s.src)} &#8594; {E(s.dst)} {E(s.line())}</title>")
        if s.rec != last_rec:
            parts.append(f'<text class="stepno" x="6" y="{y + 4}">#{s.rec}</text>')
            parts.append(f'<line x1="2" y1="{y - ROW // 2}" x2="{width - 2}" y2="{y - ROW // 2}" '
                         'stroke="#e3e8ee"/>')
            last_rec = s.rec
        color = "#d62728" if "RST" in s.flags else ("#1f5fa8" if "SYN" in s.flags or "FIN" in s.flags
                                                    else "#2b3a4a")
        if x1 == x2:  # a socket connected to itself: a loop on its lifeline
            parts.append(f'<path d="M{x1},{y - 6} h40 v12 h-38" fill="none" stroke="{color}" '
                         'stroke-width="1.6" marker-end="url(#ladder-arrow)"/>')
            lx, anchor = x1 + 46, "start"
        else:
            parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" '
                         'stroke-width="1.6" marker-end="url(#ladder-arrow)"/>')
            lx, anchor = (x1 + x2) // 2, "middle"
        parts.append(f'<text class="lbl" x="{lx}" y="{y - 4}" text-anchor="{anchor}" fill="{color}">'
                     f"{E(segment_label(s))}</text>")
        if s.opts:
            parts.append(f'<text class="opt" x="{lx}" y="{y + 11}" text-anchor="{anchor}" '
                         f'fill="#5b6675" font-size="{FONT - 2}">&lt;{E(options_text(s.opts))}&gt;</text>')
        parts.append("</g>")
        parts.extend(_states(s, xs, y, shown))
    parts.append("</svg>")
    return "".join(parts)


def _states(s: WireSegment, xs: dict[str, int], y: int, shown: dict[str, str]) -> list[str]:
    """A state box on each side's lifeline where its state (after the step) changed."""
    out: list[str] = []
    for ep, st in zip((s.src, s.dst), list(s.states) + ["", ""]):
        if not st or shown.get(ep) == st:
            continue
        shown[ep] = st
        x = xs[ep] - STATE_W // 2
        out.append(f'<g class="state" data-step="{s.rec}"><rect x="{x}" y="{y + 2}" width="{STATE_W}" '
                   f'height="14" rx="3" fill="#fff3bf" stroke="#c9a400"/><text x="{xs[ep]}" y="{y + 13}" '
                   f'text-anchor="middle" font-size="{FONT - 2}">{E(st)}</text></g>')
    return out


def ladder_panel(trace: Trace, step_titles: dict[int, str] | None = None) -> str:
    n = len(trace.wire)
    conns = len({s.conn for s in trace.wire})
    return (f'<div class="panel" id="wire-box"><h2>The wire</h2><p class="hint">{n} segment'
            f'{"s" if n != 1 else ""} in {conns} connection{"s" if conns != 1 else ""}: sequence and '
            'acknowledgement numbers relative to each side\'s initial sequence number; the TCP state '
            'of each side (after the step) on its lifeline. Click a segment to go to its step.</p>'
            f'<div id="ladder">{ladder_svg(trace, step_titles)}</div></div>')


def wire_summary(trace: Any) -> dict[int, list[int]]:
    """Record index -> indices of the segments it caused (for the page's script)."""
    out: dict[int, list[int]] = {}
    for i, s in enumerate(trace.wire):
        out.setdefault(s.rec, []).append(i)
    return out
