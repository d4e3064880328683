"""One fuzz example on both backends (its verdict and signature), and the step-by-step reduction."""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .steps import load_document, to_yaml



# ----------------------------------------------------------------------------- one example


@dataclass
class Verdict:
    """One example on both backends: agreement, and for each disagreeing step its signature."""

    agree: bool
    signatures: dict[int, str] = field(default_factory=dict)  # step index -> kind of divergence
    details: dict[int, list[str]] = field(default_factory=dict)  # step index -> readable lines
    real_outcomes: dict[int, Any] = field(default_factory=dict)  # step -> what the real kernel did
    unchecked: list[str] = field(default_factory=list)

    @property
    def signature(self) -> str | None:
        """The first disagreeing step's signature."""
        return self.signatures[min(self.signatures)] if self.signatures else None

    @property
    def primary(self) -> str | None:
        """What this example is counted as: the first disagreeing step's signature, passing over
        PROCESS_BUSY/PROCESS_GONE differences (harness conventions that ride along with others)
        when something else disagrees too. Later disagreements are usually consequences of the
        first one, so they do not make an example new."""
        order = [self.signatures[i] for i in sorted(self.signatures)]
        real = [sig for sig in order if not sig.startswith("PROCESS_")]
        return (real or order or [None])[0]

    def has(self, sig: str) -> bool:
        return self.primary == sig

    def steps_with(self, sig: str) -> list[int]:
        return sorted(i for i, s in self.signatures.items() if s == sig)


def _outcome_class(rec: Any) -> str:
    if rec.blocked and rec.completed_after is None:
        return "BLOCKED"
    if rec.err:
        word = rec.err
    elif rec.ret is None or rec.ret == 0 or rec.ret is True:
        word = "ok"
    else:
        word = "value"
    return f"BLOCKED then {word}" if rec.blocked else word


_VALUE_CALLS = ("getsockopt", "getsockname", "recv", "send", "socket", "accept", "dup", "dup2")


def _real_value(rec: Any) -> Any:
    """The real kernel's result of a step, as an ``expect:`` value."""
    if rec.kind == "observe":
        return rec.obs
    if rec.blocked and rec.completed_after is None:
        return "BLOCKED"
    if rec.err:
        return rec.err
    if rec.ret in (None, 0) and rec.call not in _VALUE_CALLS:
        return "ok"
    return rec.ret


def signature_of(a: Any, b: Any, fields: list[str]) -> str:
    """What kind of divergence this is, independent of where in the scenario it happens."""
    if a.kind == "call":
        ca, cb = _outcome_class(a), _outcome_class(b)
        if ca == cb and ca.startswith("PROCESS_"):  # the same whatever the call
            return f"{ca}: {'/'.join(fields)} differ"
        if ca != cb:
            return f"{a.call}: simulator {ca}, real {cb}"
        return f"{a.call}: {'/'.join(fields)} differ ({ca})"
    what = (a.args or {}).get("what", a.kind)
    if isinstance(a.obs, dict) and isinstance(b.obs, dict):
        keys = sorted(k for k in set(a.obs) | set(b.obs) if a.obs.get(k) != b.obs.get(k))
        return f"observe {what}: {'/'.join(keys)} differ"
    return f"observe {what}: {'/'.join(fields)} differ"


