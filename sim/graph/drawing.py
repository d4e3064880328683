"""Drawings: what a view draws (nodes, edges, labels), independent of the renderer; the object graph's drawing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx

from .objects import addr_text


STATE_FILL = {
    "LISTEN": "#d8f0d8", "ESTABLISHED": "#d6e6ff", "SYN_SENT": "#fff0c2", "SYN_RECV": "#fff0c2",
    "FIN_WAIT1": "#ffe2c8", "FIN_WAIT2": "#ffe2c8", "CLOSING": "#ffe2c8", "CLOSE_WAIT": "#f3e0ff",
    "LAST_ACK": "#f3e0ff", "TIME_WAIT": "#ffd3d3", "CLOSE": "#ececec",
}


@dataclass
class DNode:
    id: str
    lines: list[str]
    fill: str = "#ffffff"
    color: str = "#444444"
    shape: str = "box"  # box | ellipse | note | plain
    style: str = ""  # "dashed"
    penwidth: float = 1.0
    rank: int = 0
    cluster: str | None = None
    tooltip: str = ""
    cls: str = ""


@dataclass
class DEdge:
    src: str
    dst: str
    label: str = ""
    color: str = "#666666"
    style: str = ""
    penwidth: float = 1.0
    id: str = ""
    cls: str = ""


@dataclass
class Drawing:
    name: str
    nodes: list[DNode] = field(default_factory=list)
    edges: list[DEdge] = field(default_factory=list)
    clusters: dict[str, str] = field(default_factory=dict)  # id -> label
    rankdir: str = "LR"
    title: str = ""
    ranked: bool = False  # DOT: keep nodes of one rank in one column (invisible anchors)

    def node(self, nid: str) -> DNode | None:
        for n in self.nodes:
            if n.id == nid:
                return n
        return None


RANK = {"process": 0, "std": 1, "fd": 1, "file": 2, "tcb": 3, "timewait": 3, "more": 3, "buffer": 4,
        "acceptq": 4, "port": 5, "pool": 5}


def _flags(d: dict[str, Any]) -> str:
    f = [n for n, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
    return ", ".join(f) if f else "no SO_REUSEADDR"


def node_lines(n: str, d: dict[str, Any], now: float = 0.0) -> list[str]:
    """The text a learner reads on a node (also used by the HTML tables)."""
    k = d.get("kind")
    if k == "process":
        head = f"process {d['name']}"
        return [head, f"pid {d['pid']}" + (", exited" if not d["alive"] else f", RLIMIT_NOFILE {d['nofile']}")]
    if k == "std":
        fds = d["fds"]
        span = f"fd {fds[0]}-{fds[-1]}" if len(fds) > 1 else f"fd {fds[0]}"
        return [span, "stdin/stdout/stderr"]
    if k == "fd":
        return [f"fd {d['fd']}" + (f" ({d['name']})" if d.get("name") else "")]
    if k == "file":
        refs = d.get("refs", 1)
        lines = ["open file", f"{refs} reference{'s' if refs != 1 else ''}"]
        if d.get("nonblock"):
            lines.append("O_NONBLOCK")
        return lines
    if k == "tcb":
        proto = d["proto"].upper()
        head = f"{proto} {d['state']}" if d["proto"] == "tcp" else f"{proto} socket"
        if d.get("request"):
            head = "request " + d["state"]
        lines = [head]
        if d["raddr"]:
            lines.append(f"{addr_text(d['laddr'], d['lport'])} ↔ {addr_text(d['raddr'], d['rport'])}")
        elif d["lport"]:
            lines.append(f"bound {addr_text(d['laddr'], d['lport'])}")
        else:
            lines.append("not bound")
        if d["state"] == "LISTEN":
            lines.append(f"backlog {d['backlog']}")
        lines.append(_flags(d))
        if d.get("orphan"):
            lines.append("orphan: no fd refers to it")
        if d.get("err"):
            lines.append(f"pending error {d['err']}")
        return lines
    if k == "buffer":
        return [f"{d['dir']} buffer", f"{d['bytes']} B queued", f"SO_{'SND' if d['dir'] == 'send' else 'RCV'}BUF {d['size']}"]
    if k == "acceptq":
        return ["accept queue", f"{d['queued']} queued, full above {d['backlog']}"]
    if k == "port":
        return [f"{d['proto'].upper()} port {d['port']}", f"{d['owners']} owner{'s' if d['owners'] != 1 else ''}"]
    if k == "timewait":
        lines = [f"{d['state']} entry", f"{addr_text(d['laddr'], d['lport'])} → {addr_text(d['raddr'], d['rport'])}",
                 f"expires t={d['expires']:.1f} s", _flags(d)]
        if d.get("origin"):
            lines.append(f"left by {d['origin']}")
        return lines
    if k == "pool":
        lines = [f"{d.get('name', 'TCP memory')} (never paged out)",
                 f"{d['bytes']} B = {d['pages']} page{'s' if d['pages'] != 1 else ''}"]
        if d.get("pressure"):
            lines.append("MEMORY PRESSURE")
        return lines
    if k == "more":
        return [f"... {d['count']} more {d['what']}"]
    return [n]


def object_drawing(g: nx.DiGraph, changed: Iterable[str] = (), title: str = "") -> Drawing:
    """The drawing of an object graph; nodes in ``changed`` get a thick red border."""
    changed = set(changed)
    dr = Drawing("kernel", rankdir="LR", title=title, ranked=True)
    for n, d in g.nodes(data=True):
        k = d.get("kind")
        fill, color, style, shape = "#ffffff", "#555555", "", "box"
        if k == "process":
            fill = "#cfe3f7" if d["alive"] else "#e6e6e6"
            style = "" if d["alive"] else "dashed"
            dr.clusters[d["cluster"]] = f"process {d['name']}" + ("" if d["alive"] else " (exited)")
        elif k in ("fd", "std"):
            fill = "#eef5fc" if k == "fd" else "#f6f6f6"
        elif k == "file":
            fill = "#fdf6e3"
        elif k == "tcb":
            fill = STATE_FILL.get(d["state"], "#eeeeee")
            if d.get("orphan"):
                style = "dashed"
        elif k == "buffer":
            fill = "#ede7f6" if d["bytes"] else "#f7f5fb"
            shape = "note"
        elif k == "acceptq":
            fill = "#e8f5e9"
            shape = "note"
        elif k == "port":
            fill = "#fff7c0"
            shape = "ellipse"
        elif k == "timewait":
            fill = STATE_FILL["TIME_WAIT"] if d["state"] == "TIME_WAIT" else STATE_FILL["FIN_WAIT2"]
            style = "dashed"
        elif k == "pool":
            fill = "#e1d5f5"
        node = DNode(n, node_lines(n, d, g.graph.get("time", 0.0)), fill=fill, color=color, shape=shape,
                     style=style, rank=RANK.get(k, 3), cluster=d.get("cluster"), cls=f"k-{k}")
        if n in changed:
            node.color, node.penwidth, node.cls = "#d62728", 3.0, node.cls + " changed"
        dr.nodes.append(node)
    for a, b, d in g.edges(data=True):
        rel = d.get("rel", "")
        color = {"owns": "#b8860b", "charged to": "#7e57c2", "queued": "#2e7d32"}.get(rel, "#666666")
        style = "dashed" if rel in ("charged to", "SYN_RECV request") else ""
        label = "" if rel in ("fd table", "refers to") else rel
        dr.edges.append(DEdge(a, b, label=label, color=color, style=style))
    return dr
