"""What-if sweeps: one scenario run over a grid of parameters, in parallel, reproducibly.

``socksim sweep FILE --param rate=500..4000:500 --param tcp_tw_reuse=0,2`` runs the scenario once
per point of the grid on the simulator, with the parameters substituted:

- fields of the first load step: ``rate``, ``duration``, ``close_first``, ``reuseaddr``, ``port``...
- sysctls (``host.sysctls``): ``tcp_tw_reuse``, ``tcp_max_tw_buckets``, ``ip_local_port_range``
  (written ``LOW-HIGH``)...; the ``net.ipv4.``/``net.core.`` prefix may be given;
- host fields: ``latency``, ``file_max``; and ``seed``.

Values: ``A..B`` (step 1), ``A..B:STEP``, ``A..B:xFACTOR`` (geometric), ``V1,V2,...`` or one value.
The grid is the product of the ``--param`` lists, the last one varying fastest.

Every point is a plain task (the scenario as data, its parameters, its seed) run by
:func:`run_point` through a ``concurrent.futures`` executor: local worker processes by default,
or a Dask cluster with ``--scheduler tcp://HOST:PORT``. A point's result depends only on its task,
so the results are identical whichever executor ran them. Per point the outcome metrics are
taken from the trace (the load steps' statistics and the end-of-run summary), with the closed-form
estimate beside them (see :func:`closed_form`).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable

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
    from .scenario.model import Host, LoadSpec, Sysctls

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


def resolve_name(name: str) -> tuple[str, str, str]:
    """A parameter name as typed -> (canonical name, target, field); SweepError if unknown.

    ``rate`` and ``load.rate``; ``tcp_tw_reuse``, ``net.ipv4.tcp_tw_reuse`` and
    ``sysctls.tcp_tw_reuse``; ``latency`` and ``host.latency`` all name what they say.
    """
    known = sweepable()
    n = name.strip()
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
    from .scenario.model import Host, LoadSpec, Sysctls

    model = {"load": LoadSpec, "sysctls": Sysctls, "host": Host}.get(target)
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
        elif target == "sysctls":
            data.setdefault("host", {}).setdefault("sysctls", {})[field] = (
                list(value) if isinstance(value, tuple) else value)
        else:
            data.setdefault("host", {})[field] = value
    return data, seed


def validate_point(base: dict[str, Any], point: dict[str, Any], step_lines: tuple = ()) -> Any:
    """A validated :class:`Scenario` for one point; SweepError naming the parameter otherwise."""
    from pydantic import ValidationError

    from .scenario.model import Scenario

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


# ----------------------------------------------------------------------------- closed form


def _explicit_ports(sc: Any) -> set[int]:
    from .scenario.model import BindCall

    return {s.port for s in sc.steps if isinstance(s, BindCall) and s.port}


def closed_form(sc: Any) -> dict[str, Any] | None:
    """The back-of-the-envelope answer for the scenario's first load step.

    A client that closes first keeps each connection's port in TIME_WAIT for ``hold`` seconds:
    TCP_TIMEWAIT_LEN (60 s), or ``tcp_tw_reuse_delay`` when connect() may take over an old
    TIME_WAIT entry (tcp_tw_reuse 1, or 2 towards loopback, with timestamps on). With ``ports``
    free ephemeral ports towards one destination and ``rate`` connections per second, the
    sustainable share of the demand is ``ports / (rate x hold)``; at or below 1 the ports run out
    at ``ports / rate`` seconds (unless ``tcp_max_tw_buckets`` is below ``ports``: entries over the
    cap are not kept, so the port is free at once). ``ports`` is the range less its reserved and
    explicitly bound ports (one call of __inet_hash_connect() searches an even number of them, so
    with an odd-sized range the count can be one lower).
    """
    import ipaddress

    from .kernel.timewait import TCP_TIMEWAIT_LEN
    from .scenario.model import LoadStep

    load = next((s.load for s in sc.steps if isinstance(s, LoadStep)), None)
    if load is None:
        return None
    sy = sc.host.sysctls
    lo, hi = sy.ip_local_port_range
    taken = {p for p in sy.ip_local_reserved_ports if lo <= p <= hi} | {
        p for p in _explicit_ports(sc) if lo <= p <= hi}
    ports = max(0, hi - lo + 1 - len(taken))
    rate, duration = float(load.rate), float(load.duration)
    ip = ipaddress.ip_address(load.addr)
    loopback = ip.is_loopback or (getattr(ip, "ipv4_mapped", None) is not None and ip.ipv4_mapped.is_loopback)
    reuse = sy.tcp_timestamps != 0 and (sy.tcp_tw_reuse == 1 or (sy.tcp_tw_reuse == 2 and loopback))
    tw_len = float(TCP_TIMEWAIT_LEN)
    if load.close_first == "server":
        hold = 0.0
        basis = "the server closes first: the client's port is released at close"
    elif reuse:
        hold = sy.tcp_tw_reuse_delay / 1000.0
        basis = (f"tcp_tw_reuse={sy.tcp_tw_reuse}: connect() takes over a TIME_WAIT entry older than "
                 f"tcp_tw_reuse_delay ({sy.tcp_tw_reuse_delay} ms)")
    else:
        hold = tw_len
        basis = (f"tcp_tw_reuse={sy.tcp_tw_reuse}"
                 + (" (not loopback)" if sy.tcp_tw_reuse == 2 else "")
                 + (", tcp_timestamps=0" if sy.tcp_timestamps == 0 else "")
                 + f": each port stays in TIME_WAIT for {tw_len:g} s")
    if load.bind_addr is not None:
        basis += "; bind() before connect() is not covered by this estimate"
    demand = rate * hold
    capacity = math.inf if demand == 0 else ports / demand
    capped = sy.tcp_max_tw_buckets < ports and hold > 0 and not reuse
    # at exactly 1 the ports still run out: an entry is reusable only once strictly older than the
    # hold time, and the timer wheel ends TIME_WAIT at 60 s or a little later, never earlier
    exhausts = capacity <= 1 and not capped and load.close_first == "client"
    if capped:
        basis += (f"; tcp_max_tw_buckets ({sy.tcp_max_tw_buckets}) is below the {ports} ports: "
                  "connections over the cap leave no TIME_WAIT entry")
    n = int(round(rate * duration))
    if exhausts and hold > 0:
        full_cycles = math.floor(duration / hold)
        ok = min(n, int(full_cycles * ports + min(rate * (duration - full_cycles * hold), ports)))
    else:
        ok = n
    return {
        "ports": ports,
        "rate": rate,
        "hold_seconds": hold,
        "capacity_ratio": None if math.isinf(capacity) else _sig(capacity),
        "sustainable_fraction": 1.0 if math.isinf(capacity) else _sig(min(1.0, capacity)),
        "sustainable_rate": None if hold == 0 else _sig(ports / hold),
        # attempts come at i / rate for i < n: attempt number ports + 1 exists when ports < n
        "exhaustion_at": round(ports / rate, 6) if exhausts and ports < n else None,
        "peak_time_wait": int(min(rate * min(duration, tw_len), ports, sy.tcp_max_tw_buckets)),
        "ok": ok,
        "attempts": n,
        "ok_fraction": _sig(ok / n) if n else None,
        "basis": basis,
    }


def _sig(x: float, digits: int = 9) -> float:
    return float(f"{x:.{digits}g}")


# ----------------------------------------------------------------------------- one point


def _range_info(sc: Any) -> tuple[int, int, int]:
    lo, hi = sc.host.sysctls.ip_local_port_range
    outside = {p for p in _explicit_ports(sc) if not lo <= p <= hi}
    return lo, hi, len(outside)


def trace_series(trace: Any, sc: Any = None, limit: int | None = SERIES_POINTS) -> dict[str, list]:
    """The load steps' time samples as columns ``{"t": [...], "time_wait": [...], ...}``.

    ``t`` counts from the start of the first load step. ``free_ports`` (ephemeral ports with no
    owner) is derived from ``ports_in_use`` when the engine does not record it.
    """
    loads = [s for s in trace.steps if s.kind == "load" and isinstance(s.obs, dict)]
    if not loads:
        return {}
    t0 = loads[0].time
    cols: dict[str, list] = {}
    names_seen: list[str] = []
    for s in loads:
        model = s.obs.get("model") or {}
        names = list(model.get("columns") or ["t", "time_wait", "ports_in_use"])
        for n in names:
            if n not in names_seen:
                names_seen.append(n)
        for row in model.get("samples") or []:
            rec = dict(zip(names, row))
            rec["t"] = round(float(rec.get("t", 0.0)) + (s.time - t0), 6)
            for n in names_seen:
                cols.setdefault(n, []).append(rec.get(n))
    if not cols:
        return {}
    if "free_ports" not in cols and sc is not None:
        lo, hi, outside = _range_info(sc)
        size = hi - lo + 1
        if "ephemeral_in_use" in cols:
            cols["free_ports"] = [None if u is None else max(0, size - u) for u in cols["ephemeral_in_use"]]
        elif "ports_in_use" in cols:
            cols["free_ports"] = [None if u is None else max(0, size - max(0, u - outside))
                                  for u in cols["ports_in_use"]]
    n = len(cols["t"])
    if limit and n > limit:
        keep = set(range(0, n, max(1, n // limit))) | {n - 1}
        tw = cols.get("time_wait")
        if tw:
            keep.add(max(range(n), key=lambda i: tw[i] if tw[i] is not None else -1))
        idx = sorted(keep)
        cols = {k: [v[i] for i in idx] for k, v in cols.items()}
    return cols


def point_metrics(trace: Any, sc: Any = None) -> dict[str, Any]:
    """Outcome metrics of one run, from its load steps' statistics and the end-of-run summary."""
    loads = [s for s in trace.steps if s.kind == "load" and isinstance(s.obs, dict)]
    summ = trace.summary or {}
    t0 = loads[0].time if loads else 0.0
    errors: dict[str, int] = {}
    attempts = ok = accepted = 0
    first_port: tuple[float, str] | None = None
    first_any: tuple[float, str] | None = None
    for s in loads:
        o = s.obs
        attempts += int(o.get("attempts", 0))
        ok += int(o.get("ok", 0))
        accepted += int(o.get("accepted", 0))
        for k, v in (o.get("errors") or {}).items():
            errors[k] = errors.get(k, 0) + int(v)
        base = s.time - t0
        by = o.get("first_error_at_by_errno") or {}
        if o.get("first_error") and o.get("first_error_at") is not None:
            by = {o["first_error"]: o["first_error_at"], **by}
            at = base + float(o["first_error_at"])
            if first_any is None or at < first_any[0]:
                first_any = (at, o["first_error"])
        for name in PORT_ERRORS:
            if by.get(name) is not None:
                at = base + float(by[name])
                if first_port is None or at < first_port[0]:
                    first_port = (at, name)
    port_errors = sum(errors.get(n, 0) for n in PORT_ERRORS)
    series = trace_series(trace, sc, limit=None) if loads else {}
    ports_peak = max((v for v in series.get("ports_in_use", []) if v is not None), default=None)
    free_min = min((v for v in series.get("free_ports", []) if v is not None), default=None)
    m: dict[str, Any] = {
        "first_port_error": first_port[1] if first_port else None,
        "first_port_error_at": round(first_port[0], 6) if first_port else None,
        # a port error was counted but an earlier error of another kind hid its time
        "first_port_error_time_unknown": bool(port_errors and first_port is None),
        "first_error": first_any[1] if first_any else None,
        "first_error_at": round(first_any[0], 6) if first_any else None,
        "time_wait_peak": summ.get("time_wait_peak"),
        "tcp_mem_peak_bytes": summ.get("tcp_mem_peak_bytes"),
        "attempts": attempts,
        "ok": ok,
        "ok_fraction": round(ok / attempts, 6) if attempts else None,
        "accepted": accepted,
        "refused": errors.get("ECONNREFUSED", 0),
        "reset": errors.get("ECONNRESET", 0),
        "port_errors": port_errors,
        "errors": dict(sorted(errors.items())),
        "tw_overflows": summ.get("tw_overflows"),
        "tw_recycled": summ.get("tw_recycled"),
        "ports_in_use_peak": ports_peak,
        "free_ports_min": free_min,
        "time_wait_end": summ.get("time_wait"),
        "segments": summ.get("segments"),
        "sim_seconds": summ.get("time"),
        "expectations_failed": len(trace.failed_expectations),
    }
    return m


