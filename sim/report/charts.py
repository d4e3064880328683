"""Honest figures for reports: what each figure promises is drawn, where the data are.

- A metric against a swept parameter: simulated values as filled circles at the values that ran,
  the closed-form estimate as hollow diamonds in a darker shade (drawn on top, so an estimate that
  equals the simulated value is still seen around it). A numeric parameter joins its points with
  lines (solid simulated, dashed estimate); a categorical one (a switch such as ``tcp_tw_reuse``, a
  personality) is drawn as categories with no line through values that never ran.
- A point with no value (no port error within the run) is an upward triangle at the run's length:
  the value is at least that.
- Connections per TCP state over time: every state seen in any compared run, in the same colour
  and order in every panel, so panels compare the same series.

Every figure also returns its *curves*: for each series it promises, the pixel positions (in the
PNG) of a few of its data points, with the colour drawn there. The HTML page carries them so a
browser can check that each promised curve is really visible in the image.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from matplotlib.ticker import FuncFormatter, MaxNLocator

from .plots import COLORS, STATE_LABELS, STATE_ORDER, _count_fmt, _fig, _png, _style, human_bytes, pairs

SIM_MARKER = dict(marker="o", markersize=6)
EST_MARKER = dict(marker="D", markersize=11, markerfacecolor="none", markeredgewidth=1.8)
EST2_MARKER = dict(marker="s", markersize=14, markerfacecolor="none", markeredgewidth=1.4)
NONE_MARKER = dict(marker="^", markersize=9, markerfacecolor="none", markeredgewidth=1.8)


def shade(color: str, f: float = 0.5) -> str:
    """``color`` mixed with black: the estimate's colour for a series (distinct, yet paired)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#%02x%02x%02x" % (int(r * f), int(g * f), int(b * f))


def _pixels(fig: Any, ax: Any, xs: Sequence[float], ys: Sequence[float]) -> list[list[int]]:
    """Data coordinates -> pixel positions in the saved PNG (origin top-left)."""
    height = fig.bbox.height
    out = []
    for x, y in zip(xs, ys):
        dx, dy = ax.transData.transform((x, y))
        if math.isfinite(dx) and math.isfinite(dy):
            out.append([int(round(dx)), int(round(height - dy))])
    return out


def _curve(label: str, color: str, kind: str, spots: list[tuple[Any, float, float]],
           edge: float = 0.0) -> dict[str, Any]:
    """A promised series; ``edge`` (points): a hollow marker's half width, so the pixel checked is
    on its outline (left of the data point), where its colour is, not in its empty middle."""
    return {"label": label, "color": color, "kind": kind, "spots": spots, "edge": edge}


