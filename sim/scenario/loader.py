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

import os
import re
from typing import Any

from pydantic import ValidationError

from .errors import ScenarioError
from .model import ForkCall, Scenario, step_kind
from .validate import check_scenario
from .problems import _lookup, _mark_for, _step_label, _suggest, _validation_error
from .yamlread import MAX_BYTES, MAX_DEPTH, MAX_PROCESSES, MAX_STEPS, MAX_VALUES, _decode, _Marked, _read_text, parse_marked

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_PROCESSES", "MAX_STEPS", "MAX_VALUES", "ScenarioError", "load_file", "load_text",
           "parse_marked"]


# ----------------------------------------------------------------------------- names


def _check_names(sc: Scenario, marked: _Marked, fname: str) -> None:
    """Static checks pydantic cannot do: processes and names used before they exist."""
    procs = set(sc.processes)
    names: dict[str, set[str]] = {p: set() for p in procs}
    qt_classes: dict[str, dict[str, str]] = {}  # process -> Qt object name -> its class

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
        elif kind == "qt":
            q = step.qt
            if q.proc not in procs:
                fail(("qt", "proc"), proc_problem(q.proc))
            cls = q.call.split(".")[0]
            have = qt_classes.setdefault(q.proc, {})
            if have.setdefault(q.object, cls) != cls:
                fail(("qt", "call"), f"expected a {have[q.object]} call for object {q.object!r} "
                                     f"(it is a {have[q.object]}), found {q.call}")
            names[q.proc].add(q.object)
            if q.as_:
                have[q.as_] = "QTcpSocket"
                names[q.proc].add(q.as_)
        else:  # other kinds (e.g. timer) that name the process they act in
            spec = getattr(step, kind, None)
            p = getattr(spec, "proc", None)
            if isinstance(p, str) and p not in procs:
                fail((kind, "proc"), proc_problem(p))


def _topology_error(marked: _Marked, e: ValidationError, fname: str) -> ScenarioError | None:
    """A whole-scenario check (hosts, links, processes placed on hosts) whose message starts with
    the path it is about (``processes.web.host: ...``): located at that path in the file."""
    err = e.errors(include_url=False)[0]
    msg = err.get("msg", "")
    if err.get("loc") or not msg.startswith("Value error, "):
        return None
    msg = msg[len("Value error, "):]
    m = re.match(r"^([A-Za-z_][\w\-]*(?:\.[\w\-]+|\[\d+\])*): ", msg)
    if not m or not (set(m.group(1)) & set(".[") or m.group(1) in ("hosts", "links")):
        return None
    keys = tuple(int(k[1:-1]) if k.startswith("[") else k for k in re.findall(r"\[\d+\]|[^.\[\]]+", m.group(1)))
    line, col = _mark_for(marked, keys)
    return ScenarioError(fname, line, col, msg)


# ----------------------------------------------------------------------------- entry points


def _load_text(text: str, name: str) -> Scenario:
    marked = parse_marked(text, name)
    try:
        sc = Scenario.model_validate(marked.data)
    except ValidationError as e:
        raise _topology_error(marked, e, name) or _validation_error(marked, e, name) from None
    _check_names(sc, marked, name)

    def raise_at(line: int, col: int, msg: str) -> None:
        raise ScenarioError(name, line, col, msg)

    refs = check_scenario(sc, marked.data, lambda path: _mark_for(marked, path), raise_at)
    lines = tuple(marked.marks.get(("steps", i), (0, 0))[0] for i in range(len(sc.steps)))
    clines = tuple(marked.marks.get(("checks", i), (0, 0))[0] for i in range(len(sc.checks)))
    return sc.model_copy(update={"source": name, "step_lines": lines, "ref_marks": refs,
                                 "check_lines": clines})


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
