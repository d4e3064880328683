"""What ``expect:`` means: matching a step's result against its expectation.

An expectation is one of:

- a word: ``ok`` (succeeded, did not block), ``error`` (failed, with any error), ``BLOCKED``,
  ``PROCESS_BUSY``, ``PROCESS_GONE``, or an errno name (failed with that error);
- a value: the call succeeded and returned exactly that (a list for ``poll``'s events, compared
  as a set; a mapping ``{addr, port}`` for the address a call returns);
- a set: ``{one_of: [...]}`` (any of the listed expectations) or ``{range: [lo, hi]}`` (the call
  succeeded with a number from lo to hi, inclusive).

Inside an observation's mapping, each value may itself be a set or a range. A step's tolerances
(``tolerate:``) say where the real kernel varies; they apply to the expectation too, on both
backends: a tolerated number is compared within its ``rel``/``abs`` bounds, and a tolerated field
without bounds is not compared at all.
"""

from __future__ import annotations

from typing import Any

from .model import NAME_CALLS, POLL_EVENTS

SET_KEYS = ("one_of", "range")
SYNONYMS = {"EWOULDBLOCK": "EAGAIN", "ENOTSUP": "EOPNOTSUPP"}
NOT_FAILURES = ("BLOCKED", "PROCESS_BUSY", "PROCESS_GONE")


def canon(name: str) -> str:
    """EADDRINUSE and WSAEADDRINUSE are one error; EWOULDBLOCK is EAGAIN."""
    if name.startswith("WSAE"):
        name = name[3:]
    return SYNONYMS.get(name, name)


def is_set(expect: Any) -> bool:
    """``{one_of: [...]}`` or ``{range: [lo, hi]}``: an expectation that admits several results."""
    return isinstance(expect, dict) and len(expect) == 1 and next(iter(expect)) in SET_KEYS


def varies(expect: Any) -> bool:
    """Whether the expectation admits more than one result anywhere (a set, a range, ``error``)."""
    if expect == "error" or is_set(expect):
        return True
    if isinstance(expect, dict):
        return any(varies(v) for v in expect.values())
    if isinstance(expect, list):
        return any(varies(v) for v in expect)
    return False


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _close(want: Any, got: Any, tol: Any) -> bool:
    if tol is None or not _num(want) or not _num(got):
        return want == got
    rel, ab = tol
    diff = abs(want - got)
    return diff == 0 or (ab is not None and diff <= ab) or (rel is not None and diff <= rel * max(abs(want), abs(got)))


def value_ok(expect: Any, got: Any, tol: Any = None) -> bool:
    """A value (an observation, or part of one) against an expectation that may hold sets."""
    if is_set(expect):
        key, arg = next(iter(expect.items()))
        if key == "one_of":
            return any(value_ok(e, got, tol) for e in arg)
        return _num(got) and arg[0] <= got <= arg[1]
    if isinstance(expect, dict):
        return isinstance(got, dict) and all(k in got and value_ok(v, got[k], tol) for k, v in expect.items())
    if isinstance(expect, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(expect) == len(got)
                and all(value_ok(e, g, tol) for e, g in zip(expect, got)))
    if isinstance(expect, str) and isinstance(got, str):
        return canon(expect) == canon(got) or _same_ip(expect, got)
    return _close(expect, got, tol)


def _same_ip(a: str, b: str) -> bool:
    """One address in two spellings (::ffff:127.0.0.1 is ::ffff:7f00:1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _tolerance(tolerate: list[dict[str, Any]] | None, fld: str) -> tuple[bool, Any]:
    """(covered, (rel, abs) or None): whether a tolerance names ``fld`` and its numeric bounds."""
    tols = [t for t in (tolerate or []) if t.get("field") in (fld, "all")]
    if not tols:
        return False, None
    rel = next((t.get("rel") for t in tols if t.get("rel") is not None), None)
    ab = next((t.get("abs") for t in tols if t.get("abs") is not None), None)
    return True, (None if rel is None and ab is None else (rel, ab))


def call_ok(expect: Any, rec: Any, tolerate: list[dict[str, Any]] | None = None) -> bool:
    """A call's (or observation's) record against its expectation, under its tolerances."""
    if expect is None:
        return True
    if rec.kind == "qt":  # a Qt call's value: true/false, an enum name, a number, a list
        return rec.err is None and rec.ret == expect
    if any(t.get("field") == "all" and t.get("rel") is None and t.get("abs") is None
           for t in (tolerate or [])):
        return True
    if rec.kind != "call":
        covered, bounds = _tolerance(tolerate, "obs")
        if covered and bounds is None:
            return True
        if isinstance(expect, str) and isinstance(rec.obs, str):
            return canon(expect) == canon(rec.obs)
        return value_ok(expect, rec.obs, bounds)
    failed = rec.err is not None and rec.err not in NOT_FAILURES
    err_covered, _ = _tolerance(tolerate, "err")
    ret_covered, bounds = _tolerance(tolerate, "ret")
    if is_set(expect) and next(iter(expect)) == "one_of":
        return any(call_ok(e, rec, tolerate) for e in expect["one_of"])
    if expect == "ok":
        return rec.err is None and not rec.blocked
    if expect == "error":
        return failed
    if expect == "BLOCKED":
        return rec.blocked
    if expect in NOT_FAILURES:
        return rec.err == expect
    if isinstance(expect, str) and (expect.isupper() or expect.startswith("WSA")):
        if rec.err is None:  # a value that is an error name, e.g. getsockopt(SO_ERROR)
            if isinstance(rec.ret, int) and not isinstance(rec.ret, bool):
                from ..personality.windows import WSA_NUMBERS

                return rec.ret == WSA_NUMBERS.get(canon(expect))  # Winsock reports its number
            return isinstance(rec.ret, str) and canon(rec.ret) == canon(expect)
        return failed and (err_covered or canon(rec.err) == canon(expect))
    if rec.err is not None:
        return False
    if ret_covered and bounds is None:
        return True
    got = rec.ret
    if isinstance(expect, dict) and not is_set(expect) and rec.call in NAME_CALLS:
        got = rec.name
    if rec.call == "poll" and isinstance(expect, list) and isinstance(got, list):
        return set(expect) == set(got)
    return value_ok(expect, got, bounds)


def poll_names(mask: int, table: dict[str, int]) -> list[str]:
    """An event mask as a list of names, in the order POLL_EVENTS lists them."""
    return [n for n in POLL_EVENTS if mask & table[n]]
