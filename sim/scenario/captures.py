"""Values a step captures (``capture: NAME``) and later steps use (``$NAME``, ``$NAME.port``).

What a capture holds:

- ``getsockname``, ``getpeername``, ``accept``: the address the call returned, ``{addr, port}``
  (for ``accept``, the peer's);
- ``bind``, ``connect``, ``listen``: the socket's own address right after the call (what a
  ``getsockname`` would show: the port ``bind(addr, 0)`` or ``connect`` picked);
- any other call: its return value.

A use of a value whose step failed (or is still blocked) is bad input, reported like every other
problem in a scenario file: one line with the file, line and column of the use.
"""

from __future__ import annotations

from typing import Any, Callable

from ..trace import StepRecord
from .expect import call_ok, value_ok
from .errors import ScenarioError
from .model import NAME_CALLS

SOCKNAME_CALLS = ("bind", "connect", "listen")


class Captures:
    """One run's captured values."""

    def __init__(self, scenario: Any, records: list[StepRecord]):
        self.sc = scenario
        self.records = records
        self.where: dict[str, int] = {}  # name -> record index
        self.sockname: dict[int, dict[str, Any] | None] = {}  # record index -> address after the call

    def keep(self, name: str, rec: StepRecord, sockname: Callable[[], dict[str, Any] | None]) -> None:
        self.where[name] = rec.index
        if rec.call in SOCKNAME_CALLS and rec.err is None:
            self.sockname[rec.index] = sockname()

    def completed(self, rec: StepRecord, sockname: Callable[[], dict[str, Any] | None]) -> None:
        """A captured call that blocked has returned: take its address now."""
        if rec.index in self.where.values() and rec.call in SOCKNAME_CALLS and rec.err is None:
            self.sockname[rec.index] = sockname()

    def value(self, name: str) -> Any:
        """The captured value, or None when its step failed or has not returned."""
        rec = self.records[self.where[name]]
        if rec.err is not None:
            return None
        if rec.call in NAME_CALLS:
            return rec.name
        if rec.call in SOCKNAME_CALLS:
            return self.sockname.get(rec.index)
        return rec.ret

    def resolve(self, step_index: int, line: int, key: str, ref: str) -> Any:
        """The value a ``$NAME[.part]`` written at ``key`` of step ``step_index`` stands for."""
        name, _, part = ref[1:].partition(".")
        val = self.value(name)
        if val is None:
            rec = self.records[self.where[name]]
            why = ("is still blocked" if rec.err == "BLOCKED" else f"failed ({rec.err})")
            ln, col = self.sc.ref_marks.get((step_index, key), (line, 0))
            raise ScenarioError(self.sc.source or "<scenario>", ln, col,
                                f"steps[{step_index}].{key}: expected a value captured from a step that "
                                f"succeeded, found {ref!r}, whose step (line {rec.line}) {why}")
        if isinstance(val, dict):
            return val.get(part or ("addr" if key == "addr" else "port"))
        return val

    def distinct(self, names: list[str]) -> int:
        vals = []
        for n in names:
            v = self.value(n)
            vals.append(v.get("port") if isinstance(v, dict) else v)
        return len({repr(v) for v in vals})

    def same(self, names: list[str]) -> bool:
        vals = [self.value(n) for n in names]
        return all(v is not None for v in vals) and len({repr(_canon_name(v)) for v in vals}) == 1

    def count(self, names: list[str], where: Any) -> int:
        n = 0
        for name in names:
            rec = self.records[self.where[name]]
            if call_ok(where, rec, rec.tolerate):
                n += 1
        return n


def _canon_name(v: Any) -> Any:
    """An address in one spelling (::ffff:127.0.0.1 and ::ffff:7f00:1 are one address)."""
    if isinstance(v, dict) and isinstance(v.get("addr"), str):
        import ipaddress

        try:
            return {**v, "addr": str(ipaddress.ip_address(v["addr"]))}
        except ValueError:
            return v
    return v


def run_checks(sc: Any, caps: Captures, make: Callable[[str, int], StepRecord]) -> list[StepRecord]:
    """One record per ``checks:`` entry, with its result in ``obs`` and whether it held."""
    out = []
    for i, chk in enumerate(sc.checks):
        line = sc.check_lines[i] if i < len(sc.check_lines) else 0
        rec = make("check", line)
        if chk.distinct is not None:
            rec.args = {"distinct": list(chk.distinct)}
            rec.obs = caps.distinct(chk.distinct)
            rec.expect = len(chk.distinct)
        elif chk.same is not None:
            rec.args = {"same": list(chk.same)}
            rec.obs = caps.same(chk.same)
            rec.expect = True
        else:
            rec.args = {"count": list(chk.count), "where": chk.where}
            rec.obs = caps.count(chk.count, chk.where)
            rec.expect = chk.expect
        rec.expect_ok = value_ok(rec.expect, rec.obs)
        out.append(rec)
    return out