def _wait_orphans_gone(limit: float = 2.0) -> None:
    """Wait (bounded) until no orphaned TCP socket is left on the host.

    sockstat's ``orphan`` is host-wide and the real backend reports it as a delta from the start
    of the run. The namespace of the previous example is dismantled asynchronously, and an orphan
    it left (FIN_WAIT1 waiting for its retransmit timer) can vanish in the middle of the next run,
    which then sees a change it did not cause.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open("/proc/net/sockstat") as f:
                text = f.read()
        except OSError:
            return
        m = re.search(r"^TCP:.*\borphan (\d+)", text, re.M)
        if not m or int(m.group(1)) == 0:
            return
        time.sleep(0.02)


def evaluate(sc: Any) -> Verdict:
    """Run one scenario on both backends and compare (the real backend's errors propagate)."""
    from ..compare import compare_traces
    from ..engine import SimBackend
    from ..real.backend import RealBackend
    from ..scenario.runner import run

    try:
        sim = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    except Exception as exc:  # a crash of the model on a valid scenario is a divergence too
        tb = traceback.extract_tb(exc.__traceback__)
        where = tb[-1].name if tb else "?"
        sig = f"simulator raised {type(exc).__name__} in {where}"
        return Verdict(False, {0: sig}, {0: [f"{type(exc).__name__}: {exc}"]})
    if any(getattr(getattr(st, "observe", None), "what", None) == "sockstat" for st in sc.steps):
        _wait_orphans_gone()
    real = run(sc, RealBackend())
    # again, each step started when the kernel started it (time-dependent rules see the same clock)
    sim = run(sc, SimBackend(seed=sc.seed), seed=sc.seed, follow=real)
    return verdict_of(compare_traces(sc, sim, real), sim, real)


def verdict_of(result: Any, sim: Any, real: Any) -> Verdict:
    """The verdict of one comparison (:class:`sim.compare.Comparison`) of the traces ``sim`` and
    ``real``: a signature and readable lines for each disagreeing step, and for the wire."""
    # The wire counts here whatever the crosscheck enforces: a model that reaches the right
    # results through the wrong segments is a divergence too.
    agree = not result.disagreeing and not result.faults and result.wire.agree
    v = Verdict(agree, unchecked=list(result.unchecked))
    for d in result.steps:
        if not d.disagree:
            continue
        a, b = sim.steps[d.index], real.steps[d.index]
        fields = [t.split(":", 1)[0] for t in d.disagree]
        v.signatures[d.index] = signature_of(a, b, fields)
        label = (f"{a.proc} {a.call}({', '.join(f'{k}={x}' for k, x in a.args.items())})"
                 if a.kind == "call" else f"observe {a.args}")
        lines = [f"step {d.index}: {label}"] + [f"  {t}" for t in d.disagree]
        if a.rule:
            lines.append(f"  simulator's rule: {a.rule}: {a.cite}")
        v.details[d.index] = lines
        v.real_outcomes[d.index] = _real_value(b)
    if result.wire.disagree:  # the wire differs (expected: the real kernel's segments)
        rec, sig = result.wire.first or (0, "wire: the segments differ")
        v.signatures.setdefault(rec, sig)
        v.details.setdefault(rec, [])
        v.details[rec] = v.details[rec] + [f"step {rec}: the segments on the wire differ "
                                           "(expected: the real kernel's; found: the simulator's)"]
        v.details[rec] += [f"  {t}" for t in result.wire.disagree]
    if result.faults:  # the real run was not the scenario: no verdict on it, but no agreement
        v.signatures.setdefault(0, "the real run did not apply the scenario")
        v.details.setdefault(0, list(result.faults))
    return v


# ----------------------------------------------------------------------------- reduction


def _size(doc: dict[str, Any]) -> tuple[int, int]:
    return (len(doc["steps"]), len(to_yaml(doc)))


def _other_candidates(doc: dict[str, Any]):
    """Simpler variants other than a removed step: without one sysctl, one process or process
    option, one optional argument."""
    steps = doc["steps"]
    sysctls = doc["host"].get("sysctls", {})
    for k in list(sysctls):
        if k in ("ip_local_port_range", "tcp_tw_reuse_delay"):
            continue
        yield {**doc, "host": {**doc["host"], "sysctls": {x: v for x, v in sysctls.items() if x != k}}}
    used = {s.get("proc") for s in steps} | {s["observe"].get("proc") for s in steps if "observe" in s}
    for pname, spec in doc["processes"].items():
        if pname not in used and len(doc["processes"]) > 1:
            yield {**doc, "processes": {q: v for q, v in doc["processes"].items() if q != pname}}
        for k in list(spec or {}):
            yield {**doc, "processes": {**doc["processes"], pname: {x: v for x, v in spec.items() if x != k}}}
    for i, st in enumerate(steps):
        for k in ("flags", "nonblock", "backlog", "value", "how", "bytes", "family"):
            if k in st:
                yield {**doc, "steps": steps[:i] + [{x: v for x, v in st.items() if x != k}] + steps[i + 1:]}


def reduce(doc: dict[str, Any], still_fails: Callable[[dict[str, Any]], bool],
           deadline: float) -> dict[str, Any]:
    """Greedy reduction of what hypothesis' shrinking left in: remove each step in turn (last to
    first), then try the simpler variants of :func:`_other_candidates`; repeat while something
    was removed and the deadline (``time.monotonic()``) has not passed."""
    from ..scenario.loader import ScenarioError

    def ok(cand: dict[str, Any]) -> bool:
        if not cand["steps"]:
            return False
        try:
            load_document(cand)
        except ScenarioError:
            return False
        return still_fails(cand)

    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        i = len(doc["steps"]) - 1
        while i >= 0 and time.monotonic() < deadline:
            cand = {**doc, "steps": doc["steps"][:i] + doc["steps"][i + 1:]}
            if ok(cand):
                doc, changed = cand, True
            i -= 1
        progress = True
        while progress and time.monotonic() < deadline:
            progress = False
            for cand in _other_candidates(doc):
                if time.monotonic() >= deadline:
                    break
                if ok(cand):
                    doc, changed, progress = cand, True, True
                    break
    return doc
