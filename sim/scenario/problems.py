"""Validation errors in plain words: each pydantic error mapped back to its place in the file.

Pydantic validates the plain data; each of its errors is located through the data path and
rewritten as what was expected and what was found.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from . import model as _model
from .errors import ScenarioError, _kind, _short
from .model import CALL_NAMES, STEP_KINDS, Scenario
from .yamlread import _Marked


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _members(tp: Any) -> tuple:
    return get_args(get_args(tp)[0]) if get_origin(tp) is Annotated else get_args(tp)


def _tag_of(cls: Any, field: str) -> str:
    return get_args(cls.model_fields[field].annotation)[0]


_CALLS: dict[str, type[BaseModel]] = {_tag_of(c, "call"): c for c in _members(_model.Call)}
_OBSERVATIONS: dict[str, type[BaseModel]] = {_tag_of(c, "what"): c for c in _members(_model.Observation)}
_LOCAL = ("source", "step_lines", "ref_marks", "check_lines")  # filled in by the loader, never by the file
_KINDS = ", ".join(f"{k}:" for k in STEP_KINDS[:-1]) + f" or {STEP_KINDS[-1]}:"


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a mapping validated by ``model`` accepts, in a readable order."""
    keys = [f.alias or n for n, f in model.model_fields.items() if n not in _LOCAL]
    first = [k for k in ("call", "proc") if k in keys]
    last = [k for k in ("note", "expect", "tolerate") if k in keys]
    return first + [k for k in keys if k not in first and k not in last] + last


def _owner(data: Any, path: tuple) -> str:
    """What the mapping at ``path`` is, for 'required by ...'."""
    v = _lookup(data, path)
    if path == ():
        return "every scenario"
    if len(path) == 2 and path[0] == "steps":
        return _step_label(v)
    if isinstance(v, dict) and isinstance(v.get("call"), str):
        return f"call {v['call']}"
    if len(path) == 3 and path[0] == "steps" and path[2] in STEP_KINDS:
        what = v.get("what") if isinstance(v, dict) else None
        return f"{path[2]} {what}" if isinstance(what, str) else str(path[2])
    if len(path) >= 2 and path[-2] == "tolerate":
        return "every tolerance"
    return _label(data, path)


def _step_label(step: Any) -> str:
    if isinstance(step, dict):
        for k in STEP_KINDS:
            if k in step:
                return f"call {step['call']}" if k == "call" and isinstance(step["call"], str) else k
    return "step"


def _label(data: Any, path: tuple) -> str:
    out = ""
    for i, k in enumerate(path):
        if isinstance(k, int):
            out += f"[{k}]"
        else:
            out += ("." if out else "") + str(k)
    return out or "top level"


def _step_where(data: Any, path: tuple) -> str:
    """'steps[4] (call connect)' for a step or a call inside one, else the plain label."""
    v = _lookup(data, path)
    if len(path) == 2 and path[0] == "steps" and isinstance(path[1], int):
        return f"steps[{path[1]}] ({_step_label(v)})"
    if isinstance(v, dict) and isinstance(v.get("call"), str):
        return f"{_label(data, path)} (call {v['call']})"
    return _label(data, path)


def _lookup(data: Any, path: tuple) -> Any:
    cur = data
    for k in path:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _matches(member: Any, value: Any) -> bool:
    """Would a discriminated union choose ``member`` for ``value``?"""
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            if isinstance(meta, Tag):  # the step union: tagged by which kind key is present
                return isinstance(value, dict) and _model._step_tag(value) == meta.tag
        member = get_args(member)[0]
    if not _is_model(member) or not isinstance(value, dict):
        return False
    for n, f in member.model_fields.items():
        args = get_args(f.annotation) if get_origin(f.annotation) is Literal else ()
        if f.is_required() and len(args) == 1 and value.get(f.alias or n) != args[0]:
            return False
    return True


