"""Scenario files: safe YAML in, a validated :class:`Scenario` out, or one clear error.

Every error is a :class:`ScenarioError` naming the file, line and column (1-based; 0:0 when the
problem is the file as a whole, e.g. it does not exist) and a message that says what was expected
and what was found. YAML is loaded with the safe loader only: no tags that construct objects, no
code. The node tree is composed first so that every value keeps its position in the file, then
pydantic validates the plain data and each validation error is mapped back to its node and
rewritten in plain words.

No input makes the loader fail with anything but a :class:`ScenarioError`: file size, nesting
depth and alias expansion ("billion laughs") are bounded, and anything unforeseen is still
reported as a ScenarioError rather than a traceback.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo

from . import model as _model
from .model import CALL_NAMES, STEP_KINDS, ForkCall, Scenario, step_kind

MAX_BYTES = 8 * 1024 * 1024  # a scenario file is hand-written: 8 MiB is plenty
MAX_DEPTH = 64  # nesting of lists and mappings (also through aliases)
MAX_VALUES = 200_000  # values after expanding aliases (stops "billion laughs")


@dataclass
class ScenarioError(Exception):
    path: str
    line: int  # 1-based; 0 when the problem is the file as a whole
    column: int  # 1-based, in characters; 0 when the problem is the file as a whole
    message: str

    def __post_init__(self) -> None:
        # one line, whatever text from the file the message quotes
        self.message = self.message.replace("\r", "\\r").replace("\n", "\\n")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass
class _Marked:
    """Plain data plus a map from data path (tuple of keys/indexes) to (line, column)."""

    data: Any
    marks: dict[tuple, tuple[int, int]]


# ----------------------------------------------------------------------------- reading the file


def _line_col(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _byte_line_col(raw: bytes, off: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, off) + 1
    start = raw.rfind(b"\n", 0, off) + 1
    return line, len(raw[start:off].decode("utf-8", errors="replace")) + 1


def _decode(raw: bytes, name: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ScenarioError(name, 1, 1, "expected UTF-8 text, found UTF-16 text (a UTF-16 byte "
                                        "order mark); save the file as UTF-8")
    if b"\x00" in raw:
        line, col = _byte_line_col(raw, raw.index(b"\x00"))
        raise ScenarioError(name, line, col,
                            "expected a YAML text file, found binary data (a NUL byte)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _byte_line_col(raw, e.start)
        raise ScenarioError(name, line, col,
                            f"expected UTF-8 text, found the byte 0x{raw[e.start]:02x}, which is "
                            "not valid UTF-8 here; save the file as UTF-8") from None


def _read_text(path: str | os.PathLike[str]) -> str:
    name = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    what = "expected a scenario .yaml file"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError(name, 0, 0, f"{what}, found no such file") from None
    except NotADirectoryError:
        raise ScenarioError(name, 0, 0, f"{what}, found no such file (a part of the path is "
                                        "a file, not a directory)") from None
    except PermissionError:
        raise ScenarioError(name, 0, 0, f"{what}, found a path that may not be read "
                                        "(permission denied)") from None
    except OSError as e:
        raise ScenarioError(name, 0, 0, f"{what}, found a path that cannot be opened "
                                        f"({e.strerror or e})") from None
    except ValueError:
        raise ScenarioError(name, 0, 0, f"{what}, found a path containing a NUL character") from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(name, 0, 0, f"{what}, found a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(name, 0, 0, f"{what}, found a special file (device, pipe or socket)")
    too_big = f"expected a scenario file of at most {MAX_BYTES} bytes, found a larger file"
    if st.st_size > MAX_BYTES:
        raise ScenarioError(name, 0, 0, too_big + f" ({st.st_size} bytes)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except PermissionError:
        raise ScenarioError(name, 0, 0, f"{what}, found a file that may not be read "
                                        "(permission denied)") from None
    except OSError as e:
        raise ScenarioError(name, 0, 0, f"{what}, found a file that cannot be read "
                                        f"({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise ScenarioError(name, 0, 0, too_big)
    return _decode(raw, name)


# ----------------------------------------------------------------------------- YAML -> marked data

_YAML = "tag:yaml.org,2002:"
_PLAIN_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null")}
# implicit tags whose Python value is not plain data: keep the text as written
_TEXT_SCALAR_TAGS = {_YAML + t for t in ("timestamp", "value", "merge")}


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


def _mark(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Composer(yaml.SafeLoader):
    """The safe loader, with a bound on nesting depth (the composer recurses per level) and a
    note of where each alias (*name) was written (the composed tree keeps only the anchor)."""

    def __init__(self, text: str, fname: str) -> None:
        self._fname = fname
        self._depth = 0
        self.alias_at: dict[tuple[int, int], tuple[tuple[int, int], str]] = {}
        super().__init__(text)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            node = super().compose_node(parent, index)
            if parent is not None and index is not None:  # (aliases used as keys: not noted)
                where = index if isinstance(index, int) else id(index)
                self.alias_at[(id(parent), where)] = (_mark(ev), ev.anchor)
            return node
        nested = self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent)
        self._depth += nested
        try:
            if self._depth > MAX_DEPTH:
                line, col = _mark(self.peek_event())
                raise ScenarioError(self._fname, line, col,
                                    f"expected at most {MAX_DEPTH} levels of nested lists and "
                                    "mappings, found deeper nesting")
            return super().compose_node(parent, index)
        finally:
            self._depth -= nested


class _Builder:
    """Node tree -> plain data (dicts, lists, str/int/float/bool/None) plus marks."""

    def __init__(self, fname: str, alias_at: dict | None = None) -> None:
        self.fname = fname
        self.marks: dict[tuple, tuple[int, int]] = {}
        self.count = 0
        self.active: set[int] = set()
        self.alias_at = alias_at or {}
        self.aliases: list[tuple[tuple[int, int], str]] = []  # aliases being expanded, outermost first
        self.ctor = yaml.constructor.SafeConstructor()

    def fail(self, node: Any, msg: str) -> ScenarioError:
        return ScenarioError(self.fname, *_mark(node), msg)

    def check_tag(self, node: Any, allowed: set[str]) -> None:
        if node.tag in allowed:
            return
        tag = _short_tag(node.tag)
        if "python/" in node.tag:
            raise self.fail(node, f"expected plain YAML data, found the tag '{tag}', which asks "
                                  "to construct a Python object; scenario files are read with the "
                                  "safe loader, which refuses such tags")
        raise self.fail(node, f"expected plain YAML data, found the YAML tag '{tag}' "
                              "(scenario files use no tags)")

    def child(self, parent: Any, where: Any, node: Any, path: tuple, depth: int) -> Any:
        alias = self.alias_at.get((id(parent), where))
        if alias is None:
            return self.build(node, path, depth)
        self.aliases.append(alias)
        try:
            value = self.build(node, path, depth)
        finally:
            self.aliases.pop()
        self.marks[path] = alias[0]  # a value written as *name is located where *name is
        return value

    def too_much(self, node: Any, msg: str) -> ScenarioError:
        if self.aliases:
            (line, col), name = self.aliases[0]
            return ScenarioError(self.fname, line, col, msg + f" (through the alias *{name})")
        return self.fail(node, msg)

    def build(self, node: Any, path: tuple, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            why = ("anchors and aliases (&name, *name) expand to too much data" if self.aliases
                   else "the file holds too much data for a scenario")
            raise self.too_much(node, f"expected at most {MAX_VALUES} values, found more: {why}")
        self.marks[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if depth > MAX_DEPTH:
            raise self.too_much(node, f"expected at most {MAX_DEPTH} levels of nested lists and "
                                      "mappings, found deeper nesting")
        if id(node) in self.active:
            raise self.too_much(node, "expected an alias (*name) to refer to a complete value, "
                                      "found an alias inside the value it refers to (a loop)")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self.check_tag(node, {_YAML + "map"})
                return self.mapping(node, path, depth)
            self.check_tag(node, {_YAML + "seq"})
            return [self.child(node, i, n, path + (i,), depth + 1) for i, n in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def mapping(self, node: Any, path: tuple, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == _YAML + "merge":
                raise self.fail(knode, "expected a key, found a YAML merge key (<<), which "
                                       "scenario files do not support")
            if not isinstance(knode, yaml.ScalarNode):
                found = "a list" if isinstance(knode, yaml.SequenceNode) else "a mapping"
                raise self.fail(knode, f"expected a plain key (a word), found {found} as a key")
            self.check_tag(knode, _PLAIN_SCALAR_TAGS | _TEXT_SCALAR_TAGS)
            key = knode.value  # keys are always text: 'on:' is the key 'on', not true
            if key in out:
                first = self.marks.get(path + (key, "<key>"), (0, 0))
                raise self.fail(knode, f"expected each key once, found '{_short(key)}' again (first at "
                                       f"line {first[0]} column {first[1]})")
            self.marks[path + (key, "<key>")] = _mark(knode)
            out[key] = self.child(node, id(knode), vnode, path + (key,), depth + 1)
            if isinstance(vnode, yaml.ScalarNode) and vnode.value == "" and vnode.style is None:
                self.marks[path + (key,)] = _mark(knode)  # 'key:' with nothing after it
        return out

    def scalar(self, node: Any) -> Any:
        if node.tag in _TEXT_SCALAR_TAGS:
            return node.value
        self.check_tag(node, _PLAIN_SCALAR_TAGS)
        try:
            return self.ctor.construct_object(node, deep=True)
        except ValueError:
            digits = sum(c.isdigit() for c in node.value)
            raise self.fail(node, f"expected a number of at most 4300 digits, found one with "
                                  f"{digits} digits") from None
        except yaml.YAMLError as e:
            raise self.fail(node, f"expected a plain value, found one that cannot be read "
                                  f"({getattr(e, 'problem', None) or e})") from None


# --- YAML syntax errors in plain words

_TOKENS = {
    "<block end>": "the end of the indented block",
    "<block mapping start>": "a 'key: value' line",
    "<block sequence start>": "a '- ' list item",
    "<block entry>": "a '- ' list item",
    "<scalar>": "more text",
    "<stream end>": "the end of the file",
    "<document start>": "'---'",
    "<document end>": "'...'",
    "<flow entry>": "','",
    "<key>": "'?'",
    "<value>": "':'",
    "<alias>": "an alias (*name)",
    "<anchor>": "an anchor (&name)",
    "<tag>": "a tag (!name)",
    "-": "a '- ' list item",
    "?": "a 'key: value' line",
}


def _token(t: str) -> str:
    t = t.strip().strip("'")
    return _TOKENS.get(t, f"'{t}'")


def _key_columns_above(lines: list[str], lineno: int) -> list[int]:
    """Columns where a key or '- ' item may start on line ``lineno`` (1-based), judging by the
    lines above it: each enclosing block's column, innermost first."""
    cols: list[int] = []
    limit = None
    for raw in reversed(lines[: lineno - 1]):
        s = raw.rstrip()
        stripped = s.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(s) - len(stripped) + 1
        if limit is not None and indent >= limit:
            continue
        here = [indent]
        rest, col = stripped, indent
        while rest.startswith("- ") or rest == "-":
            rest2 = rest[1:].lstrip(" ")
            col += len(rest) - len(rest2)
            rest = rest2
            if rest:
                here.append(col)
        for c in reversed(here):
            if c not in cols:
                cols.append(c)
        limit = indent
        if indent == 1:
            break
    return cols


