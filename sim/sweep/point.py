"""One sweep point: its closed-form estimate, its run on the simulator, its metrics and series."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any, Callable

from .params import PORT_ERRORS, SERIES_POINTS, apply_params, validate_point

# ----------------------------------------------------------------------------- closed form


def _explicit_ports(sc: Any) -> set[int]:
    from ..scenario.model import BindCall

    load = _first_load(sc)
    host = sc.host_name_of(load.proc) if load is not None else None
    # ports bound on the client's host only: another host has its own port table
    return {s.port for s in sc.steps if isinstance(s, BindCall) and s.port
            and (host is None or sc.host_name_of(s.proc) == host)}


def _ok_by(t: float, rate: float, ports: int, hold: float, exhausts: bool) -> float:
    """Connections that succeed in the first ``t`` seconds of a load: all of them, or, once the
    ports run out, ``ports`` per ``hold`` seconds (each port is reusable a hold time later)."""
    n = rate * t
    if not exhausts or hold <= 0:
        return n
    full_cycles = math.floor(t / hold)
    return min(n, full_cycles * ports + min(rate * (t - full_cycles * hold), ports))


def _first_load(sc: Any) -> Any:
    from ..scenario.model import LoadStep

    return next((s.load for s in sc.steps if isinstance(s, LoadStep)), None)


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

    from ..kernel.timewait import TCP_TIMEWAIT_LEN
    from ..scenario.model import LoadStep

    load = next((s.load for s in sc.steps if isinstance(s, LoadStep)), None)
    if load is None:
        return None
    sy = sc.host_of(load.proc).sysctls  # the client's host
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
    ok = int(_ok_by(duration, rate, ports, hold, exhausts)) if exhausts and hold > 0 else n
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
    load = _first_load(sc)
    lo, hi = (sc.host_of(load.proc) if load is not None else sc.host).sysctls.ip_local_port_range
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
    """In a local worker process: the progress queue, and stop signals left to the parent (which
    stops its workers itself; a Ctrl-C at the terminal reaches the whole process group)."""
    import signal

    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = queue
    for s in (signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)


def _progress_backend(seed: int, report: Callable[[float], None] | None, sc: Any = None) -> Any:
    """A SimBackend that reports the work done inside load steps, in connections (simulated
    seconds x rate), as it goes (read-only; no effect on the run: it only adds its own timeouts
    to the event queue). With the scenario ``sc``, work is counted as :func:`load_work` counts it."""
    from ..engine import SimBackend
    from ..scenario.model import LoadStep

    loads = [s.load for s in sc.steps if isinstance(s, LoadStep)] if sc is not None else []

    if report is None:
        return SimBackend(seed=seed)

    class _Reporting(SimBackend):
        loads_run = 0

        def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
            env, start, dur = self.env, self.env.now, float(spec["duration"])
            rate = float(spec["rate"])
            k, self.loads_run = self.loads_run, self.loads_run + 1
            work = load_work(sc, loads[k]) if k < len(loads) else (lambda t: rate * t)
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
                        report(work(done) - work(state["sent"]))
                        state["sent"], state["wall"] = done, now

            env.process(reporter())
            try:
                return super().load(index, spec)
            finally:
                state["done"] = True
                if dur > state["sent"]:
                    report(work(dur) - work(state["sent"]))

    return _Reporting(seed=seed)


# What a connect() that fails at once (EADDRNOTAVAIL: no port) costs the simulator, in
# connections made: about a fifth, measured on a sweep of points whose ports run out at
# different rates (docs/whatif.md).
REFUSED_COST = 0.2


def load_work(sc: Any, load: Any) -> Callable[[float], float]:
    """The work done by a load step after ``t`` simulated seconds, in connections made: the
    closed form's projected successes (the first load step's ports run out, then recycle a hold
    time later) plus refused attempts at REFUSED_COST each. Successes cost the simulator far more
    than refusals, so points where ports run out weigh far less than their attempts."""
    rate = float(load.rate)
    est = closed_form(sc) if load is _first_load(sc) else None
    if est is None or est["exhaustion_at"] is None:
        return lambda t: rate * t
    ports, hold = int(est["ports"]), float(est["hold_seconds"])

    def work(t: float) -> float:
        ok = _ok_by(t, rate, ports, hold, True)
        return ok + REFUSED_COST * max(0.0, rate * t - ok)

    return work


def point_work(sc: Any) -> float:
    """A point's work, the unit of the progress bar: the connections its load steps make
    (:func:`load_work`: the simulator's cost grows with connections made, not with simulated
    seconds or refused attempts, so points weigh what they cost), plus one per step; at least 1."""
    from ..scenario.model import LoadStep

    conns = sum(load_work(sc, s.load)(float(s.load.duration)) for s in sc.steps if isinstance(s, LoadStep))
    return max(1.0, conns + len(sc.steps))


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point. ``task``: index, scenario (plain data), params, seed, step_lines."""
    from .. import __version__
    from ..scenario.runner import run

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
        trace = run(sc, _progress_backend(seed, report, sc), seed=seed)
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