def _pick(tp: Any, value: Any) -> Any:
    """The annotation that validates ``value``: Annotated/Optional stripped, and of a union the
    member its discriminator would choose (the union itself when that cannot be told)."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            chosen = next((m for m in members if _matches(m, value)), None)
            if chosen is None and len(members) != 1:
                return tp
            tp = chosen if chosen is not None else members[0]
        else:
            return tp


def _walk(data: Any, path: tuple) -> tuple[FieldInfo | None, Any]:
    """The pydantic field holding the value at ``path`` (None for items of lists/mappings) and
    the annotation of that value, found by walking the model along the data."""
    tp: Any = Scenario
    value: Any = data
    fi: FieldInfo | None = None
    for k in path:
        cur = _pick(tp, value)
        args = [a for a in get_args(cur) if a is not Ellipsis]
        if _is_model(cur):
            fi = next((f for n, f in cur.model_fields.items() if k in (n, f.alias)), None)
            if fi is None:
                return None, None
            tp = fi.annotation
        elif get_origin(cur) in (list, tuple, set, frozenset) and isinstance(k, int) and args:
            fi, tp = None, args[min(k, len(args) - 1)]
        elif get_origin(cur) is dict and len(args) == 2:
            fi, tp = None, args[1]
        else:
            return None, None
        value = _lookup(value, (k,))
    return fi, tp


def _model_for(data: Any, path: tuple) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path`` in the data."""
    if not path:
        return Scenario
    fi, tp = _walk(data, path)
    cur = _pick(tp, _lookup(data, path)) if tp is not None else None
    return cur if _is_model(cur) else None


def _field(data: Any, path: tuple) -> tuple[FieldInfo | None, Any]:
    return _walk(data, path) if path else (None, None)


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _numeric(tp: Any, extra: list) -> tuple[type, list] | None:
    """(int or float, [constraints]) for a numeric annotation, looking inside Annotated/Optional/
    Union; ``extra`` are constraints from the field itself."""
    tp = _strip_optional(tp)
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        cons = list(extra)
        for m in meta:
            cons.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        return _numeric(base, cons)
    if tp in (int, float):
        return tp, extra
    if get_origin(tp) is Union:
        for a in get_args(tp):
            r = _numeric(a, extra)
            if r:
                return r
    return None


_NOUNS = {"port": "a port number", "sleep": "a number of seconds", "duration": "a number of seconds",
          "latency": "a number of seconds", "bytes": "a byte count", "rate": "a rate (connections per second)"}


def _number_phrase(fi: FieldInfo | None, tp: Any, key: Any) -> str:
    num = _numeric(tp, list(fi.metadata) if fi is not None else []) if tp is not None else None
    base, cons = num if num else (int, [])
    noun = _NOUNS.get(key) if isinstance(key, str) else None
    noun = noun or ("a whole number" if base is int else "a number")
    lo = hi = None
    lo_open = hi_open = False
    for c in cons:
        if getattr(c, "ge", None) is not None:
            lo = c.ge
        if getattr(c, "gt", None) is not None:
            lo, lo_open = c.gt, True
        if getattr(c, "le", None) is not None:
            hi = c.le
        if getattr(c, "lt", None) is not None:
            hi, hi_open = c.lt, True
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"{noun} from {_num(lo)} to {_num(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"above {_num(lo)}" if lo_open else f"at least {_num(lo)}")
    if hi is not None:
        parts.append(f"below {_num(hi)}" if hi_open else f"at most {_num(hi)}")
    return noun + (" " + " and ".join(parts) if parts else "")


_NAME_PHRASE = "a name (letters, digits, '_' and '-', starting with a letter or '_')"


def _is_name(fi: FieldInfo | None, tp: Any) -> bool:
    def walk(t: Any) -> bool:
        if get_origin(t) is Annotated:
            return any(getattr(m, "pattern", None) or any(getattr(x, "pattern", None) for x in
                       getattr(m, "metadata", [])) for m in get_args(t)[1:])
        return any(walk(a) for a in get_args(t)) if get_origin(t) is Union else False
    return walk(tp) or any(getattr(m, "pattern", None) for m in (fi.metadata if fi else []))


def _suggest(word: Any, choices: Any) -> str:
    if not isinstance(word, str):
        return ""
    choices = [c for c in choices if isinstance(c, str)]
    for c in choices:
        if c.lower() == word.lower():
            return f" (did you mean '{c}'?)"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.55)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _quote_hint(found: Any) -> str:
    if isinstance(found, bool):
        return " (YAML reads yes/no/on/off/true/false as booleans: put the text in quotes)"
    if isinstance(found, (int, float)):
        return " (put it in quotes to make it text)"
    return ""