_PROGRESS_QUEUE: Any = None  # set in local worker processes by the pool initializer


def _init_worker(queue: Any) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = queue


def _progress_backend(seed: int, report: Callable[[float], None] | None) -> Any:
    """A SimBackend that reports simulated seconds done inside load steps (read-only; no effect
    on the run: it only adds its own timeouts to the event queue)."""
    from .engine import SimBackend

    if report is None:
        return SimBackend(seed=seed)

    class _Reporting(SimBackend):
        def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
            env, start, dur = self.env, self.env.now, float(spec["duration"])
            tick = max(dur / 100.0, 1e-3)
            state = {"done": False, "sent": 0.0, "wall": time.monotonic()}

            def reporter() -> Any:
                while not state["done"]:
                    yield env.timeout(tick)
                    if state["done"]:
                        return
                    now = time.monotonic()
                    if now - state["wall"] >= 0.25:
                        done = min(env.now - start, dur)
                        report(done - state["sent"])
                        state["sent"], state["wall"] = done, now

            env.process(reporter())
            try:
                return super().load(index, spec)
            finally:
                state["done"] = True
                if dur > state["sent"]:
                    report(dur - state["sent"])

    return _Reporting(seed=seed)


def point_work(sc: Any) -> float:
    """Simulated seconds of load in a scenario (the unit of the progress bar); at least 1."""
    from .scenario.model import LoadStep

    return max(1.0, sum(float(s.load.duration) for s in sc.steps if isinstance(s, LoadStep)))


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point. ``task``: index, scenario (plain data), params, seed, step_lines."""
    from . import __version__
    from .scenario.runner import run

    index = task["index"]
    out: dict[str, Any] = {"index": index, "params": task["params"], "seed": task["seed"]}
    try:
        data, pseed = apply_params(task["scenario"], task["params"])
        seed = pseed if pseed is not None else task["seed"]
        out["seed"] = seed
        sc = validate_point(task["scenario"], task["params"], tuple(task.get("step_lines", ())))
        q = _PROGRESS_QUEUE if task.get("progress") else None
        report = task.get("_report") or ((lambda d: q.put((index, d))) if q is not None else None)
        wall = time.perf_counter()
        trace = run(sc, _progress_backend(seed, report), seed=seed)
        out["wall_seconds"] = round(time.perf_counter() - wall, 3)
        out["metrics"] = point_metrics(trace, sc)
        out["estimate"] = closed_form(sc)
        out["series"] = trace_series(trace, sc)
    except Exception as e:  # a point that crashes is reported, the sweep goes on
        out["error"] = f"{type(e).__name__}: {e}"
    out["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    out["socksim"] = __version__
    return out


def result_line(res: dict[str, Any]) -> dict[str, Any]:
    """What a JSON line holds: only what the task determines (no wall time, no worker)."""
    keys = ("index", "params", "seed", "metrics", "estimate", "error")
    return {k: _plain(res[k]) for k in keys if k in res}


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v, default=list))


# ----------------------------------------------------------------------------- executors


class _Inline:
    """Runs tasks in this process, one by one (``--jobs 1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _local_executor(jobs: int, progress: bool) -> tuple[Any, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["sim.sweep", "sim.scenario.runner", "sim.engine"])
    queue = ctx.Queue() if progress else None
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(queue,))
    return ex, queue


