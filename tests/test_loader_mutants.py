"""Property: every malformed mutant of a bundled scenario is refused with one line and exit 2.

Hypothesis picks a bundled scenario and one place in it (at any depth) and breaks it: a value of
the wrong type, a number out of its range, an unknown key in a mapping, a bad address, or a call's
expectation of a shape no call returns (a boolean, a fraction, a word that is no errno name, a
nested list, a mapping with an unknown key, an unknown key inside an existing expectation or one
of its alternatives, a set form with a key beside it). The
command must answer ``error: FILE:LINE:COL: ...`` on one line, exit 2, and never a traceback.
The number of examples is bounded so that the default suite stays fast.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent / "scenarios"
FILES = sorted(p for p in ROOT.rglob("*.yaml") if "whatif" not in p.parts)
DOCS = {p: yaml.safe_load(p.read_text()) for p in FILES}

BAD_ADDRESSES = ["fe80::1%lo", "1.2.3.256", "::g", "localhost", "", "127.0.0.1:80"]
OUT_OF_RANGE = [-(2**40), -(2**31) - 1]  # below every number field's range (seed excluded)
WRONG_TYPES: list[Any] = [{"zz_unknown": 1}, [[["deep"]]], "not-a-number", 1.5, True]
# A call's expectation of a shape no call can return (what each call returns: a whole number,
# an errno name, poll's event list, an {addr, port} mapping, getsockopt's pair or {value, optlen}).
BAD_EXPECTATIONS: list[Any] = [True, False, 1.5, "not-an-errno", [[["deep"]]], {"zz_unknown": 1},
                               {"one_of": ["ok", {"zz_unknown": 1}]}, {"one_of": [0, 2.5]},
                               {"range": [1, 2], "zz_unknown": 1}, {"one_of": []}, {"range": [5]}]
# Mappings whose keys are the user's own names, where a new key can be valid.
FREE_KEYS = ("processes", "errors")


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _free(path: tuple) -> bool:
    return any(p in FREE_KEYS for p in path if isinstance(p, str)) or "expect" in path or "note" in path \
        or "description" in path or "tags" in path or "reason" in path


@st.composite
def mutants(draw: Any) -> tuple[str, str]:
    f = draw(st.sampled_from(FILES))
    doc = yaml.safe_load(yaml.safe_dump(DOCS[f]))  # a deep copy
    paths = _paths(doc)
    kind = draw(st.sampled_from(["unknown_key", "wrong_type", "out_of_range", "bad_address", "expectation"]))
    if kind == "expectation":
        calls = [("steps", i) for i, s in enumerate(doc.get("steps") or []) if isinstance(s, dict) and "call" in s]
        if calls:
            p = draw(st.sampled_from(calls))
            step = _get(doc, p)
            old = step.get("expect")
            if isinstance(old, dict) and draw(st.booleans()):  # an unknown key inside the expectation
                inner = old
                if "one_of" in old and isinstance(old["one_of"], list):
                    old["one_of"].append({"zz_unknown_key": 1})
                else:
                    inner["zz_unknown_key"] = 1
                return f"{f.name}: unknown key inside expect at {p}", yaml.safe_dump(doc)
            value = draw(st.sampled_from(BAD_EXPECTATIONS))
            step["expect"] = value
            return f"{f.name}: expect {value!r} at {p}", yaml.safe_dump(doc)
        kind = "wrong_type"
    if kind == "unknown_key":
        maps = [p for p in paths if isinstance(_get(doc, p), dict) and not (p and p[-1] in FREE_KEYS)
                and "expect" not in p]
        p = draw(st.sampled_from(maps))
        _get(doc, p)["zz_unknown_key"] = 1
        return f"{f.name}: unknown key at {p}", yaml.safe_dump(doc)
    if kind == "bad_address":
        addrs = [p for p in paths if p and p[-1] in ("addr", "bind_addr") and isinstance(_get(doc, p), str)]
        if addrs:
            p = draw(st.sampled_from(addrs))
            value = draw(st.sampled_from(BAD_ADDRESSES))
            _set(doc, p, value)
            return f"{f.name}: address {value!r} at {p}", yaml.safe_dump(doc)
        kind = "wrong_type"
    if kind == "out_of_range":
        nums = [p for p in paths if p and isinstance(_get(doc, p), int) and not isinstance(_get(doc, p), bool)
                and not _free(p) and p[-1] != "seed"]
        if nums:
            p = draw(st.sampled_from(nums))
            value = draw(st.sampled_from(OUT_OF_RANGE))
            _set(doc, p, value)
            return f"{f.name}: {value} at {p}", yaml.safe_dump(doc)
    scalars = [p for p in paths if p and not isinstance(_get(doc, p), (dict, list)) and not _free(p)
               and p != ("name",)]  # the scenario's name is free text
    p = draw(st.sampled_from(scalars))
    # a type the field does not have: text in place of text can be a valid new name (as: ...)
    value = draw(st.sampled_from([v for v in WRONG_TYPES
                                  if not (isinstance(v, str) and isinstance(_get(doc, p), str))]))
    _set(doc, p, value)
    return f"{f.name}: {value!r} at {p}", yaml.safe_dump(doc)


def _run(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["run", str(path), "-q", "--max-connections", "1000"])
    return rc, err.getvalue()


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=160, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutants())
def test_every_mutant_is_refused_on_one_line(tmp_path_factory, mutant):
    what, text = mutant
    path = tmp_path_factory.mktemp("m") / "mutant.yaml"
    path.write_text(text)
    rc, err = _run(path)
    assert rc == 2, (what, rc, err[-500:])
    assert err.count("\n") == 1 and "Traceback" not in err, (what, err[-2000:])
    assert err.startswith(f"error: {path}:"), (what, err)
    line, col = err[len(f"error: {path}:"):].split(":")[:2]
    assert line.isdigit() and col.isdigit(), (what, err)


def test_the_mutation_sources_load():
    assert len(FILES) > 50
    for f in FILES[:5]:
        rc, err = _run(f)
        assert rc in (0, 1), (f, err)