def _data_path(data: Any, loc: tuple) -> tuple:
    """Map a pydantic error location to a path in the data (dropping union tags/members)."""
    loc = tuple(loc)
    if len(loc) >= 3 and loc[0] == "steps" and loc[2] in STEP_KINDS:
        # ('steps', i, <step kind tag>, [<call name tag>], field...): drop the union tags
        loc = loc[:2] + (loc[4:] if loc[2] == "call" else loc[3:])
        if len(loc) >= 4 and loc[2] == "observe" and loc[3] in _OBSERVATIONS:
            loc = loc[:3] + loc[4:]
    for i in range(2, len(loc)):
        # a timer slot's entry: ('on_timeout', n, 'call'|'qt', [<call name tag>], field...)
        if loc[i - 2] == "on_timeout" and isinstance(loc[i - 1], int) and loc[i] in ("call", "qt"):
            loc = loc[:i] + (loc[i + 2:] if loc[i] == "call" else loc[i + 1:])
            break
    path: list = []
    cur = data
    for k in loc:
        if isinstance(cur, dict) and isinstance(k, str) and k in cur:
            path.append(k)
            cur = cur[k]
        elif isinstance(cur, list) and isinstance(k, int) and 0 <= k < len(cur):
            path.append(k)
            cur = cur[k]
        elif isinstance(cur, dict) and k == "as_" and "as" in cur:
            path.append("as")
            cur = cur["as"]
        # otherwise: a union member or tag name (e.g. 'constrained-int', '[key]'): skip it
    return tuple(path)


def _mark_for(marked: _Marked, path: tuple) -> tuple[int, int]:
    while path and path not in marked.marks:
        path = path[:-1]
    return marked.marks.get(path, (0, 0))


@dataclass
class _Problem:
    at: tuple  # data path whose mark locates the problem
    where: str  # label that starts the message
    expected: str
    found: str
    tail: str = ""  # after "found ...": a hint

    def message(self) -> str:
        return f"{self.where}: expected {self.expected}, found {self.found}{self.tail}"


