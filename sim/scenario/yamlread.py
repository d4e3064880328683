"""Reading a scenario file: bytes -> text -> YAML nodes -> plain data with the position of every value.

YAML is loaded with the safe loader only: no tags that construct objects, no code. The node tree
is composed first so that every value keeps its position in the file. File size, nesting depth
and alias expansion ("billion laughs") are bounded.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ScenarioError, _kind, _short
from .yamlsyntax import _syntax_error

MAX_BYTES = 8 * 1024 * 1024  # a scenario file is hand-written: 8 MiB is plenty
MAX_DEPTH = 64  # nesting of lists and mappings (also through aliases)
MAX_VALUES = 200_000  # values after expanding aliases (stops "billion laughs")
MAX_STEPS = 20_000  # items of steps:
MAX_PROCESSES = 256  # processes declared (forks count too: see the loader's name checks)


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


_EventParser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML when present: fast


def _prescan(text: str, name: str) -> None:
    """Bound the cost before any node is built: stream the YAML events (no tree is kept) and stop
    at the first value beyond :data:`MAX_VALUES`, the first step beyond :data:`MAX_STEPS` or the
    first process beyond :data:`MAX_PROCESSES`. Alias expansion and nesting are bounded later,
    while the tree is built. A syntax error is left to the full reader, which words it."""
    values = 0
    # one frame per open collection: [is_mapping, expecting_a_key, last_key, role]
    stack: list[list[Any]] = []
    counts = {"steps": 0, "processes": 0}
    limits = {"steps": (MAX_STEPS, "steps"), "processes": (MAX_PROCESSES, "processes")}
    try:
        for ev in yaml.parse(text, Loader=_EventParser):
            if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                continue
            if not isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent,
                                   yaml.SequenceStartEvent)):
                continue
            top = stack[-1] if stack else None
            role = None
            if top is not None and top[0] and top[1]:  # a key
                top[1] = False
                top[2] = ev.value if isinstance(ev, yaml.ScalarEvent) else None
                if top[3] == "processes":
                    role = "processes"
            else:
                values += 1
                if values > MAX_VALUES:
                    raise ScenarioError(name, *_mark(ev), f"expected at most {MAX_VALUES} values, "
                                                          "found more: the file holds too much data for a scenario")
                if top is not None and top[0]:
                    top[1] = True
                if top is not None and top[3] == "steps":
                    role = "steps"
            if role is not None:
                counts[role] += 1
                limit, what = limits[role]
                if counts[role] > limit:
                    raise ScenarioError(name, *_mark(ev), f"expected at most {limit} {what}, found more")
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                mapping = isinstance(ev, yaml.MappingStartEvent)
                child_role = None
                if len(stack) == 1 and top is not None and top[2] in ("steps", "processes"):
                    child_role = top[2] if mapping == (top[2] == "processes") else None
                stack.append([mapping, mapping, None, child_role])
    except yaml.YAMLError:
        return


def parse_marked(text: str, name: str) -> _Marked:
    if text.startswith("\ufeff"):
        text = text[1:]
    _prescan(text, name)
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
