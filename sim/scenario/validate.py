"""Checks that need the whole scenario: expectations' shapes, captured values and their uses.

Run by the loader after the typed validation, so every problem here is still one line with the
file, line and column of the offending value: a misspelt TCP state in an observation's
expectation, a range with its bounds reversed, a ``$name`` used before (or without) a step that
captures it, a port slot given a captured address, a value captured from a step that is expected
to fail.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from .expect import SET_KEYS, is_set
from .fields import WINDOWS_ONLY_OPTIONS
from .model import (
    ERRNO_NAMES, NAME_CALLS, OUTCOME_WORDS, PAIR_OPTS, POLL_EVENTS, TCP_INFO_FIELDS, WSA_NAMES,
    Scenario, step_kind,
)

TCP_STATE_NAMES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
                   "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")
CA_STATES = ("OPEN", "DISORDER", "CWR", "RECOVERY", "LOSS")
WORDS = ERRNO_NAMES | WSA_NAMES | OUTCOME_WORDS
REF_SLOTS = {"port": "port", "addr": "addr", "value": "value"}  # call key -> what it takes

Fail = Callable[[tuple, str], None]


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the text {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return "nothing" if v is None else type(v).__name__


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_set(v: Any, path: tuple, fail: Fail, leaf: Callable[[Any, tuple], None]) -> None:
    """A ``{one_of: [...]}`` / ``{range: [lo, hi]}`` form, each member checked by ``leaf``."""
    key, arg = next(iter(v.items()))
    if key == "one_of":
        if not isinstance(arg, list) or not arg:
            fail(path + (key,), f"expected one_of: a non-empty list of alternatives, found {_kind(arg)}")
        for i, e in enumerate(arg):
            leaf(e, path + (key, i))
        return
    if not (isinstance(arg, list) and len(arg) == 2 and all(_number(x) for x in arg)):
        fail(path + (key,), f"expected range: [low, high], two numbers, found {_kind(arg)}"
             + (f" of {len(arg)} items" if isinstance(arg, list) else ""))
    if arg[0] > arg[1]:
        fail(path + (key,), f"expected range: [low, high] with low <= high, found the bounds "
                            f"reversed ({arg[0]} > {arg[1]})")


def _scalar(v: Any, path: tuple, fail: Fail, what: str, ok: Callable[[Any], bool]) -> None:
    if is_set(v):
        check_set(v, path, fail, lambda e, p: _scalar(e, p, fail, what, ok))
        return
    if isinstance(v, dict) and any(k in SET_KEYS for k in v):
        fail(path, "expected {one_of: [...]} or {range: [low, high]} alone in its mapping, found "
                   f"other keys beside it: {', '.join(sorted(map(str, v)))}")
    if not ok(v):
        fail(path, f"expected {what}, found {_kind(v)}")


def _mapping(v: Any, path: tuple, fail: Fail, fields: dict[str, tuple[str, Callable[[Any], bool]]]) -> None:
    if not isinstance(v, dict) or is_set(v):
        fail(path, f"expected a mapping with some of the keys {', '.join(fields)}, found {_kind(v)}")
    for k, sub in v.items():
        if k not in fields:
            from .problems import _suggest

            fail(path + (k,), f"expected a key among {', '.join(fields)}, found {k!r}{_suggest(k, fields)}")
        what, ok = fields[k]
        if what.startswith("a list of"):
            if not isinstance(sub, list):
                fail(path + (k,), f"expected {what}, found {_kind(sub)}")
            for i, e in enumerate(sub):
                _scalar(e, path + (k, i), fail, what[len("a list of "):], ok)
        else:
            _scalar(sub, path + (k,), fail, what, ok)


def _state(v: Any) -> bool:
    return isinstance(v, str) and v in TCP_STATE_NAMES


INT = ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))
OBS_SHAPES: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "tcp_states": {"local": ("a list of TCP state names (LISTEN, ESTABLISHED, TIME_WAIT, ...)", _state),
                   "remote": ("a list of TCP state names (LISTEN, ESTABLISHED, TIME_WAIT, ...)", _state)},
    "sockstat": {"inuse": INT, "orphan": INT, "tw": INT, "nonpaged_pool_bytes": INT},
    "queues": {"recv_q": INT, "send_q": INT},
    "timer": {"active": ("true or false", lambda v: isinstance(v, bool)), "interval": INT,
              "remaining_ms": INT, "single_shot": ("true or false", lambda v: isinstance(v, bool)),
              "type": ("a timer type", lambda v: v in ("PreciseTimer", "CoarseTimer", "VeryCoarseTimer")),
              "timeouts": INT},
    "tcp_info": {**{f: INT for f in TCP_INFO_FIELDS},
                 "state": ("a TCP state name (LISTEN, ESTABLISHED, CLOSE_WAIT, ...)", _state),
                 "ca_state": (f"a congestion state ({', '.join(CA_STATES)})", lambda v: v in CA_STATES)},
}


def _word_or(v: Any) -> bool:
    return isinstance(v, str) and v in WORDS


def check_expect(step: Any, expect: Any, path: tuple, fail: Fail) -> None:
    """The shape of one step's ``expect:`` (path locates it in the file)."""
    if expect is None:
        return
    kind = step_kind(step)
    if kind == "observe":
        what = step.observe.what
        if isinstance(expect, str) and expect in WORDS:
            return  # e.g. PROCESS_GONE, or the errno of a queues observation
        if what == "fds":
            if not isinstance(expect, list):
                fail(path, f"expected a list of fd numbers, found {_kind(expect)}")
            for i, e in enumerate(expect):
                _scalar(e, path + (i,), fail, "an fd number", INT[1])
            return
        if what == "tcp_info":
            fields = {k: OBS_SHAPES["tcp_info"][k] for k in step.observe.fields}
            if isinstance(expect, dict):
                for k in expect:
                    if k not in fields and k in OBS_SHAPES["tcp_info"]:
                        fail(path + (k,), f"expected a field this observation reads ({', '.join(fields)}), "
                                          f"found {k!r}: add it to fields:")
            _mapping(expect, path, fail, fields)
            return
        _mapping(expect, path, fail, OBS_SHAPES[what])
        return
    if kind != "call":
        return
    call = step.call
    pair = call == "getsockopt" and getattr(step, "opt", None) in PAIR_OPTS

    def leaf(v: Any, p: tuple) -> None:
        if is_set(v):
            if call == "poll" and "range" in v:
                fail(p + ("range",), "expected a list of poll events (poll returns the ready events, "
                                     "not a number), found a range")
            check_set(v, p, fail, leaf)
        elif isinstance(v, dict) and any(k in SET_KEYS for k in v):
            fail(p, "expected {one_of: [...]} or {range: [low, high]} alone in its mapping, found "
                    f"other keys beside it: {', '.join(sorted(map(str, v)))}")
        elif isinstance(v, (bool, float)):
            fail(p, f"expected a whole number, an errno name, ok, error, {{one_of: [...]}} or "
                    f"{{range: [low, high]}}, found {_kind(v)} ({call} returns whole numbers)")
        elif isinstance(v, str):
            if v not in WORDS:
                fail(p, f"expected ok, error, BLOCKED or an errno name (e.g. EADDRINUSE), found {v!r}")
        elif isinstance(v, dict) and call == "getsockopt" and getattr(step, "optlen", None) is not None:
            _mapping(v, p, fail, {"value": ("a pair of whole numbers" if pair else "a whole number or an "
                                            "errno name", lambda x: _option_value(x, pair)),
                                  "optlen": INT})
        elif isinstance(v, dict):
            if call not in NAME_CALLS:
                fail(p, f"expected a value, an errno name, ok, error, {{one_of: [...]}} or "
                        f"{{range: [low, high]}}, found a mapping ({call} returns no address)")
            _mapping(v, p, fail, {"addr": ("an IPv4 or IPv6 address", _is_addr), "port": ("a port", _is_port)})
        elif isinstance(v, list):
            if call == "poll":
                for i, e in enumerate(v):
                    if e not in POLL_EVENTS:
                        from .problems import _suggest

                        fail(p + (i,), f"expected a poll event ({', '.join(POLL_EVENTS)}), found "
                                       f"{_kind(e)}{_suggest(e, POLL_EVENTS)}")
            elif not pair:
                fail(p, f"expected a single value, found a list ({call} returns one value)")
            elif len(v) != 2:
                fail(p, f"expected a pair [a, b] ({step.opt} is two numbers), found a list of {len(v)} items")
            else:
                for i, e in enumerate(v):
                    _scalar(e, p + (i,), fail, "a whole number", INT[1])
        elif call == "poll":
            fail(p, f"expected a list of poll events (e.g. [POLLIN, POLLOUT]), found {_kind(v)}")

    leaf(expect, path)


