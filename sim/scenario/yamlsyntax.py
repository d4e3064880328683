"""YAML syntax errors in plain words: what was expected, what was found, where."""

from __future__ import annotations

import re

import yaml

from .errors import ScenarioError


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