def _dask_executor(address: str, timeout: float) -> tuple[Any, Any]:
    if not re.match(r"^(tcp|tls|ucx|ws|wss)://[^\s/]+(:\d+)?/?$", address):
        raise SweepError(f"--scheduler {address!r}: expected a Dask scheduler address such as tcp://HOST:8786")
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--scheduler needs Dask: pip install 'socksim[dask]'") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return client.get_executor(pure=False), client


# ----------------------------------------------------------------------------- the command


def _fmt_s(v: Any) -> str:
    return "never" if v is None else f"{v:.3f} s" if v < 100 else f"{v:.1f} s"


def _fmt_n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return f"{v:,}"


def _fmt_bytes(v: Any) -> str:
    if v is None:
        return "-"
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if v >= f:
            return f"{v / f:.1f} {unit}"
    return f"{v} B"


def print_table(params: list[dict[str, Any]], results: list[dict[str, Any]], file: Any = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False, width=None if (file or sys.stdout).isatty() else 200)
    t = Table(box=box.SIMPLE_HEAD)
    for p in params:
        t.add_column(p["name"], justify="right")
    for title in ("first port error", "estimate", "peak TIME_WAIT", "peak sock mem", "accepted",
                  "refused", "reset", "ok / attempts"):
        t.add_column(title, justify="right")
    for r in results:
        cells = [show_value(r["params"][p["name"]]) for p in params]
        if "error" in r:
            cells += [f"[red]failed: {r['error']}[/red]"] + [""] * 7
            t.add_row(*cells)
            continue
        m, e = r["metrics"], r.get("estimate") or {}
        first = _fmt_s(m["first_port_error_at"])
        if m["first_port_error"]:
            first += f" {m['first_port_error']}"
        elif m["first_port_error_time_unknown"]:
            first = "after another error"
        cells += [first, _fmt_s(e.get("exhaustion_at")) if e else "-", _fmt_n(m["time_wait_peak"]),
                  _fmt_bytes(m["tcp_mem_peak_bytes"]), _fmt_n(m["accepted"]), _fmt_n(m["refused"]),
                  _fmt_n(m["reset"]), f"{_fmt_n(m['ok'])} / {_fmt_n(m['attempts'])}"]
        t.add_row(*cells)
    console.print(t)