def _option_value(v: Any, pair: bool) -> bool:
    """What getsockopt() can return as an option's value: a number (a pair for SO_LINGER and
    IP_LOCAL_PORT_RANGE), or an error name (SO_ERROR)."""
    if pair:
        return isinstance(v, list) and len(v) == 2 and all(INT[1](x) for x in v)
    return INT[1](v) or (isinstance(v, str) and v in WORDS)


def _is_addr(v: Any) -> bool:
    try:
        ipaddress.ip_address(v)
        return isinstance(v, str)
    except ValueError:
        return False


def _is_port(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535


def _fails(expect: Any) -> bool:
    """Whether the expectation says the call fails (so it has no value to capture)."""
    if isinstance(expect, str):
        return expect == "error" or (expect not in OUTCOME_WORDS and expect in ERRNO_NAMES | WSA_NAMES)
    if is_set(expect) and "one_of" in expect:
        return all(_fails(e) for e in expect["one_of"])
    return False


POINTER_KEYS = ("null", "addrlen")  # NULL pointers and address lengths (WSAEFAULT on Windows)


def check_windows_only(sc: Scenario, step: Any, where: tuple, fail: Fail) -> None:
    """Arguments only the Windows personality models: NULL pointers, address lengths and the options
    the Linux model does not have. On a Linux host they are refused here, not answered with a
    result the Linux model would make up."""
    if sc.host_of(step.proc).personality == "windows":
        return
    for key in POINTER_KEYS:
        v = getattr(step, key, None)
        if v not in (None, []):
            fail(where + (key,), f"expected no {key}: on a Linux host; NULL pointers and address lengths "
                                 "(WSAEFAULT) are modelled for the Windows personality only "
                                 "(host: {personality: windows})")
    opt = getattr(step, "opt", None)
    if opt in WINDOWS_ONLY_OPTIONS:
        fail(where + ("opt",), f"expected an option the Linux model has, found {opt}: it is modelled for "
                               "the Windows personality only (host: {personality: windows})")


def check_scenario(sc: Scenario, data: dict, mark: Callable[[tuple], tuple[int, int]],
                   raise_at: Callable[[int, int, str], None]) -> dict[tuple[int, str], tuple[int, int]]:
    """Check expectations, captures and references; return where each reference is written."""
    captures: dict[str, tuple[int, Any]] = {}  # name -> (step index, step)
    refs: dict[tuple[int, str], tuple[int, int]] = {}

    def fail_at(prefix: str) -> Fail:
        def fail(path: tuple, msg: str) -> None:
            raise_at(*mark(path), f"{prefix}: {msg}")
        return fail

    for i, step in enumerate(sc.steps):
        kind = step_kind(step)
        label = f"steps[{i}] ({'call ' + step.call if kind == 'call' else kind})"
        fail = fail_at(label)
        check_expect(step, step.expect, ("steps", i, "expect"), fail)
        if kind == "call":
            check_windows_only(sc, step, ("steps", i), fail)
        if kind == "observe" and isinstance(getattr(step.observe, "port", None), str):
            slots = {"port": "port"}
            holder, prefix = step.observe, ("steps", i, "observe")
        elif kind == "call":
            slots, holder, prefix = REF_SLOTS, step, ("steps", i)
        else:
            continue
        for key, slot in slots.items():
            v = getattr(holder, key, None)
            if not (isinstance(v, str) and v.startswith("$")):
                continue
            name, _, part = v[1:].partition(".")
            where = prefix + (key,)
            if name not in captures:
                from .problems import _suggest

                fail(where, f"expected a value captured by an earlier step (capture: {name}), found "
                            f"{v!r}{_suggest(name, captures)}; captured so far: "
                            f"{', '.join(sorted(captures)) or 'none'}")
            j, src = captures[name]
            if _fails(src.expect):
                fail(where, f"expected a value from a step that succeeds, found {v!r}, captured by "
                            f"steps[{j}], which is expected to fail ({src.expect})")
            is_name = src.call in NAME_CALLS or src.call in ("bind", "connect", "listen")
            if slot == "addr" and not (is_name and part in ("", "addr")):
                fail(where, f"expected an address (a captured $NAME.addr), found {v!r}"
                            + ("" if is_name else f" ({src.call} returns a number, not an address)"))
            if slot in ("port", "value") and part == "addr":
                fail(where, f"expected a number (a captured $NAME or $NAME.port), found {v!r}, an address")
            if slot == "port" and not is_name and part == "port":
                fail(where, f"expected a captured port, found {v!r} ({src.call} returns no address)")
            refs[(i, key)] = mark(where)
        if kind == "call" and step.capture:
            if step.capture in captures:
                fail(("steps", i, "capture"), f"expected a new capture name, found {step.capture!r}, "
                                              f"already captured by steps[{captures[step.capture][0]}]")
            captures[step.capture] = (i, step)
    _check_checks(sc, captures, fail_at)
    return refs


def _check_checks(sc: Scenario, captures: dict[str, tuple[int, Any]], fail_at: Callable[[str], Fail]) -> None:
    """``checks:``: captured names that exist, a ``where`` and a count of the right shape."""
    for c, chk in enumerate(sc.checks):
        fail = fail_at(f"checks[{c}]")
        key = next(k for k in ("distinct", "same", "count") if getattr(chk, k) is not None)
        for n, name in enumerate(getattr(chk, key)):
            if name not in captures:
                from .problems import _suggest

                fail(("checks", c, key, n), f"expected the name of a captured step, found {name!r}"
                                            f"{_suggest(name, captures)}; captured: "
                                            f"{', '.join(sorted(captures)) or 'none'}")
        if key == "count":
            steps = [captures[n][1] for n in chk.count]
            for s in steps[:1]:
                check_expect(s, chk.where, ("checks", c, "where"), fail)
            _scalar(chk.expect, ("checks", c, "expect"), fail, "a count (a whole number)", INT[1])