def _bad_indent(text: str, line: int, col: int) -> str | None:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    cols = _key_columns_above(lines, line)
    if not cols or col in cols:
        return None
    want = ", ".join(str(c) for c in cols[:-1]) + (" or " if len(cols) > 1 else "") + str(cols[-1])
    return (f"bad indentation: expected this line to start at column {want} (lined up with a key "
            f"or '- ' item above), found column {col}")


def _syntax_error(e: yaml.MarkedYAMLError, text: str, name: str) -> ScenarioError:
    problem, context = e.problem or "", e.context or ""
    pm, cm = e.problem_mark, e.context_mark
    line, col = (pm.line + 1, pm.column + 1) if pm else ((cm.line + 1, cm.column + 1) if cm else (0, 0))
    cline, ccol = (cm.line + 1, cm.column + 1) if cm else (line, col)
    msg = None

    def indent_of(ln: int) -> int:
        lines = text.splitlines()
        s = lines[ln - 1] if 1 <= ln <= len(lines) else ""
        return len(s) - len(s.lstrip(" ")) + 1

    m = re.match(r"found character '(.+)' that cannot start any token", problem)
    if m:
        ch = m.group(1)
        if ch == "\\t":
            msg = ("expected spaces, found a tab character (YAML does not allow tabs for "
                   "indentation or between tokens)")
        else:
            msg = (f"expected a key, a value or '- ', found '{ch}', which cannot start a plain "
                   f"value (put the value in quotes)")
    elif problem == "mapping values are not allowed here":
        ind = indent_of(line)
        bad = _bad_indent(text, line, ind)
        if bad:
            col, msg = ind, bad
        else:
            msg = ("expected a single value, found ': ' inside a plain value (put text that "
                   "contains ': ' in quotes, or check the indentation)")
    elif problem.startswith("expected <block end>, but found"):
        found = problem.split("but found", 1)[1]
        if "mapping start" in found or "sequence start" in found or "<scalar>" in found:
            msg = _bad_indent(text, line, col)
        elif found.strip().strip("'") in ("]", "}"):
            msg = f"expected the end of the indented block, found {_token(found)} with no matching opening bracket"
        elif found.strip().strip("'") == "-":
            msg = ("expected a 'key: value' line, found a '- ' list item at the same indentation "
                   "(a mapping and a list cannot share a block)")
        elif found.strip().strip("'") == "?":
            msg = ("expected a '- ' list item, found a 'key: value' line at the same indentation "
                   "(a list and a mapping cannot share a block)")
    elif context.startswith("while parsing a flow") and ("but got" in problem or "but found" in problem):
        opener = "{" if "mapping" in context else "["
        closer = "}" if opener == "{" else "]"
        found = re.split(r"but (?:got|found)", problem, maxsplit=1)[1]
        if "<stream end>" in found or line != cline:
            line, col = cline, ccol
            msg = (f"this '{opener}' is never closed: expected ',' or '{closer}', found "
                   f"{_token(found)} at line {pm.line + 1} column {pm.column + 1}")
        else:
            msg = f"expected ',' or '{closer}' inside '{opener} {closer}', found {_token(found)}"
    elif problem == "found unexpected end of stream" and "quoted scalar" in context:
        line, col = cline, ccol
        msg = "this quoted text is never closed: expected a closing quote, found the end of the file"
    elif problem == "could not find expected ':'":
        line, col = cline, ccol
        msg = "expected 'key: value', found text without ':' (or a multi-line key)"
    elif problem.startswith("found undefined alias"):
        alias = problem.split("alias", 1)[1].strip().strip("'")
        msg = f"expected an anchor &{alias} defined above, found the alias *{alias} with no such anchor"
    elif context.startswith("found duplicate anchor"):
        anchor = context.split("anchor", 1)[1].split(";")[0].strip().strip("'")
        msg = (f"expected each anchor once, found &{anchor} again (first at line {cline} "
               f"column {ccol})")
    elif context == "expected a single document in the stream":
        msg = "expected one YAML document, found a second one ('---'); a scenario file holds one document"
    elif problem.startswith("found unknown escape character"):
        esc = problem.rsplit(" ", 1)[1].strip("'")
        msg = ("expected a known escape such as \\n, \\t, \\\\ or \\\" in double-quoted text, found "
               f"'\\{esc}' (use single quotes for text with backslashes)")
    elif problem.startswith("expected '<document start>'"):
        msg = "expected the end of the file after '...', found more content"
    if msg is None:
        m = re.match(r"expected (.+?),? but (?:found|got) (.+)$", problem)
        if m:
            exp = re.sub(r"'?<[a-z ]+>'?", lambda t: _token(t.group(0)), m.group(1))
            msg = f"expected {exp}, found {_token(m.group(2))}"
        elif problem.startswith("found "):
            msg = f"expected valid YAML, {problem}"
        else:
            msg = f"expected valid YAML, found a problem: {problem or 'invalid YAML'}"
        if context:
            msg += f" ({context})"
    return ScenarioError(name, line, col, f"YAML syntax error: {msg}")