class _OrderedWriter:
    """Writes JSON lines in grid order as results arrive in any order."""

    def __init__(self, fh: Any):
        self.fh, self.next, self.held = fh, 0, {}

    def add(self, res: dict[str, Any]) -> None:
        self.held[res["index"]] = res
        while self.next in self.held:
            self.fh.write(json.dumps(result_line(self.held.pop(self.next)), sort_keys=False) + "\n")
            self.fh.flush()
            self.next += 1


def _open_out(path: str, what: str) -> Any:
    if path == "-":
        return sys.stdout
    p = Path(path)
    if p.is_dir():
        raise SweepError(f"{path}: is a directory, expected a file path for {what}")
    if not p.parent.exists():
        raise SweepError(f"{path}: the folder {p.parent} does not exist")
    try:
        return open(p, "w", encoding="utf-8")
    except OSError as e:
        raise SweepError(f"{path}: cannot write: {e.strerror}") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        return _sweep(args)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _sweep(args: argparse.Namespace) -> int:
    from . import __version__
    from .scenario.loader import ScenarioError, load_file

    if not args.param:
        raise SweepError("nothing to sweep: give at least one --param NAME=VALUES (e.g. --param rate=500..4000:500)")
    try:
        sc = load_file(args.file)
    except ScenarioError as e:
        raise SweepError(str(e)) from None
    params, grid = build_grid(args.param)
    base = sc.model_dump(by_alias=True, mode="json")
    seed = args.seed if args.seed is not None else sc.seed
    # every point is validated before anything runs: a bad value fails fast, with its name
    work = []
    for point in grid:
        psc = validate_point(base, point, sc.step_lines)
        work.append(point_work(psc))
    if args.jobs is not None and args.jobs < 1:
        raise SweepError(f"--jobs {args.jobs}: needs at least 1")
    if args.scheduler and args.jobs is not None:
        raise SweepError("--jobs is for local processes; with --scheduler the Dask cluster decides")
    text = Path(args.file).read_text(encoding="utf-8")
    jsonl = _open_out(args.jsonl, "the JSON lines") if args.jsonl else None
    if args.out:
        op = Path(args.out)
        if op.is_dir():
            raise SweepError(f"{args.out}: is a directory, expected a file path for the run file")
        if not op.parent.exists():
            raise SweepError(f"{args.out}: the folder {op.parent} does not exist")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    tasks = [{"index": i, "scenario": base, "params": point, "seed": seed,
              "step_lines": list(sc.step_lines), "progress": progress}
             for i, point in enumerate(grid)]

    client = None
    queue = None
    if args.scheduler:
        executor, client = _dask_executor(args.scheduler, args.connect_timeout)
        desc = {"kind": "dask", "scheduler": args.scheduler}
        for t in tasks:
            t["progress"] = False
    else:
        avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        jobs = min(args.jobs or avail, len(tasks))
        desc = {"kind": "local", "jobs": jobs}
        if jobs == 1:
            executor = _Inline()
        else:
            executor, queue = _local_executor(jobs, progress)

    results: list[dict[str, Any] | None] = [None] * len(tasks)
    writer = _OrderedWriter(jsonl) if jsonl else None
    wall0 = time.monotonic()
    bar = _Progress(progress, len(tasks), sum(work))
    inline_done: dict[int, float] = {}
    interrupted = False
    try:
        with bar:
            if isinstance(executor, _Inline):
                for t, w in zip(tasks, work):
                    if progress:
                        t = dict(t, _report=lambda d, i=t["index"]: (bar.advance(d), inline_done.__setitem__(i, inline_done.get(i, 0) + d)))
                    res = run_point(t)
                    bar.point_done(w - inline_done.get(t["index"], 0.0))
                    results[res["index"]] = res
                    if writer:
                        writer.add(res)
            else:
                futures = {executor.submit(run_point, t): (t["index"], w) for t, w in zip(tasks, work)}
                credited: dict[int, float] = {}
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    if queue is not None:
                        _drain(queue, bar, credited)
                    for f in done:
                        idx, w = futures[f]
                        try:
                            res = f.result()
                        except Exception as e:  # noqa: BLE001 -- the worker could not run the task at all
                            msg = f"{type(e).__name__}: {e}"
                            if isinstance(e, (ModuleNotFoundError, ImportError)) and client is not None:
                                raise SweepError(f"the Dask workers cannot import socksim ({e}); install socksim "
                                                 "on every worker") from None
                            res = {"index": idx, "params": tasks[idx]["params"], "seed": seed, "error": msg}
                        bar.point_done(max(0.0, w - credited.pop(idx, 0.0)))
                        results[idx] = res
                        if writer:
                            writer.add(res)
    except KeyboardInterrupt:
        interrupted = True
        n = sum(r is not None for r in results)
        print(f"interrupted: {n} of {len(tasks)} points had finished"
              + (f" (their lines are in {args.jsonl})" if args.jsonl and args.jsonl != "-" and n else ""),
              file=sys.stderr)
        return 130
    finally:
        if client is not None:
            executor.shutdown(wait=False)  # ClientExecutor cancels what has not run
            client.close()
        elif not isinstance(executor, _Inline):
            executor.shutdown(wait=not interrupted, cancel_futures=True)
        if jsonl is not None and jsonl is not sys.stdout:
            jsonl.close()
    wall = time.monotonic() - wall0
    done_results = [r for r in results if r is not None]
    versions = {r.get("socksim") for r in done_results if r.get("socksim")}
    if versions - {__version__}:
        print(f"warning: points ran on socksim {', '.join(sorted(versions))}; this is {__version__}",
              file=sys.stderr)
    if args.out:
        run_file = {
            "kind": SWEEP_KIND,
            "schema": SWEEP_SCHEMA,
            "socksim": __version__,
            "scenario": {"name": sc.name, "file": str(args.file), "description": sc.description,
                         "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text},
            "params": [{k: p[k] for k in ("name", "target", "field", "values", "spec")} for p in params],
            "seed": seed,
            "command": ["socksim", "sweep", str(args.file)] + [a for p in params for a in ("--param", p["spec"])]
                       + ([f"--seed={args.seed}"] if args.seed is not None else []),
            "points": [_plain(r) for r in done_results],
            "executor": desc,
            "timing": {"wall_seconds": round(wall, 3)},
        }
        from .cli import _write_json

        err = _write_json(args.out, run_file)
        if err:
            raise SweepError(err)
    if not args.quiet and args.jsonl != "-":
        print_table(params, done_results)
        print(f"{len(done_results)} point(s) in {wall:.1f} s on {_describe(desc)}"
              + (f"; run file: {args.out}" if args.out else ""), file=sys.stderr)
    failed = [r for r in done_results if "error" in r]
    if failed:
        print(f"{len(failed)} point(s) failed; first: {failed[0]['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _describe(desc: dict[str, Any]) -> str:
    if desc["kind"] == "dask":
        return f"the Dask cluster at {desc['scheduler']}"
    return f"{desc['jobs']} local process{'es' if desc['jobs'] > 1 else ''}"


def _drain(queue: Any, bar: _Progress, credited: dict[int, float]) -> None:
    import queue as _q

    while True:
        try:
            idx, d = queue.get_nowait()
        except (_q.Empty, OSError, EOFError):
            return
        credited[idx] = credited.get(idx, 0.0) + d
        bar.advance(d)


class _Progress:
    """A rich progress bar on stderr, in simulated seconds; points done in its text."""

    def __init__(self, enabled: bool, points: int, work: float):
        self.enabled, self.points, self.work, self.done = enabled, points, work, 0
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("[bold]sweep[/bold] {task.description}"), BarColumn(),
                              TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                              TextColumn("eta"), TimeRemainingColumn(),
                              console=Console(stderr=True), transient=False)
            self.task = self.p.add_task(self._text(), total=work)

    def _text(self) -> str:
        return f"{self.done}/{self.points} points"

    def __enter__(self) -> _Progress:
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.p:
            self.p.stop()

    def advance(self, d: float) -> None:
        if self.p and d > 0:
            self.p.advance(self.task, d)

    def point_done(self, rest: float) -> None:
        self.done += 1
        if self.p:
            self.p.update(self.task, advance=max(0.0, rest), description=self._text())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep", help="run a scenario over a grid of parameters (what-if questions)",
        description="Run a scenario once per point of a parameter grid on the simulator and report, "
                    "per point, the time to the first EADDRNOTAVAIL/EADDRINUSE, the peak TIME_WAIT "
                    "entries and socket memory, connections accepted, refused and reset, beside the "
                    "closed-form estimate. Points run in parallel: local processes, or a Dask cluster "
                    "with --scheduler. Exit 0 when every point ran, 1 when one failed, 2 for bad input.",
        epilog="parameters: fields of the first load step (rate, duration, close_first, reuseaddr, "
               "port, ...), sysctls (tcp_tw_reuse, tcp_tw_reuse_delay, tcp_max_tw_buckets, "
               "ip_local_port_range as LOW-HIGH, ...; net.ipv4. prefix allowed), host fields "
               "(latency, file_max) and seed. values: A..B (step 1), A..B:STEP, A..B:xFACTOR, "
               "V1,V2,... or one value. example: socksim sweep scenarios/whatif/ports-2000cps.yaml "
               "--param rate=500..4000:500 --param tcp_tw_reuse=0,2 -o runs/ports.json")
    p.add_argument("file", help="scenario .yaml file")
    p.add_argument("--param", action="append", metavar="NAME=VALUES", default=[],
                   help="a swept parameter (repeat for a grid), e.g. rate=500..4000:500 or tcp_tw_reuse=0,2")
    p.add_argument("--seed", type=int, help="seed of every point (default: the scenario's); sweep it with --param seed=0..9")
    p.add_argument("-o", "--out", metavar="RUN.json",
                   help="write the run file (grid, metrics, time series, scenario text) for `socksim report`")
    p.add_argument("--jsonl", metavar="PATH", help="write one JSON line per point, in grid order ('-': stdout, no table)")
    p.add_argument("-j", "--jobs", type=int, help="local worker processes (default: the CPUs available; 1 runs in this process)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the points on this Dask cluster (needs socksim[dask])")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to reach the Dask scheduler (default 10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="show the progress bar even when stderr is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="no table")
    p.set_defaults(func=cmd_sweep)