def _finish(fig: Any, curves: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    png = _png(fig)  # lays the figure out; the transforms are final after this
    out = []
    for c in curves:
        pts = []
        shift = int(round(c.get("edge", 0.0) * fig.dpi / 72))
        for ax, x, y in c["spots"]:
            pts += [[px - shift, py] for px, py in _pixels(fig, ax, [x], [y])]
        out.append({"label": c["label"], "color": c["color"], "kind": c["kind"], "pixels": pts})
    return png, out


# ----------------------------------------------------------------------------- metric vs parameter


def metric_chart(x_label: str, xs: list[Any], series: list[dict[str, Any]], *, ylabel: str,
                 categorical: bool, log_x: bool = False, y_bytes: bool = False,
                 none_label: str | None = None, estimate_label: str = "closed form",
                 est2_label: str = "long run: free ports / (rate x TIME_WAIT length)",
                 y_integer: bool = False, max_lines: int = 10) -> tuple[bytes, list[dict[str, Any]]]:
    """A metric against the swept parameter.

    ``series``: dicts with ``label``, ``ys`` (None where there is no value), optionally ``est``
    and ``est2`` (closed forms) and ``none_at`` (where a None value is drawn: the run's length).
    """
    fig, ax = _fig()
    n = min(len(series), max_lines)
    if categorical:
        width = 0.5 if n > 1 else 0.0
        offs = [(-width / 2 + width * i / (n - 1)) if n > 1 else 0.0 for i in range(n)]
    else:
        offs = [0.0] * n
    curves: list[dict[str, Any]] = []
    single = n == 1 and series and series[0]["label"] == "simulated"
    for i, s in enumerate(series[:n]):
        c = COLORS[i % len(COLORS)]
        pos = [j + offs[i] for j in range(len(xs))] if categorical else [float(x) for x in xs]
        name = "" if single else f"{s['label']}: "
        px, py = pairs(pos, s["ys"])
        if px:
            # equal values of several series stay visible: each later series' marker is larger
            # and drawn below the earlier ones
            ax.plot(px, py, color=c, linewidth=0 if categorical else 1.8, linestyle="none" if categorical else "-",
                    label=f"{name}simulated", zorder=3 - 0.01 * i,
                    **{**SIM_MARKER, "markersize": SIM_MARKER["markersize"] + 3 * i})
            curves.append(_curve(f"{name}simulated", c, "simulated", [(ax, x, y) for x, y in zip(px, py)]))
        for key, style, mk, lab, kind in (("est", "--", EST_MARKER, estimate_label, "estimate"),
                                          ("est2", ":", EST2_MARKER, est2_label, "estimate")):
            vals = s.get(key)
            if not vals:
                continue
            ex, ey = pairs(pos, vals)
            if not ex:
                continue
            ec = shade(c, 0.55 if key == "est" else 0.35)
            ax.plot(ex, ey, color=ec, linestyle="none" if categorical else style, linewidth=1.5,
                    label=f"{name}{lab}", zorder=4, **{**mk, "markersize": mk["markersize"] + 4 * i})
            size = mk["markersize"] + 4 * i
            curves.append(_curve(f"{name}{lab}", ec, kind, [(ax, x, y) for x, y in zip(ex, ey)],
                                 edge=size / 2 if mk["marker"] == "s" else 0.0))
        if none_label is not None:
            spots = [(p, at) for p, v, at in zip(pos, s["ys"], s.get("none_at") or [None] * len(pos))
                     if v is None and at is not None]
            if spots:
                ax.plot([p for p, _ in spots], [a for _, a in spots], color=c, linestyle="none",
                        label=f"{name}{none_label}", zorder=3, clip_on=False,
                        **{**NONE_MARKER, "markersize": NONE_MARKER["markersize"] + 5 * i})
                curves.append(_curve(f"{name}{none_label}", c, "bound", [(ax, p, a) for p, a in spots]))
    _style(ax)
    ax.set_xlabel(x_label)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.12)
    if categorical:
        ax.set_xticks(list(range(len(xs))), [str(x) for x in xs])
        ax.set_xlim(-0.6, len(xs) - 0.4)
    elif log_x:
        ax.set_xscale("log")
    else:
        ints = all(float(x).is_integer() for x in xs)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=ints))
    ax.yaxis.set_major_formatter(FuncFormatter(human_bytes if y_bytes else _count_fmt))
    if y_integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize=7.5, frameon=False, ncols=2 if n > 2 else 1)
    return _finish(fig, curves)


# ----------------------------------------------------------------------------- over time


