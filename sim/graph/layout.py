"""A pure-Python layered layout that renders a :class:`~.drawing.Drawing` as SVG without Graphviz."""

from __future__ import annotations

import html
import math

from .drawing import DEdge, DNode, Drawing


CHAR_W, LINE_H, PAD = 6.4, 14.0, 8.0
LABEL_FONT = 9.0  # edge labels; node text is 10
Box = tuple[float, float, float, float]


def _label_size(label: str) -> tuple[float, float]:
    lines = label.split("\n")
    return max(len(s) for s in lines) * LABEL_FONT * 0.56 + 6, len(lines) * (LABEL_FONT + 2) + 3


def _size(n: DNode) -> tuple[float, float]:
    w = max(len(s) for s in n.lines) * CHAR_W + 2 * PAD + (10 if n.shape == "ellipse" else 0)
    h = len(n.lines) * LINE_H + 2 * PAD - 4
    return max(w, 40.0), max(h, 24.0)


def _order(dr: Drawing) -> dict[int, list[DNode]]:
    ranks: dict[int, list[DNode]] = {}
    for n in dr.nodes:
        ranks.setdefault(n.rank, []).append(n)
    nbrs: dict[str, list[str]] = {n.id: [] for n in dr.nodes}
    for e in dr.edges:
        if e.src in nbrs and e.dst in nbrs and e.src != e.dst:
            nbrs[e.src].append(e.dst)
            nbrs[e.dst].append(e.src)
    rank_of = {n.id: n.rank for n in dr.nodes}
    clusters = list(dict.fromkeys(n.cluster for n in dr.nodes if n.cluster))
    pos = {n.id: float(i) for r in ranks.values() for i, n in enumerate(r)}
    keys = sorted(ranks)
    for sweep in range(8):
        seq = keys if sweep % 2 == 0 else list(reversed(keys))
        for r in seq:
            def bary(n: DNode) -> float:
                adj = [pos[m] for m in nbrs[n.id] if rank_of[m] != r]
                return sum(adj) / len(adj) if adj else pos[n.id]
            ranks[r].sort(key=lambda n: (clusters.index(n.cluster) if n.cluster else len(clusters), bary(n)))
            for i, n in enumerate(ranks[r]):
                pos[n.id] = float(i)
    return ranks


def layout_svg(dr: Drawing) -> str:
    """Lay out and draw ``dr`` without Graphviz: deterministic, self-contained SVG."""
    box = place(dr)
    lr = dr.rankdir == "LR"
    W = max(x + w for x, y, w, h in box.values()) + 40
    H = max(y + h for x, y, w, h in box.values()) + 40
    parts = _svg_clusters(dr, box)
    taken = list(box.values())  # label boxes must not cover a node or another label
    for e in dr.edges:
        if e.src in box and e.dst in box:
            parts.append(_svg_edge(e, box[e.src], box[e.dst], lr, taken))
    parts.extend(_svg_node(n, box[n.id]) for n in dr.nodes)
    title = (f'<text x="{W / 2:.1f}" y="16" text-anchor="middle" font-size="12" font-weight="bold">'
             f'{html.escape(dr.title)}</text>') if dr.title else ""
    return (f'<svg class="graph" data-engine="python" xmlns="http://www.w3.org/2000/svg" '
            f'width="{W:.0f}pt" height="{H:.0f}pt" viewBox="0 0 {W:.0f} {H:.0f}" '
            f'font-family="Helvetica,Arial,sans-serif"><rect width="100%" height="100%" fill="white"/>'
            + title + "".join(parts) + "</svg>")


