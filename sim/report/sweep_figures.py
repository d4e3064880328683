"""The figures of a sweep report: each metric against the swept parameter, and the points over time.

Built on :mod:`sim.report.charts`: a categorical parameter as categories, the closed forms the
captions promise drawn distinct from the simulated values, a missing value drawn where it is known
to lie (no port error within the run: at least the run's length), and the figures that compare
points over time showing the same points in the same colours.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from . import charts, plots

METRICS = (
    # key, title, y label, estimate key, bytes?, label of a None value, what the estimate is
    ("first_port_error_at", "Time to the first EADDRNOTAVAIL or EADDRINUSE",
     "seconds since the load started", "exhaustion_at", False, "no port error within the run",
     "closed form: free ports / rate"),
    ("ok_fraction", "Share of connection attempts that succeeded", "succeeded / attempted",
     "ok_fraction", False, None, "closed form over the run's duration: whole TIME_WAIT cycles of the free ports"),
    ("time_wait_peak", "Peak TIME_WAIT entries", "TIME_WAIT entries", "peak_time_wait", False, None,
     "closed form: min(rate x TIME_WAIT length, free ports, tcp_max_tw_buckets)"),
    ("tcp_mem_peak_bytes", "Peak socket memory", "TCP socket memory (tcp_mem pool)", None, True, None, ""),
    ("accepted", "Connections accepted", "connections accepted", "ok", False, None,
     "closed form: full TIME_WAIT cycles x free ports"),
    ("refused", "Connections refused (ECONNREFUSED)", "connections refused", None, False, None, ""),
    ("reset", "Connections reset (ECONNRESET)", "connections reset", None, False, None, ""),
)
MAX_STATE_PANELS = 4


def _k(v: Any) -> str:
    return json.dumps(v, default=list)


def _load_duration(pt: dict[str, Any] | None) -> float | None:
    m = (pt or {}).get("metrics") or {}
    e = (pt or {}).get("estimate") or {}
    if e.get("rate") and e.get("attempts"):
        return e["attempts"] / e["rate"]
    return m.get("sim_seconds")


def metric_figures(params: list[dict[str, Any]], xp: dict[str, Any], categorical: bool,
                   groups: list[tuple[str, list[dict[str, Any]]]], *, show: Callable[[Any], str],
                   x_value: Callable[[Any], Any], x_label: str,
                   estimate: Callable[[Any, str], Any]) -> list[Any]:
    blocks: list[Any] = [("h2", f"Metrics against {xp['name']}")]
    xs_raw = xp["values"]
    xs = [str(show(v)) for v in xs_raw] if categorical else [x_value(v) for v in xs_raw]
    log_x = (not categorical and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 50)
    others = [q["name"] for q in params if len(q["values"]) > 1 and q["name"] != xp["name"]]
    for key, title, ylabel, est_key, is_bytes, none_label, est_text in METRICS:
        series = []
        for label, pts in groups:
            by_x = {_k(p["params"][xp["name"]]): p for p in pts}
            row = [by_x.get(_k(v)) for v in xs_raw]
            entry = {"label": label,
                     "ys": [(p or {}).get("metrics", {}).get(key) if p and "metrics" in p else None for p in row],
                     "est": [estimate(p, est_key) if p and est_key else None for p in row] if est_key else None,
                     "none_at": [_load_duration(p) for p in row]}
            if key == "ok_fraction":  # and the long-run share the question asks about
                entry["est2"] = [estimate(p, "sustainable_fraction") if p else None for p in row]
            series.append(entry)
        est_label = est_text.split(":")[0] if est_text else "closed form"
        png, curves = charts.metric_chart(
            x_label, xs, series, ylabel=ylabel, categorical=categorical, log_x=log_x, y_bytes=is_bytes,
            none_label=none_label and f"{none_label} (at least its length)", estimate_label=est_label,
            y_integer=key not in ("first_port_error_at", "ok_fraction"), max_lines=plots.MAX_LINES)
        blocks.append(("figure", plots.Plot(key, title, _caption(key, series, curves, categorical, others,
                                                                  est_text, none_label, xp["name"]),
                                            png, f"{title} against {xp['name']}", curves)))
    return blocks


def _caption(key: str, series: list[dict[str, Any]], curves: list[dict[str, Any]], categorical: bool,
             others: list[str], est_text: str, none_label: str | None, xname: str) -> str:
    kinds = {c["kind"] for c in curves}
    cap = ("Filled circles: simulated, at the values that ran"
           + (f" ({xname} is a switch: its values are categories, side by side per series)" if categorical else "")
           + (f"; one colour per {', '.join(others)} value" if others else "") + ".")
    if "estimate" in kinds:
        cap += f" Hollow diamonds, darker" + ("" if categorical else ", dashed") + f": {est_text}."
        if any(c["kind"] == "estimate" and "long run" in c["label"] for c in curves):
            cap += (" Hollow squares" + ("" if categorical else ", dotted") + ": the long-run share, free "
                    "ports / (rate x TIME_WAIT length) (the hold time is tcp_tw_reuse_delay where "
                    "TIME_WAIT entries are reused); runs much longer than TIME_WAIT converge to it.")
    if "bound" in kinds and none_label:
        cap += f" Hollow triangles at the run's length: {none_label} (the value is at least that)."
    allv = [v for s in series for v in s["ys"] if v is not None]
    if allv and all(v == 0 for v in allv):
        cap += " Zero at every point."
    if key == "tcp_mem_peak_bytes":
        cap += " Bytes charged to the TCP memory pool (tcp_mem): socket buffers holding data."
    return cap


def time_figures(with_series: list[dict[str, Any]], label: Callable[[dict[str, Any]], str],
                 pick: Callable[[list, int], list]) -> list[Any]:
    """TIME_WAIT entries and free ports over time for the same points, then connections per TCP
    state for a few of them (the most and the least stressed), each panel with the same states."""
    blocks: list[Any] = [("h2", "Over time")]
    shown = pick(with_series, plots.MAX_LINES)
    lines = [(label(p), p["series"]) for p in shown]
    more = (f" ({len(shown)} of the {len(with_series)} points, evenly spread over the grid)"
            if len(shown) < len(with_series) else "")
    png, curves = charts.overlay_chart(lines, "time_wait", "TIME_WAIT entries")
    blocks.append(("figure", plots.Plot(
        "time_wait_over_time", "TIME_WAIT entries over time",
        "Entries in the TIME_WAIT table during the load, one line per point" + more + ".",
        png, "TIME_WAIT entries over time", curves)))
    if all("free_ports" in p["series"] for p in shown):
        png, curves = charts.overlay_chart(lines, "free_ports", "free ephemeral ports", pick="min")
        blocks.append(("figure", plots.Plot(
            "free_ports_over_time", "Free ephemeral ports over time",
            "Ports of ip_local_port_range with no owner (no socket, no TIME_WAIT entry) during the load, "
            "the same points in the same colours as above" + more + ".",
            png, "free ephemeral ports over time", curves)))
    def stress(p: dict[str, Any]) -> tuple:
        at = p["metrics"].get("first_port_error_at")
        return (at is None, at or 0, -(p["metrics"].get("time_wait_peak") or 0))

    ranked = sorted(with_series, key=stress)
    panels = ranked[:1] + ([ranked[-1]] if len(ranked) > 1 else [])
    panels = [p for p in shown if p in panels] or panels
    blocks += states_figure([(label(p), p["series"]) for p in panels][:MAX_STATE_PANELS],
                            "the most and the least stressed points" if len(panels) > 1 else "")
    return blocks


def states_figure(panels: list[tuple[str, dict[str, list]]], which: str) -> list[Any]:
    from .plots import STATE_LABELS, STATE_ORDER

    png, curves, shown = charts.states_panels(panels)
    absent = [STATE_LABELS[s] for s in STATE_ORDER if s not in shown]
    sampled = any(any(c in s for c in STATE_ORDER if c != "time_wait") for _, s in panels)
    cap = ("Every TCP state that held a connection at some sample, the same states in the same colours "
           "in every panel" + (f" ({which})" if which else "") + "; a symmetric-log scale shows small "
           "counts beside large ones.")
    if absent and sampled:
        cap += " No connection was in " + ", ".join(absent) + " at any sample."
    elif not sampled:
        cap += " This run's samples count TIME_WAIT only."
    return [("figure", plots.Plot("states_over_time", "Connections per TCP state over time", cap, png,
                                  "connections per TCP state over time", curves))]
