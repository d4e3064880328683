"""The explainer: for one step of a run, the rule that decided it, its citation, the facts, the
kernel's state before it, what happened meanwhile, and what-if variants."""

from __future__ import annotations

from typing import Any

from .windows import SOURCES as WIN_SOURCES, translate
from ..graph import Recording, record
from ..kernel.rules import RULES, decisive
from ..trace import StepRecord
from .facts import Facts
from .text import Explanation, SOURCES, _who, call_text, outcome_text, syscall_line
from .whatif import WhatIfs


class Explainer(Facts, WhatIfs):
    """Explanations of every record of one scenario run (seeded; the run is repeated as needed)."""

    def __init__(self, scenario: Any, seed: int = 0, recording: Recording | None = None,
                 whatif: bool = True, personality: str | None = None):
        self.sc = scenario
        self.seed = seed
        self.personality = personality
        self.r = recording or record(scenario, seed=seed, personality=personality)
        self.trace = self.r.trace
        self.whatif = whatif
        self.base = scenario.model_dump(by_alias=True)
        self._runs: dict[str, Recording | None] = {}
        self._record_of: dict[int, tuple[Recording, dict[tuple[int, int | None], int]]] = {}
        self._base_rows: list[tuple] | None = None  # the base run's records, as knock-ons compare them
        self._prefetched = False
        self._forked: dict[tuple[int, str], tuple[bool, str | None, str]] = {}  # prefetch_whatifs()
        self._by_step: tuple[dict[int, list[int]], dict[int, list[Any]]] | None = None
        self.runs = 0
        self.windows = self.trace.personality == "windows"  # explained in Windows' terms

    # ------------------------------------------------------------------ public
    def explain(self, i: int) -> Explanation:
        rec = self.trace.steps[i]
        gb, ga = self.r.before(i), self.r.after(i)
        ex = Explanation(index=i, line=rec.line, time=rec.time, proc=rec.proc, kind=rec.kind,
                         what=call_text(rec), outcome=outcome_text(rec), via=getattr(rec, "via", None),
                         syscalls=[syscall_line(c) for c in getattr(rec, "syscalls", [])],
                         expect=rec.expect, expect_ok=rec.expect_ok, effect=self.r.effects.get(i, ""))
        ex.note = self._note(i)
        self._decision(ex, rec)
        ex.facts = list(rec.facts)
        ex.state = self._state_facts(i, rec, gb, ga)
        ex.during = self._during(i)
        if self.whatif:
            ex.whatifs = self._whatifs(i, rec, gb, ga)
        if self.windows:
            translate(ex)
        return ex

    def explain_all(self) -> list[Explanation]:
        self.prefetch_whatifs()
        return [self.explain(i) for i in range(len(self.trace.steps))]

    # ------------------------------------------------------------------ decision and source
    def _note(self, i: int) -> str | None:
        s, via = self.r.step_of[i] if i < len(self.r.step_of) else (i, None)
        if via is not None or s >= len(self.sc.steps):
            return None
        return getattr(self.sc.steps[s], "note", None)

    def _decision(self, ex: Explanation, rec: StepRecord) -> None:
        seen: list[str] = []
        for rid in rec.trail:
            if rid not in seen:
                seen.append(rid)
        ex.trail = [(rid, RULES[rid].cite if rid in RULES else "") for rid in seen]
        if rec.rule:
            ex.rule, ex.cite = rec.rule, rec.cite or (RULES[rec.rule].cite if rec.rule in RULES else None)
            ex.doc = RULES[rec.rule].doc if rec.rule in RULES else None
            ex.decided_by = "rule"
            if not ex.cite:
                ex.cite = self._source_for(rec)[1]
            return
        fallback = decisive(rec.trail) if rec.trail else None
        if fallback in RULES and rec.kind == "call" and rec.err not in ("PROCESS_GONE", "PROCESS_BUSY"):
            # a call that blocked and completed later: the rules consulted when it was issued decide
            ex.rule, ex.cite, ex.doc, ex.decided_by = fallback, RULES[fallback].cite, RULES[fallback].doc, "rule"
            return
        kind, cite = self._source_for(rec)
        ex.decided_by, ex.cite = kind, cite
        if rec.kind == "load":
            rules = self.r.load_rules.get(rec.index, {})
            if rules:
                first = (rec.obs or {}).get("first_error") or next(iter(rules))
                rid = rules.get(first) or next(iter(rules.values()))
                if rid in RULES:
                    ex.rule, ex.cite, ex.doc, ex.decided_by = rid, RULES[rid].cite, RULES[rid].doc, "rule"
        if rec.kind == "sleep":
            trans = [t for t in self.r.transitions if t.step == rec.index]
            if trans and "tcp.transition" in RULES and not any(e for e in self.r.events if e[0] == rec.index):
                ex.rule = "tcp.transition"
                ex.doc = RULES["tcp.transition"].doc
                ex.cite = RULES["tcp.transition"].cite.rstrip(".") + "; " + cite

    def _source_for(self, rec: StepRecord) -> tuple[str, str]:
        if rec.err in ("PROCESS_GONE", "PROCESS_BUSY"):
            return SOURCES[rec.err]
        if rec.kind == "observe":
            if self.windows:
                return WIN_SOURCES.get(f"observe:{rec.args.get('what')}", WIN_SOURCES["observe:tcp_states"])
            return SOURCES.get(f"observe:{rec.args.get('what')}", SOURCES["observe:tcp_states"])
        if rec.kind == "sleep":
            if any(e[0] == rec.index and "TIME_WAIT" in e[2] for e in self.r.events):
                return SOURCES["sleep:tw"]
            return SOURCES["sleep"]
        if rec.kind == "load":
            return SOURCES["load"]
        return SOURCES.get(f"call:{rec.call}", SOURCES["call"])

    def _at_step(self) -> tuple[dict[int, list[int]], dict[int, list[Any]]]:
        """The run's events (their indices) and TCP transitions by step, indexed once per run
        (explaining every step then reads each event once, not once per step)."""
        if self._by_step is None:
            events: dict[int, list[int]] = {}
            for n, (step, _, _) in enumerate(self.r.events):
                events.setdefault(step, []).append(n)
            moves: dict[int, list[Any]] = {}
            for t in self.r.transitions:
                moves.setdefault(t.step, []).append(t)
            self._by_step = (events, moves)
        return self._by_step

    def _during(self, i: int) -> list[str]:
        events, moves = self._at_step()
        items: list[tuple[float, int, str]] = []
        for n in events.get(i, ()):
            _, tm, text = self.r.events[n]
            seq = self.r.event_seq[n] if n < len(self.r.event_seq) else 0
            items.append((tm, seq, f"t={tm:.6g} s  {text}"))
        for t in moves.get(i, ()):
            who = _who(self.r.tracks.get(t.track))
            extra = f" ({t.note})" if t.note and "inferred" not in t.note else ""
            items.append((t.time, t.seq, f"t={t.time:.6g} s  {who}: {t.src} --{t.event}--> {t.dst}{extra}"))
        return [text for _, _, text in sorted(items, key=lambda x: (x[0], x[1]))]

    def during_rows(self, i: int) -> list[str]:
        """What happened during step ``i`` as a summary (a load step's thousands of state changes):
        each transition-table row taken, how many times and when first and last, in order of
        first use; then how many other kernel events there were."""
        events, moves = self._at_step()
        rows: dict[tuple[str, str, str], list[Any]] = {}
        for t in sorted(moves.get(i, ()), key=lambda t: (t.time, t.seq)):
            row = rows.setdefault((t.src, t.event, t.dst), [0, t.time, t.time])
            row[0] += 1
            row[2] = t.time
        out = [f"{n} x {src} --{event}--> {dst}" + (f" (t={first:.6g} s)" if first == last
                                                    else f" (t={first:.6g} to {last:.6g} s)")
               for (src, event, dst), (n, first, last) in rows.items()]
        if events.get(i):
            out.append(f"{len(events[i])} other kernel event(s) (TIME_WAIT expiries, orphaned FIN_WAIT2 "
                       "minisocks, SYN retransmissions)")
        return out