def place(dr: Drawing) -> dict[str, tuple[float, float, float, float]]:
    """Node id -> (x, y, width, height): ranks along the rank axis, clusters in bands across it."""
    ranks = _order(dr)
    size = {n.id: _size(n) for n in dr.nodes}
    lr = dr.rankdir == "LR"
    gap_rank, gap_node = (70.0, 16.0) if lr else (58.0, 30.0)
    # room between ranks for the widest (LR) or tallest (TB) edge label, so labels sit between nodes
    sizes = [_label_size(e.label) for e in dr.edges if e.label and e.src != e.dst]
    if sizes:
        gap_rank = max(gap_rank, max(w if lr else h for w, h in sizes) + 16)
    keys = sorted(ranks)
    # extent of every rank along the rank axis
    thick = {r: max((size[n.id][0] if lr else size[n.id][1]) for n in ranks[r]) for r in keys}
    along: dict[int, float] = {}
    cur = 20.0 + (18.0 if dr.title else 0.0)
    for r in keys:
        along[r] = cur
        cur += thick[r] + gap_rank
    # positions across the ranks: clusters in bands (so a cluster's box never overlaps another's)
    across: dict[str, float] = {}
    multi = {c for c in dr.clusters if len({n.rank for n in dr.nodes if n.cluster == c}) > 1}
    band_end = 20.0
    for c in dr.clusters:
        if c not in multi:
            continue
        top = band_end + 18.0
        ext = 0.0
        for r in keys:
            y = top
            for n in ranks[r]:
                if n.cluster == c:
                    across[n.id] = y
                    y += (size[n.id][1] if lr else size[n.id][0]) + gap_node
            ext = max(ext, y - top)
        band_end = top + ext + 10.0
    spans = {}
    for r in keys:
        free = [n for n in ranks[r] if n.id not in across]
        total = sum((size[n.id][1] if lr else size[n.id][0]) for n in free) + gap_node * max(0, len(free) - 1)
        spans[r] = (free, total)
    width_across = max([band_end] + [t + 40 for _, t in spans.values()])
    for r in keys:
        free, total = spans[r]
        banded = any(n.id in across for n in ranks[r])
        y = band_end + 10.0 if banded else max(20.0, (width_across - total) / 2)
        for n in free:
            across[n.id] = y
            y += (size[n.id][1] if lr else size[n.id][0]) + gap_node
    box: dict[str, tuple[float, float, float, float]] = {}
    for r in keys:
        for n in ranks[r]:
            w, h = size[n.id]
            if lr:
                x = along[r] + (thick[r] - w) / 2
                y = across[n.id]
            else:
                x = across[n.id]
                y = along[r] + (thick[r] - h) / 2
            box[n.id] = (x, y, w, h)
    return box


def _svg_clusters(dr: Drawing, box: dict[str, tuple[float, float, float, float]]) -> list[str]:
    parts = []
    for c, label in dr.clusters.items():
        members = [box[n.id] for n in dr.nodes if n.cluster == c]
        if not members:
            continue
        x0 = min(b[0] for b in members) - 8
        y0 = min(b[1] for b in members) - 18
        x1 = max(b[0] + b[2] for b in members) + 8
        y1 = max(b[1] + b[3] for b in members) + 8
        parts.append(f'<g class="cluster"><rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                     f'height="{y1 - y0:.1f}" rx="6" fill="none" stroke="#7aa6d6" stroke-dasharray="4 3"/>'
                     f'<text x="{x0 + 6:.1f}" y="{y0 + 12:.1f}" font-size="10" fill="#335">{html.escape(label)}</text></g>')
    return parts


def _svg_node(n: DNode, b: tuple[float, float, float, float]) -> str:
    x, y, w, h = b
    dash = ' stroke-dasharray="5 3"' if "dashed" in n.style else ""
    if n.shape == "ellipse":
        shape = (f'<ellipse cx="{x + w / 2:.1f}" cy="{y + h / 2:.1f}" rx="{w / 2:.1f}" ry="{h / 2:.1f}" '
                 f'fill="{n.fill}" stroke="{n.color}" stroke-width="{n.penwidth:g}"{dash}/>')
    else:
        rx = 6 if n.shape == "box" else 1
        shape = (f'<polygon points="{x:.1f},{y:.1f} {x + w:.1f},{y:.1f} {x + w:.1f},{y + h:.1f} {x:.1f},{y + h:.1f}" '
                 f'fill="{n.fill}" stroke="{n.color}" stroke-width="{n.penwidth:g}"{dash} rx="{rx}"/>')
    texts = []
    ty = y + (h - len(n.lines) * LINE_H) / 2 + LINE_H - 3
    for i, line in enumerate(n.lines):
        weight = ' font-weight="bold"' if i == 0 else ""
        texts.append(f'<text x="{x + w / 2:.1f}" y="{ty:.1f}" text-anchor="middle" font-size="10"{weight}>'
                     f'{html.escape(line)}</text>')
        ty += LINE_H
    return (f'<g id="{html.escape(n.id)}" class="node {html.escape(n.cls)}"><title>{html.escape(n.id)}</title>'
            + shape + "".join(texts) + "</g>")


