"""matplotlib figures for reports, rendered to PNG bytes.

Only the object-oriented API (``matplotlib.figure.Figure`` on the Agg canvas) is used: no pyplot
state, no display needed. PNGs carry no timestamp or software tag, so the same data gives the same
bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
STATE_ORDER = ("syn_sent", "syn_recv", "established", "fin_wait1", "fin_wait2", "close_wait",
               "closing", "last_ack", "time_wait")
STATE_LABELS = {s: s.upper() for s in STATE_ORDER}
MAX_LINES = 10


@dataclass
class Plot:
    name: str  # file stem, e.g. "time_wait"
    title: str
    caption: str
    png: bytes
    alt: str
    # what the figure promises: per series, its colour and the pixels of some of its data points
    # (see sim.report.charts); the HTML page carries them for a browser to check
    curves: list = field(default_factory=list)


def _fig(width: float = 8.0, height: float = 4.2, rows: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True) if rows > 1 else fig.add_subplot(1, 1, 1)
    return fig, axes


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _style(ax: Any) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _count_fmt(v: float, _pos: Any = None) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def human_bytes(v: float, _pos: Any = None) -> str:
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(v) >= f:
            return f"{v / f:g} {unit}"
    return f"{v:g} B"


def _nonempty(xs: Sequence[Any]) -> bool:
    return any(x is not None for x in xs)


def pairs(xs: Sequence[Any], ys: Sequence[Any]) -> tuple[list[float], list[float]]:
    """The points where both x and y have a finite value, as floats (gaps stay gaps)."""
    px, py = [], []
    for x, y in zip(xs, ys):
        if x is not None and y is not None and math.isfinite(float(y)):
            px.append(float(x))
            py.append(float(y))
    return px, py


# ----------------------------------------------------------------------------- time series


def ports_over_time(series: dict[str, list], *, range_size: int | None, max_tw: int | None,
                    first_error_at: float | None, first_error: str | None, label: str = "") -> bytes:
    """Two panels sharing time: TIME_WAIT entries (top), free ephemeral ports (bottom)."""
    fig, (a1, a2) = _fig(8.0, 5.6, rows=2)
    t = series.get("t", [])
    x, y = pairs(t, series.get("time_wait", []))
    a1.plot(x, y, color=COLORS[1], linewidth=1.6, label="TIME_WAIT entries")
    if max_tw is not None and y and max_tw <= 4 * max(y + [1]):
        a1.axhline(max_tw, color="#555555", linestyle=":", linewidth=1.2,
                   label=f"tcp_max_tw_buckets = {max_tw:,}")
    a1.set_ylabel("TIME_WAIT entries")
    x2, y2 = pairs(t, series.get("free_ports", []))
    a2.plot(x2, y2, color=COLORS[0], linewidth=1.6, label="free ephemeral ports")
    if range_size:
        a2.axhline(range_size, color="#555555", linestyle=":", linewidth=1.2,
                   label=f"ip_local_port_range: {range_size:,} ports")
    a2.set_ylabel("free ephemeral ports")
    a2.set_xlabel("time since the load started (s)")
    a2.set_ylim(bottom=0)
    for ax in (a1, a2):
        _style(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(_count_fmt))
        if first_error_at is not None:
            ax.axvline(first_error_at, color=COLORS[3], linewidth=1.2, linestyle="--",
                       label=f"first {first_error or 'error'} at {first_error_at:.3g} s" if ax is a2 else None)
        ax.legend(loc="best", fontsize=8, frameon=False)
    a1.set_ylim(bottom=0)
    if label:
        fig.suptitle(label, fontsize=10)
    return _png(fig)


def memory_over_time(series: dict[str, list], column: str, label: str = "") -> bytes:
    fig, ax = _fig(8.0, 3.6)
    x, y = pairs(series.get("t", []), series.get(column, []))
    ax.plot(x, y, color=COLORS[4], linewidth=1.6, label="TCP socket memory (tcp_mem pool)")
    _style(ax)
    ax.set_xlabel("time since the load started (s)")
    ax.set_ylabel("bytes")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(human_bytes))
    ax.legend(loc="best", fontsize=8, frameon=False)
    if label:
        ax.set_title(label, fontsize=10)
    return _png(fig)