def parse_marked(text: str, name: str) -> _Marked:
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        loader = _Composer(text, name)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        alias_at = loader.alias_at
    except yaml.reader.ReaderError as e:
        line, col = _line_col(text, e.position)
        ch = e.character if isinstance(e.character, int) else 0
        raise ScenarioError(name, line, col, f"expected printable text, found the control "
                                             f"character U+{ch:04X}") from None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e, text, name) from None
    except yaml.YAMLError as e:
        raise ScenarioError(name, 1, 1, "YAML syntax error: expected valid YAML, found a problem: "
                                        + " ".join(str(e).split())) from None
    if node is None:
        raise ScenarioError(name, 1, 1, "expected a mapping with name, processes and steps, "
                                        "found an empty file (nothing but blanks or comments)")
    builder = _Builder(name, alias_at)
    data = builder.build(node, (), 1)
    if not isinstance(data, dict):
        raise ScenarioError(name, *builder.marks[()], "expected a mapping with name, processes and "
                                                      f"steps at the top, found {_kind(data)}")
    return _Marked(data, builder.marks)


# ----------------------------------------------------------------------------- validation errors


def _kind(v: Any) -> str:
    """How a found value is described in messages."""
    if v is None:
        return "nothing (an empty value)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, int):
        s = str(v) if abs(v) < 10**30 else f"a {len(str(abs(v)))}-digit number"
        return s
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan (not a number)"
        if math.isinf(v):
            return ".inf (infinity)" if v > 0 else "-.inf (minus infinity)"
        return repr(v)
    if isinstance(v, str):
        if not v:
            return "empty text"
        s = v if len(v) <= 60 else v[:57] + "..."
        return f"the text {s!r}"
    if isinstance(v, list):
        return "an empty list" if not v else f"a list of {len(v)} item{'s' if len(v) != 1 else ''}"
    if isinstance(v, dict):
        return "an empty mapping" if not v else "a mapping"
    return type(v).__name__