def _problem(marked: _Marked, err: dict[str, Any]) -> _Problem:
    data = marked.data
    loc = tuple(err.get("loc", ()))
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    found = err.get("input")
    path = _data_path(data, loc)
    key = path[-1] if path else None
    where = _label(data, path)

    # --- a step as a whole
    if len(path) == 2 and path[0] == "steps" and etype not in ("extra_forbidden", "missing"):
        step = _lookup(data, path)
        if not isinstance(step, dict):
            return _Problem(path, f"steps[{path[1]}]", f"a step (a mapping with {_KINDS})", _kind(step))
        if etype == "union_tag_invalid":
            c = step.get("call")
            return _Problem(path + ("call",), f"steps[{path[1]}]", "a call among: " + ", ".join(CALL_NAMES),
                            f"unknown call {_short(c)!r}" if isinstance(c, str) else _kind(c), _suggest(c, CALL_NAMES))
        if etype in ("union_tag_not_found", "step_kind") or not any(k in step for k in STEP_KINDS):
            keys = f"only {_short(', '.join(map(str, step)), 200)}" if step else "an empty mapping"
            return _Problem(path, f"steps[{path[1]}]", f"one of the keys {_KINDS} in every step", keys)
    # --- mappings: unknown and missing keys
    if etype == "extra_forbidden":
        parent = path[:-1]
        if len(path) == 3 and path[0] == "steps" and key in STEP_KINDS:
            step = _lookup(data, parent)
            first = next(k for k in STEP_KINDS if k in step and k != key)
            return _Problem(path + ("<key>",), f"steps[{path[1]}]", f"exactly one of {_KINDS} in a step",
                            f"both '{first}:' and '{key}:'")
        model = _model_for(data, parent)
        keys = _keys(model) if model else []
        hint = _suggest(key, keys)
        if not hint and parent == ("host", "sysctls") and isinstance(key, str):
            bare = re.sub(r"^net\.(ipv4|core|ipv6)\.|^fs\.", "", key).replace("-", "_")
            if bare in keys:
                hint = f" (write it without the prefix: '{bare}')"
        if not hint and model in _CALLS.values():
            owners = [n for n, c in _CALLS.items() if key in _keys(c)]
            if owners:
                hint = f" ('{key}' belongs to {', '.join(owners)})"
        what = "sysctl" if parent == ("host", "sysctls") else "key"
        exp = f"a known {what} (one of: {', '.join(keys)})" if keys else "a known key"
        return _Problem(path + ("<key>",), _step_where(data, parent), exp, f"unknown {what} '{_short(key)}'", hint)
    if etype == "missing":
        if loc and isinstance(loc[-1], int):  # a tuple with too few items
            fi, tp = _field(data, path)
            return _Problem(path, where, _list_phrase(path, key, tp), _kind(_lookup(data, path)))
        parent = _data_path(data, loc[:-1])
        need = str(loc[-1])
        where = _step_where(data, parent) if len(parent) == 2 else _label(data, parent)
        return _Problem(parent, where, f"key '{need}:' (required by {_owner(data, parent)})",
                        "no such key")
    # --- discriminated unions inside a step (observe: what)
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "")).strip("'") or "kind"
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if disc == "what" and not tags:
            tags = list(_OBSERVATIONS)
        value = found.get(disc) if isinstance(found, dict) else None
        if etype == "union_tag_not_found" or value is None:
            if not isinstance(found, dict):
                return _Problem(path, where, f"a mapping with '{disc}:' (one of: {', '.join(tags)})", _kind(found))
            return _Problem(path, where, f"key '{disc}:' (one of: {', '.join(tags)})", "no such key")
        return _Problem(path + (disc,), f"{where}.{disc}", "one of: " + ", ".join(tags),
                        _kind(value), _suggest(value, tags))

    fi, tp = _field(data, path)
    if loc and loc[-1] == "[key]" and len(path) == 2 and path[0] == "processes":
        return _Problem(path + ("<key>",), "processes", "a process name " + _NAME_PHRASE[len("a name "):],
                        _kind(path[1]))
    # --- value errors raised by the model's own checks
    if etype == "value_error":
        text = str(ctx.get("error", err.get("msg", "")))
        m = re.match(r"^(?:Value error, )?@([^|]*)\|([^|]*)\|(.*)$", text, re.S)
        if m:  # the model names the place below this value (sim.scenario.model.relocated)
            rel: tuple = ()
            for part in m.group(1).split("."):
                if part.endswith("<key>"):
                    rel += (part[: -len("<key>")], "<key>")
                else:
                    rel += (part,)
            shown = ".".join(p for p in m.group(1).replace("<key>", "").split(".") if p)
            return _Problem(path + rel, f"{where}.{shown}" if where else shown, m.group(2), m.group(3))
        if key == "expect":
            words = ["ok", "BLOCKED"] + sorted(w for w in _model.OUTCOME_WORDS if w not in ("ok", "BLOCKED"))
            wsa = sorted(getattr(_model, "WSA_NAMES", ()))
            names = "an errno name such as EADDRINUSE" + (
                " (or WSAEADDRINUSE for Winsock)" if "WSAEADDRINUSE" in wsa else "")
            return _Problem(path, where, f"{', '.join(words)}, {names}, or a value", _kind(found),
                            _suggest(found, sorted(_model.ERRNO_NAMES) + wsa + words))
        if "address" in text and isinstance(found, str):
            return _Problem(path, where, "an IPv4 or IPv6 address such as 127.0.0.1 or ::1", _kind(found))
        m = re.search(r"ip_local_port_range: low (\S+) is above high (\S+)", text)
        if m:
            p = path + ("ip_local_port_range",)
            return _Problem(p, _label(data, p), "[low, high] with low <= high",
                            f"low {m.group(1)} above high {m.group(2)}")
        if "accept_proc and listener" in text and isinstance(found, dict):
            have = "accept_proc" if "accept_proc" in found else "listener"
            other = "listener" if have == "accept_proc" else "accept_proc"
            return _Problem(path + (have, "<key>"), where, "accept_proc and listener together (both or neither)",
                            f"{have} without {other}")
        if "at least one process" in text:
            return _Problem(("processes",), "processes", "at least one process", _kind(_lookup(data, ("processes",))))
        return _Problem(path, where, re.sub(r"^Value error, ", "", text), _kind(found))
    # --- types and ranges
    if etype in ("int_type", "int_parsing", "int_from_float", "float_type", "float_parsing",
                 "finite_number", "greater_than", "greater_than_equal", "less_than",
                 "less_than_equal", "int_parsing_size"):
        return _Problem(path, where, _number_phrase(fi, tp, key), _kind(found))
    if etype in ("bool_type", "bool_parsing"):
        return _Problem(path, where, "true or false", _kind(found))
    if etype in ("string_type", "string_pattern_mismatch", "string_too_long", "string_too_short"):
        name = _is_name(fi, tp) or etype == "string_pattern_mismatch"
        if etype == "string_too_long":
            return _Problem(path, where, f"{'a name' if name else 'text'} of at most {ctx.get('max_length')} "
                            "characters", f"{len(found) if isinstance(found, str) else '?'} characters")
        if etype == "string_too_short":
            return _Problem(path, where, f"text of at least {ctx.get('min_length')} characters", _kind(found))
        if name:
            hint = _quote_hint(found) if isinstance(found, bool) else ""
            return _Problem(path, where, _NAME_PHRASE, _kind(found), hint)
        if key in ("addr", "bind_addr"):
            return _Problem(path, where, "an IPv4 or IPv6 address such as 127.0.0.1 or ::1", _kind(found))
        return _Problem(path, where, "text", _kind(found), _quote_hint(found))
    if etype == "literal_error":
        choices = re.findall(r"'([^']*)'|(\d+)", str(ctx.get("expected", "")))
        words = [a or b for a, b in choices]
        return _Problem(path, where, f"one of: {', '.join(words)}" if words else str(ctx.get("expected")),
                        _kind(found), _suggest(found, words))
    if etype in ("list_type", "tuple_type", "too_short", "too_long"):
        exp = _list_phrase(path, key, tp)
        if etype in ("too_short", "too_long"):
            n = ctx.get("actual_length")
            return _Problem(path, where, exp, "an empty list" if n == 0 else f"a list of {n} item{'s' if n != 1 else ''}")
        hint = f" (write [{found}])" if key == "flags" and isinstance(found, str) else ""
        return _Problem(path, where, exp, _kind(found), hint)
    if etype in ("dict_type", "model_type", "model_attributes_type"):
        model = _model_for(data, path)
        if len(path) == 2 and path[0] == "processes":
            return _Problem(path, where, "a mapping of process settings (nofile, uid), or {} for the "
                                         "defaults", _kind(found))
        if path == ("processes",):
            return _Problem(path, where, "a mapping of process names to settings, e.g. {server: {}}", _kind(found))
        if len(path) == 3 and path[0] == "steps" and path[2] == "observe" and model is None:
            return _Problem(path, where, f"a mapping with what: (one of: {', '.join(_OBSERVATIONS)})",
                            _kind(found))
        keys = f" ({', '.join(_keys(model))})" if model else ""
        return _Problem(path, where, f"a mapping{keys}", _kind(found))
    msg = re.sub(r"^Input should be ", "", str(err.get("msg", "a valid value")))
    return _Problem(path, where, msg, _kind(found))