def _spots(columns: list[Sequence[Any]], base: float = 1.5, step: float = 1.8,
           prefer: str = "max", close: float = 0.0) -> list[tuple[float, int | None]]:
    """For lines drawn in order, each line's width and the sample where it is checked.

    A line is checked where no later line (drawn on top of it) has the same value, at its largest
    (or smallest) such value; a line that every later line covers wherever it is drawn gets wider
    by ``step`` per line on top of it, so its colour still shows around them. With ``close``, values
    within that fraction of each other count as the same (on a log axis they are a pixel apart)."""
    out: list[tuple[float, int | None]] = []
    for i, ys in enumerate(columns):
        idx = [j for j, v in enumerate(ys) if v is not None]
        if not idx:
            out.append((base, None))
            continue
        later = columns[i + 1:]

        def same(a: Any, b: Any) -> bool:
            if a is None or b is None or not close or isinstance(a, tuple):
                return a == b
            return abs(a - b) <= close * max(abs(a), abs(b))

        def clear(j: int) -> bool:  # no later line on it here (with close: nor at either neighbour,
            # so the sample is not on a steep stretch that other lines cross)
            near = (j - 1, j, j + 1) if close else (j,)
            return all(k < 0 or k >= len(ys) or k >= len(o) or not same(o[k], ys[k])
                       for o in later for k in near)

        free = [j for j in idx if clear(j)]
        pick = max if prefer == "max" else min

        def val(j: int) -> Any:
            return ys[j][-1] if isinstance(ys[j], tuple) else ys[j]

        if free:
            out.append((base, pick(free, key=val)))
        else:
            # covered everywhere: checked at its largest value, or (with close) in the middle of
            # the run, on a plateau rather than on a steep stretch other lines cross
            j = idx[len(idx) // 2] if close else pick(idx, key=val)
            out.append((base + step * sum(1 for o in later if j < len(o) and same(o[j], ys[j])), j))
    return out


def states_present(panels: list[tuple[str, dict[str, list]]]) -> list[str]:
    """The TCP states with a connection at some sample of some panel, in the kernel's order."""
    return [st for st in STATE_ORDER
            if any(any(v for v in (s.get(st) or []) if v is not None) for _, s in panels)]


def states_panels(panels: list[tuple[str, dict[str, list]]]) -> tuple[bytes, list[dict[str, Any]], list[str]]:
    """Connections per TCP state over time, one panel per run; every panel draws the same states."""
    shown = states_present(panels)
    fig, axes = _fig(8.0, 2.0 + 2.4 * len(panels), rows=len(panels))
    axes = list(axes) if len(panels) > 1 else [axes]
    top = max([v for _, s in panels for st in shown for v in (s.get(st) or []) if v is not None] or [1])
    curves: list[dict[str, Any]] = []
    for ax, (label, s) in zip(axes, panels):
        t = s.get("t", [])
        cols = [[v if tt is not None else None for tt, v in zip(t, s.get(st) or [])] for st in shown]
        # a symlog axis: counts within 15 % of each other (40 and 44) are a few pixels apart
        for st, ys, (w, j) in zip(shown, cols, _spots(cols, close=0.15)):
            c = COLORS[STATE_ORDER.index(st) % len(COLORS)]
            x, y = pairs(t, ys)
            ax.plot(x, y, color=c, linewidth=w, label=STATE_LABELS[st],
                    marker="o" if len(x) < 30 else None, markersize=3 + w)
            if j is not None:
                curves.append(_curve(f"{label}: {STATE_LABELS[st]}", c, "simulated", [(ax, t[j], ys[j])]))
        _style(ax)
        ax.set_ylabel("connections")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=-0.25, top=top * 1.6)  # a line at zero is drawn whole, above the axis
        ax.yaxis.set_major_formatter(FuncFormatter(_count_fmt))
        if label:
            ax.set_title(label, fontsize=10)
        ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=min(5, max(1, len(shown))))
    axes[-1].set_xlabel("time since the load started (s)")
    png, out = _finish(fig, curves)
    return png, out, shown


def overlay_chart(lines: list[tuple[str, dict[str, list]]], column: str, ylabel: str,
                  pick: str = "max") -> tuple[bytes, list[dict[str, Any]]]:
    """One column of several runs' time series on one axis, the same runs and colours in every
    figure that compares them."""
    fig, ax = _fig()
    curves = []
    cols = [list(zip(s.get("t", []), s.get(column, []))) for _, s in lines]
    cols = [[p if p[0] is not None and p[1] is not None else None for p in col] for col in cols]
    spots = _spots(cols, base=1.4, prefer=pick)  # compares (t, value) pairs
    for i, ((label, s), (w, j)) in enumerate(zip(lines, spots)):
        c = COLORS[i % len(COLORS)]
        x, y = pairs(s.get("t", []), s.get(column, []))
        ax.plot(x, y, color=c, linewidth=w, label=label)
        if j is not None:
            curves.append(_curve(label, c, "simulated", [(ax, cols[i][j][0], cols[i][j][1])]))
    _style(ax)
    ax.set_xlabel("time since the load started (s)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.08)
    ax.yaxis.set_major_formatter(FuncFormatter(_count_fmt))
    ax.legend(loc="best", fontsize=7, frameon=False, ncols=2 if len(lines) > 5 else 1)
    return _finish(fig, curves)


def categorical_param(p: dict[str, Any]) -> bool:
    """A swept parameter whose values are categories, not quantities: a switch of the scenario
    format (a ``Literal`` field such as ``tcp_tw_reuse`` or ``personality``), a flag, or text."""
    import typing

    from ..scenario.model import Host, LoadSpec, Sysctls

    if any(isinstance(v, (bool, str)) for v in p["values"]):
        return True
    field = p.get("field") or p["name"].split(".")[-1]
    for model in (Sysctls, LoadSpec, Host):
        f = model.model_fields.get(field)
        if f is not None:
            ann = f.annotation
            if typing.get_origin(ann) is typing.Literal or ann is bool:
                return True
            return False
    return False
