"""Scenario files: safe YAML in, a validated :class:`Scenario` out, or one clear error.

Every error is a :class:`ScenarioError` naming the file, line and column, what was expected and
what was found. YAML is loaded with the safe loader only (no tags that construct objects, no
code): the node tree is composed first so that every value keeps its position in the file, then
pydantic validates the plain data and each validation error is mapped back to its node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .model import CALL_NAMES, STEP_KINDS, ForkCall, Scenario, step_kind

MAX_BYTES = 8 * 1024 * 1024


@dataclass
class ScenarioError(Exception):
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        return f"{where}: {self.message}"


@dataclass
class _Marked:
    """Plain data plus a map from data path (tuple of keys/indexes) to (line, column)."""

    data: Any
    marks: dict[tuple, tuple[int, int]]


def _construct(node: yaml.Node, path: tuple, marks: dict, fname: str) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                raise ScenarioError(fname, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                    "YAML merge keys (<<) are not supported in scenario files")
            key = _construct(knode, path + ("<key>",), {}, fname)
            if not isinstance(key, (str, int)):
                raise ScenarioError(fname, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                    f"expected a plain key, found {type(key).__name__}")
            if key in out:
                raise ScenarioError(fname, knode.start_mark.line + 1, knode.start_mark.column + 1,
                                    f"duplicate key {key!r} (each key may appear once)")
            marks[path + (key, "<key>")] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            out[key] = _construct(vnode, path + (key,), marks, fname)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(n, path + (i,), marks, fname) for i, n in enumerate(node.value)]
    # scalar: let the safe constructor resolve int/float/bool/null/str
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as e:
        raise ScenarioError(fname, node.start_mark.line + 1, node.start_mark.column + 1,
                            f"cannot read this value: {e.problem}") from None
    finally:
        loader.dispose()


def _read_text(path: Path) -> str:
    name = str(path)
    if not path.exists():
        raise ScenarioError(name, 0, 0, "no such file (expected a scenario .yaml file)")
    if path.is_dir():
        raise ScenarioError(name, 0, 0, "is a directory, expected a scenario .yaml file")
    if not path.is_file():
        raise ScenarioError(name, 0, 0, "is not a regular file, expected a scenario .yaml file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ScenarioError(name, 0, 0, f"file is {size} bytes; scenario files are at most {MAX_BYTES}")
        raw = path.read_bytes()
    except PermissionError:
        raise ScenarioError(name, 0, 0, "permission denied while reading the file") from None
    except OSError as e:
        raise ScenarioError(name, 0, 0, f"cannot read the file: {e.strerror}") from None
    if b"\x00" in raw:
        off = raw.index(b"\x00")
        line = raw.count(b"\n", 0, off) + 1
        raise ScenarioError(name, line, off - (raw.rfind(b"\n", 0, off) + 1) + 1,
                            "binary data (NUL byte) found, expected a YAML text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ScenarioError(name, line, col, "not UTF-8 text, expected a YAML text file") from None


def parse_marked(text: str, name: str) -> _Marked:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = e.problem or "invalid YAML"
        ctx = f" ({e.context})" if e.context else ""
        raise ScenarioError(name, line, col, f"YAML syntax error: {what}{ctx}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(name, 0, 0, f"YAML error: {e}") from None
    if node is None:
        raise ScenarioError(name, 1, 1, "the file is empty; expected a mapping with name, processes and steps")
    marks: dict[tuple, tuple[int, int]] = {}
    data = _construct(node, (), marks, name)
    if not isinstance(data, dict):
        raise ScenarioError(name, *marks[()],
                            f"expected a mapping with name, processes and steps at the top, found {_kind(data)}")
    return _Marked(data, marks)


def _kind(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        return f"a number ({v})"
    if isinstance(v, str):
        return f"the text {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _lookup(data: Any, loc: tuple) -> Any:
    cur = data
    for k in loc:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _data_path(data: Any, loc: tuple) -> tuple:
    """Map a pydantic error location to a path in the data (dropping union/tag components)."""
    loc = tuple(loc)
    if len(loc) >= 3 and loc[0] == "steps" and loc[2] in STEP_KINDS:
        # ('steps', i, <step kind tag>, [<call name tag>], field...): drop the union tags
        loc = loc[:2] + (loc[4:] if loc[2] == "call" else loc[3:])
    path: list = []
    cur = data
    for k in loc:
        if isinstance(cur, dict) and k in cur:
            path.append(k)
            cur = cur[k]
        elif isinstance(cur, list) and isinstance(k, int) and 0 <= k < len(cur):
            path.append(k)
            cur = cur[k]
        elif isinstance(cur, dict) and k == "as_" and "as" in cur:
            path.append("as")
            cur = cur["as"]
        # otherwise: a union member or tag name (e.g. 'bind', 'SleepStep'): skip it
    return tuple(path)


def _mark_for(marked: _Marked, path: tuple) -> tuple[int, int]:
    while path and path not in marked.marks:
        path = path[:-1]
    return marked.marks.get(path, (0, 0))


def _describe_step(step: Any) -> str:
    if isinstance(step, dict):
        for k in ("call", "sleep", "observe", "load"):
            if k in step:
                return k if k != "call" else f"call {step['call']!r}"
    return "step"


def _format_error(marked: _Marked, err: dict[str, Any]) -> tuple[tuple, str]:
    loc = tuple(err.get("loc", ()))
    path = _data_path(marked.data, loc)
    etype = err.get("type", "")
    msg = err.get("msg", "invalid value")
    found = err.get("input")
    field = ".".join(str(p) for p in path) or "top level"
    # Steps get friendlier messages: which kind of step was meant.
    if len(path) >= 2 and path[0] == "steps" and len(path) == 2:
        step = marked.data["steps"][path[1]]
        if etype == "union_tag_invalid":
            return path + ("call",), (
                f"steps[{path[1]}]: unknown call {step.get('call')!r}; expected one of: "
                + ", ".join(CALL_NAMES))
        if etype in ("union_tag_not_found", "step_kind") or (isinstance(step, dict) and not any(
                k in step for k in ("call", "sleep", "observe", "load"))):
            keys = ", ".join(map(str, step)) if isinstance(step, dict) else _kind(step)
            return path, (f"steps[{path[1]}]: a step needs one of 'call:', 'sleep:', 'observe:' or "
                          f"'load:'; found {keys}")
    if etype == "extra_forbidden":
        return path + ("<key>",), f"{field}: unknown key {path[-1]!r} here (check the spelling; see docs/scenarios.md)"
    if etype == "missing":
        return path[:-1] if path else path, f"{field}: required key {loc[-1]!r} is missing"
    if etype == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return path, f"{field}: unknown {ctx.get('discriminator', 'kind')} {ctx.get('tag')!r}; expected {ctx.get('expected_tags')}"
    if etype == "literal_error":
        ctx = err.get("ctx") or {}
        return path, f"{field}: expected {ctx.get('expected', 'one of the listed values')}, found {_kind(found)}"
    return path, f"{field}: {msg}; found {_kind(found)}"


def _check_names(sc: Scenario, marked: _Marked, fname: str) -> None:
    """Static checks pydantic cannot do: processes and names used before they exist."""
    procs = set(sc.processes)
    names: dict[str, set[str]] = {p: set() for p in procs}
    for i, step in enumerate(sc.steps):
        kind = step_kind(step)

        def fail(key: str, msg: str) -> None:
            line, col = _mark_for(marked, ("steps", i, key))
            raise ScenarioError(fname, line, col, f"steps[{i}]: {msg}")

        if kind == "call":
            if step.proc not in procs:
                fail("proc", f"process {step.proc!r} is not declared under processes "
                             f"(or created by an earlier fork); known: {', '.join(sorted(procs))}")
            ref = getattr(step, "sock", None)
            if isinstance(ref, str) and ref not in names[step.proc]:
                known = ", ".join(sorted(names[step.proc])) or "none yet"
                fail("sock", f"name {ref!r} is not bound in process {step.proc!r} before this step "
                             f"(bind it with 'as: {ref}' on socket/accept/dup); bound: {known}")
            if isinstance(step, ForkCall):
                if step.as_ in procs:
                    fail("as", f"fork: process {step.as_!r} already exists")
                procs.add(step.as_)
                names[step.as_] = set(names[step.proc])
            elif getattr(step, "as_", None):
                names[step.proc].add(step.as_)
        elif kind == "observe":
            obs = step.observe
            p = getattr(obs, "proc", None)
            if p is not None and p not in procs:
                fail("observe", f"observe: process {p!r} is not declared")
            ref = getattr(obs, "sock", None)
            if isinstance(ref, str) and p in names and ref not in names[p]:
                fail("observe", f"observe: name {ref!r} is not bound in process {p!r}")
        elif kind == "load":
            ld = step.load
            for p in (ld.proc, ld.accept_proc):
                if p is not None and p not in procs:
                    fail("load", f"load: process {p!r} is not declared")
            if isinstance(ld.listener, str) and ld.listener not in names[ld.accept_proc]:
                fail("load", f"load: name {ld.listener!r} is not bound in process {ld.accept_proc!r}")


def load_text(text: str, name: str = "<scenario>") -> Scenario:
    marked = parse_marked(text, name)
    try:
        sc = Scenario.model_validate(marked.data)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        # report the first error in file order: the one a reader meets first
        formatted = [_format_error(marked, err) for err in errs]
        formatted.sort(key=lambda pm: _mark_for(marked, pm[0]))
        path, msg = formatted[0]
        line, col = _mark_for(marked, path)
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        raise ScenarioError(name, line, col, msg + more) from None
    _check_names(sc, marked, name)
    lines = tuple(marked.marks.get(("steps", i), (0, 0))[0] for i in range(len(sc.steps)))
    return sc.model_copy(update={"source": name, "step_lines": lines})


def load_file(path: str | os.PathLike[str]) -> Scenario:
    p = Path(path)
    return load_text(_read_text(p), str(path))