def _list_phrase(path: tuple, key: Any, tp: Any) -> str:
    if path == ("steps",):
        return "a list of at least one step (lines starting with '- ')"
    if key == "flags":
        return "a list of flags, e.g. [MSG_DONTWAIT]"
    if key == "tolerate":
        return "a list of tolerances, e.g. [{field: ret, reason: why}]"
    if key == "ip_local_port_range":
        return "a list [low, high]"
    if key in ("tcp_wmem", "tcp_rmem", "tcp_mem"):
        return "a list [min, default, max]" if key != "tcp_mem" else "a list [low, pressure, high]"
    t = _strip_optional(tp)
    n = len([a for a in get_args(t) if a is not Ellipsis]) if get_origin(t) is tuple else 0
    return f"a list of exactly {n} values" if n else "a list"


def _union_expected(data: Any, probs: list[_Problem]) -> str:
    key = probs[0].at[-1] if probs[0].at else None
    if key in ("sock", "listener"):
        fi, tp = _field(data, probs[0].at)
        return f"a socket name (bound earlier with as:) or an fd number ({_number_phrase(fi, tp, None)[2:]})"
    if key == "value":
        return "a whole number, or [onoff, seconds] for SO_LINGER"
    seen: list[str] = []
    for p in probs:
        if p.expected not in seen:
            seen.append(p.expected)
    return " or ".join(seen)


def _validation_error(marked: _Marked, e: ValidationError, name: str) -> ScenarioError:
    groups: dict[tuple, list[_Problem]] = {}
    for err in e.errors(include_url=False):
        prob = _problem(marked, err)
        gkey = (prob.at, prob.expected if prob.found == "no such key" else "")
        groups.setdefault(gkey, []).append(prob)
    problems = []
    for probs in groups.values():
        p = probs[0]
        if len(probs) > 1:  # one value failed every member of a union: one problem
            p = _Problem(p.at, p.where, _union_expected(marked.data, probs), p.found, p.tail)
        problems.append(p)
    # report the first problem in file order: the one a reader meets first
    problems.sort(key=lambda p: _mark_for(marked, p.at))
    first = problems[0]
    line, col = _mark_for(marked, first.at)
    n = len(problems) - 1
    more = f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""
    return ScenarioError(name, line, col, first.message() + more)
