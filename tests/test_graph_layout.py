"""The pure-Python SVG layout (used without Graphviz) draws readable graphs: nodes and edge labels
do not overlap, every edge ends on the boundary of its own destination and inside no other node,
and text is drawn at a legible size, unscaled."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import sim.graph as G
from sim.graph.layout import place
from sim.scenario.loader import load_file

ROOT = Path(__file__).resolve().parents[1]
NS = "{http://www.w3.org/2000/svg}"
Box = tuple[float, float, float, float]

SCENARIOS = ("lessons/03-restart-bind-fails", "fd-fork-shares-socket", "accept-queue-backlog-3",
             "time-wait-active-closer", "linux/linux-tcp-state-closing-endings")


def _cover(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(px: float, py: float, b: Box, margin: float) -> bool:
    return b[0] + margin < px < b[0] + b[2] - margin and b[1] + margin < py < b[1] + b[3] - margin


def _problems(dr: G.Drawing) -> list[str]:
    svg = G.layout_svg(dr)
    root = ET.fromstring(svg)
    box = place(dr)
    out = []
    ids = sorted(box)
    out += [f"nodes {a} and {b} overlap" for i, a in enumerate(ids) for b in ids[i + 1:] if _cover(box[a], box[b])]
    labels: list[tuple[str, Box]] = []
    edges = [g for g in root.iter(NS + "g") if "edge" in (g.get("class") or "").split()]
    assert len(edges) == sum(1 for e in dr.edges if e.src in box and e.dst in box)
    for g, e in zip(edges, [e for e in dr.edges if e.src in box and e.dst in box]):
        tx, ty = map(float, g.find(NS + "path").get("d").split()[-1].split(","))
        x, y, w, h = box[e.dst]
        on_own = x - 1.5 <= tx <= x + w + 1.5 and y - 1.5 <= ty <= y + h + 1.5
        if not on_own or _inside(tx, ty, box[e.dst], 1.5):
            out.append(f"edge {e.src}->{e.dst} ends at ({tx:.0f},{ty:.0f}), not on {e.dst}")
        out += [f"edge {e.src}->{e.dst} ends inside {n}" for n, b in box.items()
                if n != e.dst and _inside(tx, ty, b, 0.5)]
        for r in g.findall(NS + "rect"):
            rb = (float(r.get("x")), float(r.get("y")), float(r.get("width")), float(r.get("height")))
            out += [f"label of {e.src}->{e.dst} covers node {n}" for n, b in box.items() if _cover(rb, b)]
            labels.append((f"{e.src}->{e.dst}", rb))
    out += [f"labels of {a} and {b} overlap" for i, (a, ra) in enumerate(labels)
            for b, rb in labels[i + 1:] if _cover(ra, rb)]
    sizes = [float(t.get("font-size")) for t in root.iter(NS + "text")]
    out += [f"text at {s:g}" for s in sizes if s < 9]
    vb = root.get("viewBox").split()
    if root.get("width") != f"{vb[2]}pt" or root.get("height") != f"{vb[3]}pt":
        out.append("the drawing is scaled")
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_object_graphs_read_without_graphviz(name):
    sc = load_file(ROOT / "scenarios" / f"{name}.yaml")
    rec = G.record(sc, seed=sc.seed)
    seen = set()
    for i, g in enumerate(rec.graphs):
        dr = G.object_drawing(g, changed=G.changed_nodes(rec.before(i - 1), g) if i else (), title=name)
        key = G.to_dot(dr)
        if key in seen:
            continue
        seen.add(key)
        assert not _problems(dr), (name, i, _problems(dr)[:5])


def test_state_diagram_reads_without_graphviz():
    assert not _problems(G.state_drawing(title="TCP states"))


def test_the_checks_catch_a_label_on_a_node():
    dr = G.Drawing(name="t", rankdir="LR")
    dr.nodes = [G.DNode("a", ["a"], rank=0), G.DNode("b", ["b"], rank=1)]
    dr.edges = [G.DEdge("a", "b", label="x")]
    assert not _problems(dr)
    box = place(dr)
    import sim.graph.layout as L

    real = L._svg_edge_label
    try:  # a label drawn on top of node a must be reported
        L._svg_edge_label = lambda e, p0, c1, c2, p3, taken: (
            f'<rect x="{box["a"][0]}" y="{box["a"][1]}" width="20" height="10"/>')
        assert any("covers node a" in p for p in _problems(dr))
    finally:
        L._svg_edge_label = real