def _svg_edge(e: DEdge, a: Box, b: Box, lr: bool, taken: list[Box]) -> str:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    dash = ' stroke-dasharray="5 3"' if e.style == "dashed" else ""
    if e.src == e.dst:  # self loop
        if lr:
            sx, sy = ax + aw * 0.35, ay
            tx, ty = ax + aw * 0.65, ay
            c1, c2 = (sx - 10, sy - 34), (tx + 10, ty - 34)
        else:
            sx, sy = ax + aw, ay + ah * 0.3
            tx, ty = ax + aw, ay + ah * 0.7
            c1, c2 = (sx + 40, sy - 14), (tx + 40, ty + 14)
    else:
        acx, acy, bcx, bcy = ax + aw / 2, ay + ah / 2, bx + bw / 2, by + bh / 2
        if lr:
            fwd = bcx > acx + 1
            if abs(bcx - acx) < 1:  # same rank: bulge to the right
                sx, sy, tx, ty = ax + aw, acy, bx + bw, bcy
                c1, c2 = (sx + 50, sy), (tx + 50, ty)
            else:
                sx, sy = (ax + aw, acy) if fwd else (ax, acy)
                tx, ty = (bx, bcy) if fwd else (bx + bw, bcy)
                d = max(30.0, abs(tx - sx) * 0.4)
                c1, c2 = (sx + (d if fwd else -d), sy), (tx - (d if fwd else -d), ty)
        else:
            fwd = bcy > acy + 1
            if abs(bcy - acy) < 1:
                sx, sy, tx, ty = acx, ay + ah, bcx, by + bh
                c1, c2 = (sx, sy + 40), (tx, ty + 40)
            else:
                sx, sy = (acx, ay + ah) if fwd else (acx + aw * 0.25, ay)
                tx, ty = (bcx, by) if fwd else (bcx + bw * 0.25, by + bh)
                d = max(24.0, abs(ty - sy) * 0.35)
                bend = 0.0 if fwd else 60.0
                c1, c2 = (sx + bend, sy + (d if fwd else -d)), (tx + bend, ty - (d if fwd else -d))
    path = f"M{sx:.1f},{sy:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} {tx:.1f},{ty:.1f}"
    # arrow head along the last tangent
    dx, dy = tx - c2[0], ty - c2[1]
    ln = math.hypot(dx, dy) or 1.0
    ux, uy = dx / ln, dy / ln
    size = 7.0
    p1 = (tx - ux * size - uy * size * 0.45, ty - uy * size + ux * size * 0.45)
    p2 = (tx - ux * size + uy * size * 0.45, ty - uy * size - ux * size * 0.45)
    head = (f'<polygon points="{tx:.1f},{ty:.1f} {p1[0]:.1f},{p1[1]:.1f} {p2[0]:.1f},{p2[1]:.1f}" '
            f'fill="{e.color}" stroke="{e.color}"/>')
    label = _svg_edge_label(e, (sx, sy), c1, c2, (tx, ty), taken) if e.label else ""
    eid = f' id="{html.escape(e.id)}"' if e.id else ""
    return (f'<g{eid} class="edge {html.escape(e.cls)}"><path d="{path}" fill="none" stroke="{e.color}" '
            f'stroke-width="{e.penwidth:g}"{dash}/>' + head + label + "</g>")


def _bezier(p0: tuple[float, float], c1: tuple[float, float], c2: tuple[float, float],
            p3: tuple[float, float], t: float) -> tuple[float, float]:
    u = 1 - t
    return (u ** 3 * p0[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t ** 3 * p3[0],
            u ** 3 * p0[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t ** 3 * p3[1])


def _overlaps(r: Box, others: list[Box]) -> int:
    x, y, w, h = r
    return sum(1 for ox, oy, ow, oh in others if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h)


def _label_spots(lw: float, lh: float) -> list[tuple[float, float, float]]:
    """Where to try a label: points of the curve from the middle outwards, then ever farther
    beside them (a spiral of eight directions)."""
    ts = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)
    spots = [(t, 0.0, 0.0) for t in ts]
    for k in range(1, 7):
        for ux, uy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)):
            spots += [(t, ux * k * (lw / 2 + 4), uy * k * lh) for t in ts[:3]]
    return spots


def _svg_edge_label(e: DEdge, p0: tuple[float, float], c1: tuple[float, float], c2: tuple[float, float],
                    p3: tuple[float, float], taken: list[Box]) -> str:
    """The edge's label on a white box, at the point of the curve where it covers no node and no
    other label (tried from the middle outwards, then beside the curve); the box is then taken."""
    lines = e.label.split("\n")
    lw, lh = _label_size(e.label)
    best: tuple[int, Box] | None = None
    for t, dx, dy in _label_spots(lw, lh):
        mx, my = _bezier(p0, c1, c2, p3, t)
        r = (mx + dx - lw / 2, my + dy - lh / 2, lw, lh)
        n = _overlaps(r, taken)
        if best is None or n < best[0]:
            best = (n, r)
        if n == 0:
            break
    x, y, w, h = best[1]
    taken.append(best[1])
    out = (f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
           f'fill="white" fill-opacity="0.9"/>')
    for i, s in enumerate(lines):
        out += (f'<text x="{x + w / 2:.1f}" y="{y + LABEL_FONT + 1 + i * (LABEL_FONT + 2):.1f}" '
                f'text-anchor="middle" font-size="{LABEL_FONT:g}" fill="{e.color}">{html.escape(s)}</text>')
    return out