def _short(text: Any, limit: int = 60) -> str:
    """Text from the file, shortened for a message."""
    s = str(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


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
_LOCAL = ("source", "step_lines")  # filled in by the loader, never by the file
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


# ----------------------------------------------------------------------------- names


def _check_names(sc: Scenario, marked: _Marked, fname: str) -> None:
    """Static checks pydantic cannot do: processes and names used before they exist."""
    procs = set(sc.processes)
    names: dict[str, set[str]] = {p: set() for p in procs}

    def proc_problem(p: str) -> str:
        return (f"expected a process declared under processes: (or created by an earlier fork), "
                f"found {p!r}{_suggest(p, procs)}; known: {', '.join(sorted(procs))}")

    def name_problem(ref: str, p: str) -> str:
        bound = names.get(p, set())
        return (f"expected a socket name bound earlier in process {p!r} (with as: on socket, "
                f"accept, dup or dup2), found {ref!r}{_suggest(ref, bound)}; bound so far: "
                f"{', '.join(sorted(bound)) or 'none'}")

    for i, step in enumerate(sc.steps):
        kind = step_kind(step)

        def fail(keys: tuple, msg: str) -> None:
            line, col = _mark_for(marked, ("steps", i) + keys)
            label = _step_label(_lookup(marked.data, ("steps", i)))
            raise ScenarioError(fname, line, col, f"steps[{i}] ({label}): {msg}")

        if kind == "call":
            if step.proc not in procs:
                fail(("proc",), proc_problem(step.proc))
            ref = getattr(step, "sock", None)
            if isinstance(ref, str) and ref not in names[step.proc]:
                fail(("sock",), name_problem(ref, step.proc))
            if isinstance(step, ForkCall):
                if step.as_ in procs:
                    fail(("as",), f"expected a new process name for the child, found {step.as_!r}, "
                                  "which already exists")
                procs.add(step.as_)
                names[step.as_] = set(names[step.proc])
            elif getattr(step, "as_", None):
                names[step.proc].add(step.as_)
        elif kind == "observe":
            obs = step.observe
            p = getattr(obs, "proc", None)
            if p is not None and p not in procs:
                fail(("observe", "proc"), proc_problem(p))
            ref = getattr(obs, "sock", None)
            if isinstance(ref, str) and p in names and ref not in names[p]:
                fail(("observe", "sock"), name_problem(ref, p))
        elif kind == "load":
            ld = step.load
            for k in ("proc", "accept_proc"):
                p = getattr(ld, k)
                if p is not None and p not in procs:
                    fail(("load", k), proc_problem(p))
            if isinstance(ld.listener, str) and ld.listener not in names[ld.accept_proc]:
                fail(("load", "listener"), name_problem(ld.listener, ld.accept_proc))
        else:  # other kinds (e.g. timer) that name the process they act in
            spec = getattr(step, kind, None)
            p = getattr(spec, "proc", None)
            if isinstance(p, str) and p not in procs:
                fail((kind, "proc"), proc_problem(p))


# ----------------------------------------------------------------------------- entry points


def _load_text(text: str, name: str) -> Scenario:
    marked = parse_marked(text, name)
    try:
        sc = Scenario.model_validate(marked.data)
    except ValidationError as e:
        raise _validation_error(marked, e, name) from None
    _check_names(sc, marked, name)
    lines = tuple(marked.marks.get(("steps", i), (0, 0))[0] for i in range(len(sc.steps)))
    return sc.model_copy(update={"source": name, "step_lines": lines})


def _guarded(name: str, fn: Any, *args: Any) -> Any:
    """Run ``fn``; anything but a ScenarioError becomes one (never a traceback for bad input)."""
    try:
        return fn(*args)
    except ScenarioError:
        raise
    except RecursionError:
        raise ScenarioError(name, 0, 0, "expected a scenario of modest size, found data nested "
                                        "too deeply to read") from None
    except MemoryError:
        raise ScenarioError(name, 0, 0, "expected a scenario of modest size, found one too large "
                                        "to read into memory") from None
    except Exception as e:  # a loader bug must still not surface as a traceback
        raise ScenarioError(name, 0, 0, f"cannot read this scenario (internal error "
                                        f"{type(e).__name__}: {e})") from None


def load_text(text: str, name: str = "<scenario>") -> Scenario:
    if isinstance(text, (bytes, bytearray)):
        text = _guarded(name, _decode, bytes(text), name)
    return _guarded(name, _load_text, text, name)


def load_file(path: str | os.PathLike[str]) -> Scenario:
    name = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    text = _guarded(name, _read_text, path)
    return _guarded(name, _load_text, text, name)
