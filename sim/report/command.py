"""``socksim report RUN.json -o reports/NAME/``: an HTML page and a Markdown report with plots.

RUN.json is what ``socksim sweep -o`` writes (a sweep: every metric against the swept parameter,
beside the closed-form estimate, and the points' time series), or a trace from ``socksim run
--json`` (one run: TIME_WAIT entries and free ephemeral ports over time, connections per TCP
state, socket memory; then the load steps' outcome, the kernel's tables and the timeline).
``crosscheck --json`` output and ``sweep --jsonl`` lines are read too.

The folder gets ``index.html`` (self-contained), ``report.md`` and ``img/*.png`` (for the
Markdown). An existing report is never replaced unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import answer, sweep_figures
from .answer import show_param as _show
from . import html as html_out
from . import markdown as md_out

EXIT_OK, EXIT_BAD_INPUT = 0, 2
OWNED = ("index.html", "report.md", "img")  # what a report folder holds; --force replaces these
MAX_TIMELINE_ROWS = 300


class ReportError(Exception):
    """Bad input: one line, exit 2."""


# ----------------------------------------------------------------------------- input


def load_run(path: str) -> tuple[str, dict[str, Any]]:
    """('sweep', run) or ('trace', trace dict) from a run file; ReportError otherwise."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"{path}: no such file (expected a run file from `socksim sweep -o` or `socksim run --json`)")
    if p.is_dir():
        raise ReportError(f"{path}: is a directory, expected a run file (.json)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not UTF-8 text, expected a JSON run file") from None
    except OSError as e:
        raise ReportError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            try:
                points = [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                raise ReportError(f"{path}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
            return "sweep", _sweep_from_lines(points, path)
        raise ReportError(f"{path}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
    if isinstance(data, dict) and data.get("kind") == "socksim-sweep":
        if not isinstance(data.get("points"), list) or not data["points"]:
            raise ReportError(f"{path}: the sweep holds no points")
        return "sweep", data
    if isinstance(data, dict) and "index" in data and "metrics" in data:
        return "sweep", _sweep_from_lines([data], path)
    if isinstance(data, dict) and isinstance(data.get("sim"), dict) and "verdict" in data:
        data = data["sim"]
    if isinstance(data, dict) and isinstance(data.get("steps"), list) and "backend" in data:
        return "trace", data
    raise ReportError(f"{path}: not a socksim run file (expected the output of `socksim sweep -o`, "
                      "`socksim sweep --jsonl` or `socksim run --json`)")


def _sweep_from_lines(points: list[Any], path: str) -> dict[str, Any]:
    if not all(isinstance(p, dict) and "params" in p and "index" in p for p in points):
        raise ReportError(f"{path}: not socksim sweep JSON lines (each line needs index, params, metrics)")
    names: list[str] = []
    for p in points:
        for k in p["params"]:
            if k not in names:
                names.append(k)
    params = []
    for n in names:
        vals: list[Any] = []
        for p in points:
            v = p["params"].get(n)
            if v not in vals:
                vals.append(v)
        params.append({"name": n, "values": vals, "spec": f"{n}=" + ",".join(_show(v) for v in vals)})
    return {"kind": "socksim-sweep", "params": params, "points": sorted(points, key=lambda p: p["index"]),
            "scenario": {"name": Path(path).stem}, "seed": points[0].get("seed")}


def _scenario_of_trace(trace: dict[str, Any]) -> Any:
    """The trace's scenario (for its sysctls): from the scenario text or host the trace carries,
    else from its file when it is still where the trace says."""
    from ..scenario.loader import ScenarioError, load_file, load_text

    meta = trace.get("meta") or {}
    try:
        if meta.get("scenario_text"):
            return load_text(meta["scenario_text"], meta.get("source") or "scenario")
    except ScenarioError:
        pass
    src = meta.get("source")
    if src and Path(src).is_file():
        try:
            sc = load_file(src)
        except ScenarioError:
            sc = None
        if sc is not None and sc.name == trace.get("scenario"):
            return sc
    return None


def _scenario_of_sweep(run: dict[str, Any], point: dict[str, Any]) -> Any:
    text = (run.get("scenario") or {}).get("text")
    if not text:
        return None
    from ..scenario.loader import ScenarioError, load_text
    from ..sweep import SweepError, validate_point

    try:
        sc = load_text(text, run["scenario"].get("file") or "scenario")
        return validate_point(sc.model_dump(by_alias=True, mode="json"), point["params"])
    except (ScenarioError, SweepError):
        return None


# ----------------------------------------------------------------------------- formatting


def _secs(v: Any) -> str:
    if v is None:
        return "never"
    return f"{v:.3f} s" if v < 100 else f"{v:.1f} s"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _bytes(v: Any) -> str:
    from .plots import human_bytes

    return "-" if v is None else human_bytes(float(v))


def text_blocks(text: str) -> list[Any]:
    """A scenario description as paragraphs and bullet lists ("- " items, indented continuations)."""
    blocks: list[Any] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(("p", " ".join(" ".join(para).split())))
            para.clear()
        if items:
            blocks.append(("list", [" ".join(i.split()) for i in items]))
            items.clear()

    for line in text.strip().splitlines():
        if not line.strip():
            flush()
        elif line.lstrip().startswith("- "):
            if para:
                flush()
            items.append(line.lstrip()[2:])
        elif items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()
        else:
            if items:
                flush()
            para.append(line)
    flush()
    return blocks


def _x_value(v: Any) -> Any:
    """A parameter value as an x coordinate: numbers as they are, a port range by its size."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return v[1] - v[0] + 1
    return None


# ----------------------------------------------------------------------------- sweeps


def _choose_x(params: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """The parameter for the x axis: the numeric one with the most values; else a categorical one
    (a switch such as tcp_tw_reuse is drawn as categories, never as a line through values that
    did not run)."""
    from .charts import categorical_param

    best, best_rank = None, (0, False)
    for p in params:
        xs = [_x_value(v) for v in p["values"]]
        if len(p["values"]) > 1 and all(x is not None for x in xs) and not categorical_param(p):
            # most values first; on a tie a load field (rate, duration) before a sysctl switch
            rank = (len(p["values"]), p.get("target") == "load")
            if best is None or rank > best_rank:
                best, best_rank = p, rank
    if best is not None:
        return best, False
    multi = [p for p in params if len(p["values"]) > 1]
    if multi:
        return max(multi, key=lambda p: len(p["values"])), True
    return None, False


def _x_label(p: dict[str, Any]) -> str:
    name = p["name"]
    if any(isinstance(v, (list, tuple)) for v in p["values"]):
        return f"ports in {name}"
    units = {"rate": "rate (connections/s)", "duration": "duration (s)", "latency": "latency (s)",
             "tcp_tw_reuse_delay": "tcp_tw_reuse_delay (ms)"}
    return units.get(name, name)


def _groups(run: dict[str, Any], xp: dict[str, Any] | None) -> list[tuple[str, list[dict[str, Any]]]]:
    """Points grouped into series: one per combination of the other swept parameters."""
    others = [p["name"] for p in run["params"] if len(p["values"]) > 1 and (xp is None or p["name"] != xp["name"])]
    groups: dict[str, list[dict[str, Any]]] = {}
    for pt in run["points"]:
        label = ", ".join(f"{n}={_show(pt['params'].get(n))}" for n in others) or "simulated"
        groups.setdefault(label, []).append(pt)
    if xp is not None:
        order = {json.dumps(v, default=list): i for i, v in enumerate(xp["values"])}
        for pts in groups.values():
            pts.sort(key=lambda pt: order.get(json.dumps(pt["params"].get(xp["name"]), default=list), 0))
    return list(groups.items())


def _estimate(pt: dict[str, Any], key: str) -> Any:
    e = pt.get("estimate") or {}
    v = e.get(key)
    if key == "peak_time_wait" and e.get("hold_seconds") not in (None, 60.0, 60):
        return None  # with TIME_WAIT reuse the peak depends on the port search: no closed form
    return v


def _findings(run: dict[str, Any], xp: dict[str, Any] | None,
              groups: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    out = []
    xn = xp["name"] if xp else None
    for label, pts in groups:
        ok_pts = [p for p in pts if "metrics" in p]
        if not ok_pts:
            continue
        hit = [p for p in ok_pts if p["metrics"].get("first_port_error_at") is not None]
        prefix = f"{label}: " if label != "simulated" else ""
        peak_tw = max((p["metrics"].get("time_wait_peak") or 0) for p in ok_pts)
        if not hit:
            where = (f"at any {xn} up to {_show(pts[-1]['params'][xn])}" if xn and len(ok_pts) > 1 else "")
            out.append(f"{prefix}no EADDRNOTAVAIL or EADDRINUSE {where} within the run; "
                       f"peak TIME_WAIT {peak_tw:,}.".replace("  ", " "))
            continue
        parts = []
        for p in hit[:1] + (hit[-1:] if len(hit) > 1 else []):
            m, est = p["metrics"], _estimate(p, "exhaustion_at")
            at = f"{m['first_port_error_at']:.3g} s"
            where = f" at {xn}={_show(p['params'][xn])}" if xn else ""
            parts.append(f"first {m['first_port_error']} after {at}{where}"
                         + (f" (closed form {est:.3g} s)" if est is not None else ""))
        served = [p["metrics"].get("ok_fraction") for p in hit if p["metrics"].get("ok_fraction") is not None]
        tail = (f"; {min(served) * 100:.0f} to {max(served) * 100:.0f} % of the attempts succeeded"
                if served and len(hit) > 1 else
                (f"; {served[0] * 100:.0f} % of the attempts succeeded" if served else ""))
        if xn and len(ok_pts) > 1:
            first_x = _show(hit[0]["params"][xn])
            out.append(f"{prefix}ports run out from {xn}={first_x}: " + "; ".join(parts) + tail + ".")
        else:
            out.append(f"{prefix}ports run out: " + "; ".join(parts) + tail + ".")
    diffs = []
    for _, pts in groups:
        for p in pts:
            m, est = p.get("metrics") or {}, _estimate(p, "exhaustion_at")
            if m.get("first_port_error_at") is not None and est:
                diffs.append(abs(m["first_port_error_at"] - est) / est)
    if diffs and max(diffs) < 1e-6:
        out.append("The simulated time to the first port error equals the closed form (free ports / rate) "
                   "at every point where both exist.")
    elif diffs:
        out.append(f"The simulated time to the first port error is within {max(diffs) * 100:.2g} % of "
                   "the closed form (free ports / rate) at every point where both exist.")
    return out


def _pick(points: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(points) <= n:
        return points
    step = (len(points) - 1) / (n - 1)
    return [points[round(i * step)] for i in range(n)]


def sweep_document(run: dict[str, Any], source: str) -> dict[str, Any]:
    from . import plots

    params = run["params"]
    scen = run.get("scenario") or {}
    points = [p for p in run["points"] if "metrics" in p]
    failed = [p for p in run["points"] if "metrics" not in p]
    xp, categorical = _choose_x(params)
    groups = _groups(run, xp)
    fixed = [p for p in params if len(p["values"]) == 1]
    grid_text = " x ".join(f"{p['name']} ({len(p['values'])})" for p in params if len(p["values"]) > 1) or "one point"
    blocks: list[Any] = [answer.sweep_answer(run, [(p, _scenario_of_sweep(run, p)) for p in run["points"]])]
    desc = (scen.get("description") or "").strip()
    if desc:
        blocks += [("h2", "The question")]
        blocks += text_blocks(desc)
    blocks += [("h2", "Answer at a glance"), ("list", _findings(run, xp, groups) or ["no point finished"])]
    if failed:
        blocks.append(("note", f"{len(failed)} point(s) failed to run: " + "; ".join(
            f"{', '.join(f'{k}={_show(v)}' for k, v in p['params'].items())}: {p.get('error')}" for p in failed[:5])))
    if fixed:
        blocks.append(("p", "Fixed for every point: " + ", ".join(f"`{p['name']}={_show(p['values'][0])}`" for p in fixed) + "."))

    if xp is not None and points:
        blocks += sweep_figures.metric_figures(params, xp, categorical, groups, show=_show, x_value=_x_value,
                                               x_label=_x_label(xp), estimate=_estimate)
    with_series = [p for p in points if (p.get("series") or {}).get("t")]
    if with_series:
        label = lambda p: ", ".join(f"{k}={_show(v)}" for k, v in p["params"].items())  # noqa: E731
        blocks += sweep_figures.time_figures(with_series, label, _pick)
        rep = min(with_series, key=lambda p: (p["metrics"].get("first_port_error_at") is None,
                                              p["metrics"].get("first_port_error_at") or 0))
        blocks += _memory(rep["series"], label(rep))

    blocks.append(("h2", "Results"))
    headers = [p["name"] for p in params] + ["first port error", "closed form", "peak TIME_WAIT",
                                             "peak socket memory", "accepted", "refused", "reset",
                                             "succeeded", "attempts"]
    rows = []
    for p in run["points"]:
        cells = [_show(p["params"].get(q["name"])) for q in params]
        if "metrics" not in p:
            rows.append(cells + [f"failed: {p.get('error')}"] + [""] * 8)
            continue
        m = p["metrics"]
        first = _secs(m.get("first_port_error_at"))
        if m.get("first_port_error"):
            first += f" ({m['first_port_error']})"
        rows.append(cells + [first, _secs(_estimate(p, "exhaustion_at")) if p.get("estimate") else "-",
                             _num(m.get("time_wait_peak")), _bytes(m.get("tcp_mem_peak_bytes")),
                             _num(m.get("accepted")), _num(m.get("refused")), _num(m.get("reset")),
                             _pct(m.get("ok_fraction")), _num(m.get("attempts"))])
    blocks.append(("table", headers, rows))
    est = next((p.get("estimate") for p in points if p.get("estimate")), None)
    blocks += [("h2", "How the estimate is computed"),
               ("p", "A client that closes first leaves each connection's local port in TIME_WAIT for "
                     "TCP_TIMEWAIT_LEN (60 s, not a sysctl), or only for `tcp_tw_reuse_delay` when "
                     "connect() may take over an old TIME_WAIT entry (`tcp_tw_reuse` 1, or 2 towards "
                     "loopback, with timestamps). With P free ports of `ip_local_port_range` towards one "
                     "destination, rate r and that hold time H, the ports carry at most P / H connections "
                     "per second: the share of the demand served is P / (r x H), and below 1 the first "
                     "EADDRNOTAVAIL comes after P / r seconds. Entries over `tcp_max_tw_buckets` are not "
                     "kept, so a cap below P means the ports never run out."),
               ]
    if est:
        blocks.append(("p", f"For the first point: P = {est['ports']:,} ports, H = {est['hold_seconds']:g} s "
                            f"({est['basis']})."))
    cmd = run.get("command")
    blocks.append(("h2", "Reproduce"))
    if cmd:
        blocks.append(("code", " ".join(_quote(a) for a in cmd)))
    meta = []
    if scen.get("sha256"):
        meta.append(f"scenario `{scen.get('file')}` sha256 `{scen['sha256'][:16]}...`")
    if run.get("seed") is not None:
        meta.append(f"seed {run['seed']} for every point")
    if run.get("socksim"):
        meta.append(f"socksim {run['socksim']}")
    ex = run.get("executor") or {}
    if ex:
        meta.append("ran on " + (f"the Dask cluster {ex.get('scheduler')}" if ex.get("kind") == "dask"
                                 else f"{ex.get('jobs')} local process(es)")
                    + (f" in {run['timing']['wall_seconds']:.1f} s" if run.get("timing") else ""))
    if meta:
        blocks.append(("p", "; ".join(meta) + ". The same seed gives the same results on any executor."))
    if scen.get("text"):
        blocks.append(("details", "The scenario file", [("code", scen["text"])]))
    return {
        "title": f"What-if: {scen.get('name', 'sweep')}",
        "subtitle": f"A sweep of {grid_text}: {len(run['points'])} point(s) on the simulator",
        "blocks": blocks,
        "footer": f"Generated by `socksim report` from `{source}`.",
    }


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def _state_and_memory(series: dict[str, list], label: str) -> list[Any]:
    return sweep_figures.states_figure([(label, series)], "") + _memory(series, label)


def _memory(series: dict[str, list], label: str) -> list[Any]:
    from . import plots

    cap = f"For {label}." if label else ""
    mem_col = next((c for c in ("tcp_mem_bytes", "mem_bytes") if c in series), None)
    if mem_col:
        return [("figure", plots.Plot("memory_over_time", "Socket memory over time",
                                      f"Bytes in the TCP memory pool (tcp_mem). {cap}".strip(),
                                      plots.memory_over_time(series, mem_col, label=label),
                                      "socket memory over time"))]
    return [("note", "Socket memory is not sampled over time in this run (its load samples "
                     "have no memory column); its peak is in the table.")]


# ----------------------------------------------------------------------------- single runs


def trace_document(trace_d: dict[str, Any], source: str) -> dict[str, Any]:
    from ..sweep import closed_form, point_metrics, trace_series
    from ..trace import Trace
    from . import plots

    trace = Trace.from_dict(trace_d)
    sc = _scenario_of_trace(trace_d)
    series = trace_series(trace, sc, limit=2000)
    m = point_metrics(trace, sc)
    summ = trace.summary or {}
    blocks: list[Any] = []
    if sc is not None and any(s.kind == "load" for s in trace.steps):
        blocks.append(answer.trace_answer({"params": {}, "metrics": m, "estimate": closed_form(sc)}, sc))
    if sc is not None and sc.description.strip():
        blocks += [("h2", "The scenario")] + text_blocks(sc.description)
    loads = [s for s in trace.steps if s.kind == "load" and isinstance(s.obs, dict)]
    if loads:
        blocks.append(("h2", "Load"))
        rows = []
        for s in loads:
            o, a = s.obs, s.args
            errs = ", ".join(f"{k} x{v:,}" for k, v in (o.get("errors") or {}).items()) or "none"
            first = (f"{o['first_error']} at {o['first_error_at']:.3f} s" if o.get("first_error") else "none")
            rows.append([str(s.index), f"{a.get('rate', '?'):g}/s" if isinstance(a.get('rate'), (int, float)) else "?",
                         f"{a.get('duration', 0):g} s", _num(o.get("attempts")), _num(o.get("ok")),
                         _num(o.get("accepted")), errs, first])
        blocks.append(("table", ["step", "rate", "duration", "attempts", "succeeded", "accepted",
                                 "errors", "first error"], rows))
        est = closed_form(sc) if sc is not None else None
        if est:
            at = m.get("first_port_error_at")
            blocks.append(("p", f"Closed form: {est['ports']:,} free ports at {est['rate']:g} connections/s, "
                                f"each held {est['hold_seconds']:g} s ({est['basis']}): the ports carry "
                                + (f"{est['sustainable_rate']:,.0f} connections/s" if est['sustainable_rate'] else "any rate")
                                + f", {100 * est['sustainable_fraction']:.2g} % of the demand; first port error "
                                + (f"expected after {est['exhaustion_at']:.3g} s" if est["exhaustion_at"] is not None else "not expected within the run")
                                + (f", simulated {at:.3g} s." if at is not None else ", simulated: none.")))
    if series.get("t"):
        blocks.append(("h2", "Over time"))
        lo_hi = sc.host.sysctls.ip_local_port_range if sc is not None else None
        size = (lo_hi[1] - lo_hi[0] + 1) if lo_hi else None
        max_tw = sc.host.sysctls.tcp_max_tw_buckets if sc is not None else None
        png = plots.ports_over_time(series, range_size=size, max_tw=max_tw,
                                    first_error_at=m.get("first_port_error_at") if m.get("first_port_error_at") is not None else m.get("first_error_at"),
                                    first_error=m.get("first_port_error") or m.get("first_error"))
        cap = ("Top: entries in the TIME_WAIT table. Bottom: ports of ip_local_port_range with no owner"
               + ("" if sc is not None else " (range assumed 32768-60999: the scenario file was not found)")
               + ". Time counts from the start of the first load step.")
        blocks.append(("figure", plots.Plot("ports_over_time", "TIME_WAIT entries and free ephemeral ports",
                                            cap, png, "TIME_WAIT entries and free ephemeral ports over time")))
        blocks += _state_and_memory(series, "")
    elif not loads:
        blocks.append(("note", "This run has no load step, so there are no time series to plot; the "
                               "timeline and the kernel's tables follow."))
    blocks.append(("h2", "End of the run"))
    rows = [["simulated time", _secs(summ.get("time"))],
            ["segments on the wire", _num(summ.get("segments"))],
            ["TIME_WAIT entries (peak)", f"{_num(summ.get('time_wait'))} ({_num(summ.get('time_wait_peak'))})"],
            ["TIME_WAIT overflows / recycled", f"{_num(summ.get('tw_overflows'))} / {_num(summ.get('tw_recycled'))}"],
            ["ports in use", _num(summ.get("ports_in_use"))],
            ["TCP memory (peak)", f"{_bytes(summ.get('tcp_mem_bytes'))} ({_bytes(summ.get('tcp_mem_peak_bytes'))})"]]
    ss = summ.get("sockstat") or {}
    if ss:
        rows.append(["sockstat", ", ".join(f"{k} {v:,}" for k, v in ss.items())])
    for k, v in sorted((summ.get("mib") or {}).items()):
        rows.append([f"MIB {k}", _num(v)])
    blocks.append(("table", ["", "value"], rows))
    blocks.append(("h2", "Timeline"))
    trows = []
    from .terminal import _args_text, outcome_text

    for s in trace.steps[:MAX_TIMELINE_ROWS]:
        trows.append([str(s.index), f"{s.time:.6f}".rstrip("0").rstrip("."), s.proc or "",
                      _args_text(s), outcome_text(s).plain, s.rule or ""])
    blocks.append(("table", ["#", "time (s)", "process", "call", "result", "rule"], trows))
    if len(trace.steps) > MAX_TIMELINE_ROWS:
        blocks.append(("p", f"... {len(trace.steps) - MAX_TIMELINE_ROWS} more step(s) in the trace."))
    blocks.append(("h2", "Reproduce"))
    src = (trace.meta or {}).get("source") or "SCENARIO.yaml"
    seed = f" --seed {trace.seed}" if trace.seed is not None else ""
    blocks.append(("code", f"socksim run {_quote(str(src))}{seed} --json RUN.json && "
                           f"socksim report RUN.json -o reports/{trace.scenario}/"))
    return {
        "title": f"{trace.scenario}",
        "subtitle": f"One run on the {'simulator' if trace.backend == 'sim' else trace.backend}, seed {trace.seed}, "
                    f"{len(trace.steps)} step(s), {_secs(summ.get('time'))} simulated",
        "blocks": blocks,
        "footer": f"Generated by `socksim report` from `{source}`.",
    }


# ----------------------------------------------------------------------------- writing


def existing_report(out: Path) -> list[str]:
    return [n for n in OWNED if (out / n).exists()]


def write_report(doc: dict[str, Any], out: Path, force: bool) -> None:
    """index.html, report.md and img/ built in a temporary folder inside ``out`` and renamed in
    (see :func:`sim.outfile.fill_folder`); other files in ``out`` are left alone."""
    from ..outfile import OutputError, fill_folder

    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a directory; give a folder for the report")
    there = existing_report(out) if out.exists() else []
    if there and not force:
        raise ReportError(f"{out}/ already holds a report ({', '.join(there)}); pass --force to replace it")
    page = html_out.render(doc)
    text, files = md_out.render(doc)

    def fill(tmp: Path) -> None:
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "report.md").write_text(text, encoding="utf-8")
        (tmp / md_out.IMG_DIR).mkdir()
        for rel, data in files.items():
            (tmp / rel).write_bytes(data)

    try:
        fill_folder(out, OWNED, fill, force)
    except OutputError as e:
        raise ReportError(str(e)) from None


def cmd_report(args: argparse.Namespace) -> int:
    try:
        kind, data = load_run(args.run)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ReportError(f"{args.out}: exists and is not a directory; give a folder for the report")
        if out.exists() and existing_report(out) and not args.force:
            raise ReportError(f"{args.out.rstrip('/')}/ already holds a report "
                              f"({', '.join(existing_report(out))}); pass --force to replace it")
        from ..outfile import OutputError, check_folder

        try:
            check_folder(out, "the report")
        except OutputError as e:
            raise ReportError(str(e)) from None
        try:
            doc = sweep_document(data, args.run) if kind == "sweep" else trace_document(data, args.run)
        except (KeyError, TypeError, ValueError) as e:
            raise ReportError(f"{args.run}: the run file is incomplete or from another version ({type(e).__name__}: {e})") from None
        if args.title:
            doc["title"] = args.title
        write_report(doc, out, args.force)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print(f"{out / 'index.html'}\n{out / 'report.md'}")
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write an HTML and a Markdown report with plots from a run or sweep",
        description="Write a self-contained HTML page (index.html) and a Markdown report (report.md, "
                    "figures in img/) from a sweep run file (socksim sweep -o) or a trace (socksim run "
                    "--json): metrics against the swept parameter beside the closed-form estimate, "
                    "TIME_WAIT entries and free ephemeral ports over time, connections per TCP state, "
                    "socket memory. An existing report is replaced only with --force.")
    p.add_argument("run", metavar="RUN.json", help="run file: socksim sweep -o, sweep --jsonl, run --json or crosscheck --json")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="report folder, e.g. reports/ports/ (created if missing)")
    p.add_argument("--force", action="store_true", help="replace the report already in DIR")
    p.add_argument("--title", help="the report's title (default: from the scenario)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the written paths")
    p.set_defaults(func=cmd_report)
