"""The wire: compare two traces' segments, and draw them as a ladder.

Per connection (numbered in order of first segment, the same way for both backends: see
:class:`sim.trace.WireNumbering`), the sequence of segments must match: direction, flags,
relative sequence and acknowledgement numbers, payload length, and the step that caused each
segment. Windows and options are compared too, except where the scenario tolerates them
(``wire.win``, ``wire.opts``, scenario-wide or on a step); ``wire.step`` on a step lets its
segments show up linked to the next step instead; ``wire`` on a step leaves the segments it
caused out of the exact comparison (the differences are still reported, as tolerated).
Addresses are shown but not compared: the real kernel picks its ephemeral ports at random.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable

from .trace import StepRecord, Trace, WireSegment


@dataclass
class WireComparison:
    checked: bool = True
    why: str = ""  # why the wire was not compared
    disagree: list[str] = field(default_factory=list)  # human-readable diff lines that count
    tolerated: list[str] = field(default_factory=list)
    connections: int = 0  # connections compared
    first: tuple[int, str] | None = None  # (record, signature) of the earliest divergence

    @property
    def agree(self) -> bool:
        return not self.disagree


def _tolerances(rec: StepRecord | None, scenario_wide: Iterable[Any]) -> dict[str, str]:
    """field -> reason, for the wire fields a segment linked to ``rec`` is allowed to differ in."""
    out = {}
    for t in scenario_wide:
        f, r = (t.field, t.reason) if hasattr(t, "field") else (t["field"], t["reason"])
        out[f] = r
    for t in (rec.tolerate if rec is not None else []):
        if t.get("field", "").startswith("wire"):
            out[t["field"]] = t["reason"]
    return out


def _groups(steps: list[StepRecord]) -> list[int]:
    """Record index -> comparison group: a step tolerating ``wire.step`` shares its group with
    the records that follow it up to the next step that can put segments on the wire (an
    observation cannot)."""
    group, out, carry = 0, [], False
    for i, rec in enumerate(steps):
        if not carry:
            group = i
        if any(t.get("field") == "wire.step" for t in rec.tolerate):
            carry = True
        elif rec.kind != "observe" and i != group:
            carry = False
        out.append(group)
    return out


def step_label(steps: list[StepRecord], rec: int) -> str:
    if rec >= len(steps):
        return f"step {rec}"
    r = steps[rec]
    what = f"{r.proc} {r.call}" if r.call else r.kind
    return f"step {r.step if r.step is not None else rec} (line {r.line}, {what})"


def _key(seg: WireSegment, tol: dict[str, str], group: int) -> tuple:
    return (group, seg.dir, seg.flags, seg.seq, seg.ack, seg.len,
            None if "wire.win" in tol else seg.win,
            None if "wire.opts" in tol else tuple(sorted(seg.opts.items())))


def segment_text(seg: WireSegment, steps: list[StepRecord]) -> str:
    return f"{step_label(steps, seg.rec)}: {seg.src} > {seg.dst} {seg.line()}"


def compare_wire(scenario: Any, sim: Trace, real: Trace) -> WireComparison:
    """The real trace's segments are what is expected; the simulator's are what was found.

    A segment is placed by its own trace's record, named by the scenario step it comes from: a
    timer's slot makes one record per call it made, and the two backends need not make the same
    number of records for the segments of one step to match."""
    wire_note = str((real.summary or {}).get("wire", ""))
    if not wire_note.startswith("captured"):
        return WireComparison(checked=False, why=f"the real kernel's wire was {wire_note or 'not captured'}")
    scenario_wide = list(getattr(scenario, "tolerate", None) or [])
    out = WireComparison()
    conns = sorted({s.conn for s in sim.wire} | {s.conn for s in real.wire})
    out.connections = len(conns)
    sides = (_Side(real.steps, scenario_wide), _Side(sim.steps, scenario_wide))
    for c in conns:
        want = [s for s in real.wire if s.conn == c]
        got = [s for s in sim.wire if s.conn == c]
        _compare_connection(c, want, got, sides, out)
    return out


class _Side:
    """One trace's records, as the comparison reads them for that trace's segments."""

    def __init__(self, steps: list[StepRecord], scenario_wide: list[Any]):
        self.steps, self.scenario_wide = steps, scenario_wide
        self.groups = _groups(steps)

    def tolerances(self, seg: WireSegment, scenario_wide: bool = True) -> dict[str, str]:
        return _tolerances(_at(self.steps, seg.rec), self.scenario_wide if scenario_wide else ())

    def key(self, seg: WireSegment) -> tuple:
        head = self.groups[seg.rec] if seg.rec < len(self.groups) else seg.rec
        rec = _at(self.steps, head)
        step = rec.step if rec is not None and rec.step is not None else head
        return _key(seg, self.tolerances(seg), step)

    def keys(self, segs: list[WireSegment]) -> list[tuple]:
        return [self.key(s) for s in segs]

    def split(self, segs: list[WireSegment]) -> tuple[list[WireSegment], list[WireSegment]]:
        loose = [s for s in segs if "wire" in self.tolerances(s, False)]
        return [s for s in segs if s not in loose], loose


def _compare_connection(c: int, want: list[WireSegment], got: list[WireSegment],
                        sides: tuple[_Side, _Side], out: WireComparison) -> None:
    real, sim = sides
    want_strict, want_loose = real.split(want)
    got_strict, got_loose = sim.split(got)
    ends = want[0] if want else got[0]
    head = f"connection {c} ({ends.src} > {ends.dst}):"
    wk, gk = real.keys(want_strict), sim.keys(got_strict)
    lines = _diff(wk, gk, want_strict, got_strict, sides)
    if lines:
        out.disagree.append(head)
        out.disagree.extend(lines)
        sig = _first_divergence(wk, gk, want_strict, got_strict)
        if sig and (out.first is None or sig[0] < out.first[0]):
            out.first = sig
    loose = _diff(real.keys(want_loose), sim.keys(got_loose), want_loose, got_loose, sides)
    if loose:
        reasons = {real.tolerances(s, False)["wire"] for s in want_loose}
        reasons |= {sim.tolerances(s, False)["wire"] for s in got_loose}
        out.tolerated.append(f"{head} (tolerated: {'; '.join(sorted(reasons))})")
        out.tolerated.extend(loose)
    for w, g in zip(want_strict, got_strict):
        tol = real.tolerances(w)
        for f, name in (("win", "wire.win"), ("opts", "wire.opts")):
            if name in tol and getattr(w, f) != getattr(g, f):
                out.tolerated.append(f"{head} {segment_text(w, real.steps)}: {f} real {getattr(w, f)}, "
                                     f"simulator {getattr(g, f)} ({tol[name]})")


def _first_divergence(a: list[tuple], b: list[tuple], want: list[WireSegment],
                      got: list[WireSegment]) -> tuple[int, str] | None:
    """(record, "wire: expected FLAGS, found FLAGS") of the first segment that differs."""
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        w = want[i1] if i1 < i2 else None
        g = got[j1] if j1 < j2 else None
        rec = min(x.rec for x in (w, g) if x is not None)
        if w is not None and g is not None and (w.dir, w.flags) == (g.dir, g.flags):
            ka, kb = a[i1], b[j1]
            what = [name for name, x, y in zip(("step", "dir", "flags", "seq", "ack", "len", "win",
                                                 "opts"), ka, kb) if x != y]
            return rec, f"wire: {w.dir}{w.flags} differs in {'/'.join(what) or 'order'}"
        return rec, (f"wire: expected {w.dir}{w.flags}" if w else "wire: expected nothing") + (
            f", found {g.dir}{g.flags}" if g else ", found nothing")
    return None


def _at(steps: list[StepRecord], rec: int) -> StepRecord | None:
    return steps[rec] if 0 <= rec < len(steps) else None


def _diff(a: list[tuple], b: list[tuple], want: list[WireSegment], got: list[WireSegment],
          sides: tuple[_Side, _Side]) -> list[str]:
    """Readable lines: '  expected (real kernel): ...' / '  found (simulator): ...'."""
    real, sim = sides[0].steps, sides[1].steps
    lines: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        for s in want[i1:i2]:
            lines.append(f"  expected (real kernel): {segment_text(s, real)}")
        for s in got[j1:j2]:
            lines.append(f"  found (simulator):      {segment_text(s, sim)}")
        if op == "delete":
            lines.append("  found (simulator):      (nothing)")
        if op == "insert":
            lines.insert(len(lines) - (j2 - j1), "  expected (real kernel): (nothing)")
    return lines


# --------------------------------------------------------------------------- ladder (terminal)

def ladder(trace: Trace, width: int = 34) -> list[str]:
    """The segments as a text ladder, like Wireshark's flow graph: per connection the initiator
    on the left; each side's TCP state (after the step) where it changed.

    ``c1 127.0.0.1:40000 SYN_SENT |---- SYN 0:0 win 65495 ---->| LISTEN 127.0.0.1:9500``
    """
    out: list[str] = []
    last_rec = None
    shown: dict[str, str] = {}
    for seg in trace.wire:
        if seg.rec != last_rec:
            out.append(step_label(trace.steps, seg.rec))
            last_rec = seg.rec
        forward = seg.dir == ">"
        left, right = (seg.src, seg.dst) if forward else (seg.dst, seg.src)
        label = f"{seg.flags} {seg.seq}:{seg.seq + seg.len}"
        label += (f" ack {seg.ack}" if "ACK" in seg.flags else "") + f" win {seg.win}"
        body = f" {label} ".center(width, "-")
        arrow = f"|{body}>|" if forward else f"|<{body}|"
        st = list(seg.states if forward else seg.states[::-1]) + ["", ""]
        cols = []
        for ep, state in ((left, st[0]), (right, st[1])):
            cols.append(state if state and shown.get(ep) != state else "")
            if state:
                shown[ep] = state
        out.append(f"  c{seg.conn} {left:>22} {cols[0]:<11} {arrow} {cols[1]:<11} {right}"
                   + (f"  <{_opts(seg)}>" if seg.opts else ""))
    return out


def _opts(seg: WireSegment) -> str:
    from .trace import options_text

    return options_text(seg.opts)
