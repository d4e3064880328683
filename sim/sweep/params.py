"""Sweep parameters: names, value ranges, the grid, and a point's scenario."""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PORT_ERRORS = ("EADDRNOTAVAIL", "EADDRINUSE")
MAX_POINTS = 10_000
SERIES_POINTS = 600  # time samples kept per point in the run file (peaks are taken before thinning)
SWEEP_KIND = "socksim-sweep"
SWEEP_SCHEMA = 1

# Parameters that name processes or sockets make no sense to sweep.
_LOAD_EXCLUDED = ("proc", "accept_proc", "listener")
_HOST_EXCLUDED = ("sysctls",)


class SweepError(Exception):
    """Bad input: one line, exit 2."""


# ----------------------------------------------------------------------------- parameters


def sweepable() -> dict[str, tuple[str, str]]:
    """Every parameter name a sweep accepts: name -> (target, field)."""
    from ..scenario.model import Host, LoadSpec, Sysctls

    out: dict[str, tuple[str, str]] = {}
    for f in LoadSpec.model_fields:
        if f not in _LOAD_EXCLUDED:
            out[f] = ("load", f)
    for f in Sysctls.model_fields:
        out[f] = ("sysctls", f)
    for f in Host.model_fields:
        if f not in _HOST_EXCLUDED:
            out[f] = ("host", f)
    out["seed"] = ("seed", "seed")
    return out


LINK_FIELDS = ("delay", "bandwidth")


def _host_scoped(n: str, known: dict[str, tuple[str, str]]) -> tuple[str, str, str] | None:
    """``HOST.FIELD`` (``client.ip_local_port_range``, ``server.tcp_max_tw_buckets``,
    ``client.file_max``): a setting of one host of a scenario with ``hosts:``; ``delay`` and
    ``bandwidth`` (or ``link.delay``): every link's."""
    if n in LINK_FIELDS or (n.startswith("link.") and n[5:] in LINK_FIELDS):
        f = n.split(".")[-1]
        return f"link.{f}" if n.startswith("link.") else f, "link", f
    if "." not in n:
        return None
    host, rest = n.split(".", 1)
    if host in ("load", "host", "sysctls", "net", "link") or not re.match(r"^[A-Za-z_][A-Za-z0-9_\-]*$", host):
        return None
    for pre in ("sysctls.", "net.ipv4.", "net.core."):
        if rest.startswith(pre):
            rest = rest[len(pre):]
            break
    target, field = known.get(rest, ("", ""))
    if target == "sysctls":
        return f"{host}.{rest}", f"sysctls@{host}", field
    if target == "host":
        return f"{host}.{rest}", f"host@{host}", field
    return None


def resolve_name(name: str) -> tuple[str, str, str]:
    """A parameter name as typed -> (canonical name, target, field); SweepError if unknown.

    ``rate`` and ``load.rate``; ``tcp_tw_reuse``, ``net.ipv4.tcp_tw_reuse`` and
    ``sysctls.tcp_tw_reuse``; ``latency`` and ``host.latency`` all name what they say.
    """
    known = sweepable()
    n = name.strip()
    scoped = _host_scoped(n, known)
    if scoped is not None:
        return scoped
    prefixes = [("load.", "load"), ("host.sysctls.", "sysctls"), ("sysctls.", "sysctls"),
                ("net.ipv4.", "sysctls"), ("net.core.", "sysctls"), ("host.", "host")]
    for pre, want in prefixes:
        if n.startswith(pre) and known.get(n[len(pre):], ("",))[0] == want:
            n = n[len(pre):]
            break
    if n in known:
        return (n,) + known[n]
    hint = difflib.get_close_matches(n.split(".")[-1], list(known), n=1)
    load = [k for k, (t, _) in known.items() if t == "load"]
    host = [k for k, (t, _) in known.items() if t == "host"]
    raise SweepError(f"unknown parameter {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + "; sweepable: " + ", ".join(load) + " (the first load step); "
                     + "any sysctl of host.sysctls (tcp_tw_reuse, ip_local_port_range, ...); "
                     + ", ".join(host) + " (host); seed")


_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+$")


