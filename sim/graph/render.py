"""Output of drawings: DOT, SVG (Graphviz's ``dot`` when installed, else the pure-Python layout), files, and
the command line (``python -m sim.graph state-diagram docs/state-diagram``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterable

from .drawing import DNode, Drawing
from .layout import layout_svg
from .recording import Transition
from .states import state_drawing


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(dr: Drawing) -> str:
    """DOT text of a drawing (deterministic: same drawing, same text)."""
    out = [f"digraph {_q(dr.name)} {{"]
    out.append(f'  graph [rankdir={dr.rankdir}, fontname="Helvetica", fontsize=11, nodesep=0.25, '
               f'ranksep={0.45 if dr.rankdir == "TB" else 0.6}, bgcolor="white"'
               + (f", label={_q(dr.title)}, labelloc=t" if dr.title else "") + "];")
    out.append('  node [fontname="Helvetica", fontsize=10, style="filled"];')
    out.append('  edge [fontname="Helvetica", fontsize=8, arrowsize=0.7];')

    def node_stmt(n: DNode) -> str:
        shape = {"box": "box", "ellipse": "ellipse", "note": "note", "plain": "plaintext"}[n.shape]
        style = "filled" + (",rounded" if n.shape == "box" else "") + (f",{n.style}" if n.style else "")
        attrs = [f"label={_q(chr(10).join(n.lines))}", f"shape={shape}", f'style="{style}"',
                 f'fillcolor="{n.fill}"', f'color="{n.color}"', f"penwidth={n.penwidth:g}",
                 f"id={_q(n.id)}"]
        if n.cls:
            attrs.append(f"class={_q(n.cls)}")
        if n.tooltip:
            attrs.append(f"tooltip={_q(n.tooltip)}")
        return f"  {_q(n.id)} [{', '.join(attrs)}];"

    by_cluster: dict[str, list[DNode]] = {}
    for n in dr.nodes:
        if n.cluster:
            by_cluster.setdefault(n.cluster, []).append(n)
    for ci, (cid, members) in enumerate(by_cluster.items()):
        out.append(f"  subgraph {_q('cluster_' + cid)} {{")
        out.append(f'    label={_q(dr.clusters.get(cid, cid))}; style="rounded,dashed"; color="#7aa6d6"; '
                   f'fontsize=10; fontname="Helvetica";')
        for n in members:
            out.append("  " + node_stmt(n))
        out.append("  }")
    for n in dr.nodes:
        if not n.cluster:
            out.append(node_stmt(n))
    if dr.ranked:
        ranks = sorted({n.rank for n in dr.nodes})
        if ranks:
            chain = list(range(0, max(ranks) + 1))
            for r in chain:
                out.append(f'  "_rank{r}" [label="", shape=point, width=0, height=0, style=invis];')
            out.append("  " + " -> ".join(f'"_rank{r}"' for r in chain) + " [style=invis];"
                       if len(chain) > 1 else "")
            for r in ranks:
                members = [n for n in dr.nodes if n.rank == r and not n.cluster]
                if members:
                    out.append("  { rank=same; " + " ".join(_q(x) for x in [f"_rank{r}"] + [m.id for m in members]) + " }")
    for e in dr.edges:
        attrs = [f'color="{e.color}"', f"penwidth={e.penwidth:g}", f'fontcolor="{e.color}"']
        if e.label:
            attrs.append(f"label={_q(e.label)}")
        if e.style:
            attrs.append(f"style={e.style}")
        if e.id:
            attrs.append(f"id={_q(e.id)}")
        if e.cls:
            attrs.append(f"class={_q(e.cls)}")
        out.append(f"  {_q(e.src)} -> {_q(e.dst)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def have_dot() -> bool:
    return os.environ.get("SOCKSIM_NO_DOT") != "1" and shutil.which("dot") is not None


_SVG_CACHE: dict[str, str] = {}


def to_svg(dr: Drawing, engine: str | None = None) -> str:
    """An inline ``<svg>`` element: Graphviz's rendering when ``dot`` exists, else :func:`layout_svg`.

    ``engine`` forces one: ``"dot"`` or ``"python"``.
    """
    use_dot = have_dot() if engine is None else engine == "dot"
    if use_dot:
        text = to_dot(dr)
        hit = _SVG_CACHE.get(text)
        if hit is not None:
            return hit
        try:
            p = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            p = None
        if p is not None and p.returncode == 0:
            svg = p.stdout.decode("utf-8", "replace")
            svg = svg[svg.find("<svg"):]
            # comments carry node names; drop them so the inline SVG stays small and clean
            while "<!--" in svg:
                a = svg.find("<!--")
                b = svg.find("-->", a)
                if b < 0:
                    break
                svg = svg[:a] + svg[b + 3:]
            svg = svg.replace("<svg ", '<svg class="graph" data-engine="dot" ', 1)
            if len(_SVG_CACHE) < 2000:
                _SVG_CACHE[text] = svg
            return svg
    return layout_svg(dr)


def write_state_diagram(base: str, path: Iterable[Transition] | None = None, engine: str | None = None) -> list[str]:
    """Write ``base.dot`` and ``base.svg`` (the state diagram); returns the paths written."""
    dr = state_drawing(path, title="TCP states (generated from sim/kernel/tcp_states.py TRANSITIONS)")
    from ..outfile import write_file

    write_file(base + ".dot", to_dot(dr), "the state diagram", force=True)
    svg = to_svg(dr, engine)
    write_file(base + ".svg", '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + standalone(svg) + "\n",
               "the state diagram", force=True)
    return [base + ".dot", base + ".svg"]


def standalone(svg: str) -> str:
    if "xmlns=" not in svg.split(">", 1)[0]:
        svg = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return svg


def write_graph(dr: Drawing, path: str, engine: str | None = None, force: bool = True) -> None:
    """Write a drawing as DOT (``.dot``/``.gv``) or SVG (``.svg``), chosen by the file name,
    atomically (sim.outfile; an existing file is replaced only with ``force``)."""
    from ..outfile import write_file

    if path.endswith(".svg"):
        text = '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + standalone(to_svg(dr, engine)) + "\n"
    else:
        text = to_dot(dr)
    write_file(path, text, "the drawing", force)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m sim.graph",
                                 description="Write the TCP state diagram generated from the model's table.")
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("state-diagram", help="write BASE.dot and BASE.svg")
    s.add_argument("base", help="output path without extension, e.g. docs/state-diagram")
    s.add_argument("--engine", choices=("dot", "python"), help="SVG renderer (default: dot if installed)")
    args = ap.parse_args(argv)
    for p in write_state_diagram(args.base, engine=args.engine):
        print(p)
    return 0