def _scalar(tok: str) -> Any:
    t = tok.strip()
    if _INT.match(t):
        return int(t)
    if _NUM.match(t):
        return float(t)
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    return t


def _field_kind(target: str, field: str) -> str:
    """'tuple', 'list', 'bool' or 'scalar': how a value of this field is written."""
    from ..scenario.model import Host, LoadSpec, Sysctls

    from ..scenario.model import Link

    model = {"load": LoadSpec, "sysctls": Sysctls, "host": Host, "link": Link}.get(target.split("@")[0])
    if model is None:
        return "scalar"
    ann = str(model.model_fields[field].annotation)
    if ann.startswith("tuple"):
        return "tuple"
    if ann.startswith("list"):
        return "list"
    if ann == "<class 'bool'>":
        return "bool"
    return "scalar"


def _tidy(x: float) -> float | int:
    r = float(f"{x:.12g}")
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def expand_range(text: str, where: str) -> list[Any]:
    """``A..B``, ``A..B:STEP`` or ``A..B:xFACTOR`` -> the values, B included when on the grid."""
    m = re.match(r"^\s*([^.:]+|[^:]*?\d)\s*\.\.\s*([^:]+?)\s*(?::\s*(x|\*)?\s*(.+?)\s*)?$", text)
    if not m:
        raise SweepError(f"{where}: cannot read the range {text!r}; write START..STOP[:STEP] or START..STOP:xFACTOR")
    a_s, b_s, geo, s_s = m.group(1), m.group(2), m.group(3), m.group(4)
    for s in (a_s, b_s) + ((s_s,) if s_s is not None else ()):
        if not _NUM.match(s.strip()):
            raise SweepError(f"{where}: {s.strip()!r} is not a number (ranges are START..STOP[:STEP])")
    a, b = _scalar(a_s), _scalar(b_s)
    if a > b:
        raise SweepError(f"{where}: the range starts at {a}, above its end {b}")
    values: list[Any] = []
    if geo:
        f = _scalar(s_s)
        if f <= 1:
            raise SweepError(f"{where}: a geometric range needs a factor above 1, got x{f}")
        if a <= 0:
            raise SweepError(f"{where}: a geometric range needs a positive start, got {a}")
        x = float(a)
        while x <= b * (1 + 1e-9):
            values.append(_tidy(x))
            x *= f
            if len(values) > MAX_POINTS:
                break
    else:
        step = _scalar(s_s) if s_s is not None else 1
        if step <= 0:
            raise SweepError(f"{where}: the step must be positive, got {step}")
        n = math.floor((b - a) / step * (1 + 1e-12) + 1e-9)
        if n + 1 > MAX_POINTS:
            raise SweepError(f"{where}: {n + 1} values; a parameter takes at most {MAX_POINTS}")
        all_int = all(isinstance(v, int) for v in (a, b, step))
        values = [a + i * step if all_int else _tidy(a + i * step) for i in range(n + 1)]
    if len(values) > MAX_POINTS:
        raise SweepError(f"{where}: more than {MAX_POINTS} values")
    return values


def parse_param(text: str) -> tuple[str, str, str, list[Any]]:
    """``NAME=VALUES`` -> (name, target, field, values)."""
    if "=" not in text:
        raise SweepError(f"--param {text!r}: expected NAME=VALUES, e.g. rate=500..4000:500 or tcp_tw_reuse=0,2")
    raw_name, raw = text.split("=", 1)
    if not raw_name.strip():
        raise SweepError(f"--param {text!r}: the parameter name is missing before '='")
    name, target, field = resolve_name(raw_name)
    where = f"--param {text}"
    raw = raw.strip()
    if not raw:
        raise SweepError(f"{where}: no values after '='")
    kind = _field_kind(target, field)
    if kind == "list":
        raise SweepError(f"{where}: {name} is a list; it cannot be swept")
    values: list[Any] = []
    if kind == "tuple":
        for tok in raw.split(","):
            parts = [p.strip() for p in tok.split("-")]
            if len(parts) < 2 or not all(_INT.match(p) for p in parts):
                raise SweepError(f"{where}: {name} values are written LOW-HIGH (e.g. 32768-60999), "
                                 f"found {tok.strip()!r}")
            values.append(tuple(int(p) for p in parts))
    elif ".." in raw:
        if "," in raw:
            raise SweepError(f"{where}: give either a range (A..B:STEP) or a list (A,B,C), not both")
        values = expand_range(raw, where)
    else:
        toks = [t.strip() for t in raw.split(",")]
        if any(not t for t in toks):
            raise SweepError(f"{where}: an empty value in the list")
        values = [_scalar(t) for t in toks]
    if kind == "bool":
        bad = [v for v in values if not isinstance(v, bool) and v not in (0, 1)]
        if bad:
            raise SweepError(f"{where}: {name} is true or false, found {bad[0]!r}")
        values = [bool(v) for v in values]
    if len(set(map(_key, values))) != len(values):
        raise SweepError(f"{where}: a value is repeated")
    return name, target, field, values


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=list)


def show_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "-".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def build_grid(specs: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """--param texts -> (parameter descriptions, grid points as {name: value})."""
    params: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for text in specs:
        name, target, field, values = parse_param(text)
        if name in seen:
            raise SweepError(f"--param {text}: {name} is already swept by --param {seen[name]}")
        seen[name] = text
        params.append({"name": name, "target": target, "field": field, "values": values, "spec": text})
    total = 1
    for p in params:
        total *= len(p["values"])
    if total > MAX_POINTS:
        raise SweepError(f"the grid has {total} points; a sweep runs at most {MAX_POINTS}")
    names = [p["name"] for p in params]
    grid = [dict(zip(names, combo)) for combo in itertools.product(*(p["values"] for p in params))]
    return params, grid


def apply_params(base: dict[str, Any], point: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The scenario data with the point's parameters substituted, and the seed it sets (if any)."""
    data = json.loads(json.dumps(base, default=list))  # a deep copy of plain data
    seed = None
    for name, value in point.items():
        _, target, field = resolve_name(name)
        if target == "seed":
            seed = int(value)
        elif target == "load":
            step = next((s for s in data["steps"] if isinstance(s, dict) and "load" in s), None)
            if step is None:
                raise SweepError(f"{name} is a field of a load step, and the scenario has no load step")
            step["load"][field] = list(value) if isinstance(value, tuple) else value
        elif target == "link":
            if not data.get("links"):
                raise SweepError(f"{name} is a setting of the links, and the scenario has no links:")
            for link in data["links"]:
                link[field] = value
        elif "@" in target:
            kind, host = target.split("@", 1)
            if host not in (data.get("hosts") or {}):
                known = ", ".join(data.get("hosts") or {}) or "none: the scenario has one host"
                raise SweepError(f"{name}: the scenario has no host {host!r} (hosts: {known})")
            spec = data["hosts"][host]
            if kind == "sysctls":
                spec.setdefault("sysctls", {})[field] = list(value) if isinstance(value, tuple) else value
            else:
                spec[field] = value
        elif data.get("hosts"):  # a setting without a host: every host's
            for spec in data["hosts"].values():
                if target == "sysctls":
                    spec.setdefault("sysctls", {})[field] = list(value) if isinstance(value, tuple) else value
                else:
                    spec[field] = value
        elif target == "sysctls":
            data.setdefault("host", {}).setdefault("sysctls", {})[field] = (
                list(value) if isinstance(value, tuple) else value)
        else:
            data.setdefault("host", {})[field] = value
    return data, seed


def validate_point(base: dict[str, Any], point: dict[str, Any], step_lines: tuple = ()) -> Any:
    """A validated :class:`Scenario` for one point; SweepError naming the parameter otherwise."""
    from pydantic import ValidationError

    from ..scenario.model import Scenario

    data, _ = apply_params(base, point)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = [str(x) for x in err.get("loc", ())]
        shown = ", ".join(f"{k}={show_value(v)}" for k, v in point.items())
        for k, v in point.items():
            if resolve_name(k)[2] in loc:
                shown = f"{k}={show_value(v)}"
                break
        msg = err.get("msg", "invalid value")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        raise SweepError(f"--param {shown}: {msg}") from None
    return sc.model_copy(update={"step_lines": tuple(step_lines)})
