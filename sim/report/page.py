"""One self-contained HTML page for one scenario run: timeline, step slider, object graph, tables,
explanation, and the TCP state diagram with the path of a connection.

Everything the page needs is inside the file: CSS, a few lines of JavaScript, the SVG drawings
(rendered when the page is written, by Graphviz's ``dot`` if installed, else by the pure-Python
layout of :mod:`sim.graph`) and the per-step data as JSON. Nothing is fetched when it is viewed:
no CDN, no fonts, no network.

``socksim run FILE --html OUT.html`` calls :func:`write_page`.
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Any

import networkx as nx

from .. import __version__
from .. import graph as G
from ..explain import Explainer, Explanation
from .pagejs import CHECKPOINT, JS
from ..trace import Trace
from .ladder import ladder_data, ladder_panel

E = html.escape


def write_page(scenario: Any, trace: Trace | None, path: str, seed: int = 0, force: bool = False) -> str:
    """Write the page for ``scenario`` to ``path`` and return its text.

    The scenario is re-run on the simulator (same seed) so that the kernel can be snapshotted at
    every step; ``trace`` is the run the caller already has (its outcomes are checked against the
    re-run, and a difference is reported on the page).
    """
    from ..outfile import write_file

    text = render_page(scenario, trace, seed=seed)
    write_file(path, text, "the HTML page", force)
    return text


MAX_LISTED = 40  # items of one list in a step's explanation (a load step is summarised)


def render_page(scenario: Any, trace: Trace | None = None, seed: int = 0) -> str:
    personality = getattr(trace, "personality", None) if trace is not None else None
    if personality == getattr(getattr(scenario, "host", None), "personality", None):
        personality = None
    ex = Explainer(scenario, seed=seed, personality=personality)
    r = ex.r
    steps = r.trace.steps
    mismatch = []
    if trace is not None:
        for a, b in zip(trace.steps, steps):
            if (a.ret, a.err) != (b.ret, b.err):
                mismatch.append(a.index)
    exps = ex.explain_all()
    for i, e in enumerate(exps):
        if e.kind == "load" and len(e.during) > MAX_LISTED:
            e.during = ex.during_rows(i)  # a load step summarised: one line per transition-table row
    # the trace once: the graph before the first step, then what each step changed
    rules: dict[str, dict[str, str]] = {}
    step_data = []
    for i, e in enumerate(exps):
        step_data.append({"e": explanation_data(e, rules), "d": graph_delta(r.before(i), r.after(i)),
                          "track": r.step_sock.get(i)})
    # the connection whose path the diagram shows: the step's own socket, else the last one that moved
    last_moved = None
    moved = {t.step: t.track for t in r.transitions}
    for i, sd in enumerate(step_data):
        last_moved = moved.get(i, last_moved)
        if not (sd["track"] and r.path(sd["track"])):
            sd["track"] = last_moved
        if sd["track"] is None:
            del sd["track"]
    tracks = {}
    moves: dict[str, list[Any]] = {}  # "src|event|dst" -> [diagram edge id, diagram node ids], once per page
    for tid, info in r.tracks.items():
        path = r.path(tid)
        if not path:
            continue
        for t in path:
            key = f"{t.src}|{t.event}|{t.dst}"
            if key not in moves:
                moves[key] = [G.transition_edge_id(t), G.transition_node_ids(t)]
        tracks[tid] = {"label": info.get("label") or tid,
                       "path": [[t.step, f"{t.src}|{t.event}|{t.dst}", t.time] for t in path]}
    states_svg = G.to_svg(G.state_drawing())
    # the steps, the wire and the connections' paths with each repeated string once (the script
    # unpacks them and draws the ladder)
    packed, strings = pack_strings({"steps": step_data, "wire": ladder_data(r.trace), "tracks": tracks})
    data = {"base": graph_delta(None, r.before(0)), **packed, "S": strings, "rules": rules,
            "moves": moves, "every": CHECKPOINT, "fill": G.STATE_FILL}
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    head = _header(scenario, r.trace, seed, mismatch)
    timeline = _timeline()
    n = len(steps)
    wire = ladder_panel(r.trace)
    options = "".join(f'<option value="{E(t)}">{E(v["label"])}</option>' for t, v in tracks.items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="socksim {E(__version__)}">
<title>socksim: {E(scenario.name)}</title>
<style>{CSS}</style>
</head>
<body>
{head}
<nav id="controls" aria-label="steps">
  <button id="prev" type="button" title="previous step (left arrow)">&#9664; prev</button>
  <input type="range" id="step-slider" min="0" max="{max(0, n - 1)}" value="0" step="1" aria-label="step">
  <button id="next" type="button" title="next step (right arrow)">next &#9654;</button>
  <span id="step-label"></span>
</nav>
<main>
  <section id="left">
    <h2>Timeline</h2>
    {timeline}
  </section>
  <section id="right">
    <div id="explanation" class="panel"></div>
    {wire}
    <div class="panel">
      <h2>Kernel objects after this step</h2>
      <p class="hint">process &rarr; fd &rarr; open file &rarr; TCB &rarr; buffers; TCBs and TIME_WAIT entries
      own ports. A thick red border marks what this step created or changed. Click the drawing to zoom.</p>
      <div id="graph" class="fit"></div>
    </div>
    <div class="panel">
      <h2>Kernel tables after this step</h2>
      <div id="tables"></div>
    </div>
    <div class="panel" id="states-box">
      <h2>TCP state diagram</h2>
      <p class="hint">Generated from the model's transition table (sim/kernel/tcp_states.py). The path the chosen
      connection has taken up to this step is drawn in red; its current state is filled yellow.</p>
      <label>connection <select id="conn-select">{options}</select></label>
      <div id="path-text"></div>
      <div id="states">{states_svg}</div>
    </div>
  </section>
</main>
<footer>Written by socksim {E(__version__)} from {E(os.path.basename(scenario.source or scenario.name))}
(seed {seed}). Self-contained: nothing is fetched from the network.</footer>
<script type="application/json" id="data">{blob}</script>
<script>{JS}</script>
</body>
</html>
"""


# ------------------------------------------------------------------------------- pieces


def _inline(text: str) -> str:
    out = E(text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def description_html(text: str) -> str:
    """A scenario's description: the first line as a lead, paragraphs, '- ' lists."""
    lines = (text or "").strip("\n").splitlines()
    if not lines:
        return ""
    out = [f'<p class="lead">{_inline(lines[0].strip())}</p>']
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for raw in lines[1:]:
        s = raw.strip()
        if not s:
            flush()
        elif s.endswith(":") and len(s) < 40:
            flush()
            out.append(f'<p class="sub">{_inline(s)}</p>')
        elif s.startswith("- "):
            if para:
                flush()
            items.append(s[2:])
        elif items and raw[:1].isspace():
            items[-1] += " " + s
        else:
            if items:
                flush()
            para.append(s)
    flush()
    return "\n".join(out)


def _header(scenario: Any, trace: Trace, seed: int, mismatch: list[int]) -> str:
    met = [s for s in trace.steps if s.expect_ok is not None]
    bad = [s for s in met if s.expect_ok is False]
    warn = (f'<p class="warn">The re-run differs from the given trace at steps {", ".join(map(str, mismatch))}.</p>'
            if mismatch else "")
    exp = (f'<span class="{"bad" if bad else "good"}">expectations {len(met) - len(bad)}/{len(met)} met</span>'
           if met else "")
    return f"""<header>
  <h1>{E(scenario.name)}</h1>
  <div class="desc">{description_html(scenario.description)}</div>
  <p class="meta">personality <b>{E(trace.personality)}</b> &middot; seed {seed} &middot; {len(trace.steps)} steps
  &middot; {exp}</p>
  {warn}
</header>"""


def _timeline() -> str:
    """The timeline's frame; the page's script writes one row per step from the step data."""
    return ('<table id="timeline"><thead><tr><th>#</th><th>t (s)</th><th>process</th><th>call</th>'
            '<th>result</th><th>rule</th></tr></thead><tbody></tbody></table>')


def _capped(items: list[str]) -> list[str]:
    """A long list (a load step's transitions) summarised: its first and last items, and how many between."""
    if len(items) <= MAX_LISTED:
        return list(items)
    head, tail = items[:MAX_LISTED - 10], items[-9:]
    return head + [f"... {len(items) - len(head) - len(tail)} more"] + tail


def explanation_data(e: Explanation, rules: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One step's explanation as compact data; rule citations and texts go to ``rules``, once per page."""
    d: dict[str, Any] = {"i": e.index, "t": e.time, "w": e.what, "o": e.outcome}
    for key, v in (("l", e.line), ("p", e.proc), ("v", e.via), ("n", e.note), ("ef", e.effect)):
        if v:
            d[key] = v
    if e.expect is not None:
        d["x"], d["xo"] = str(e.expect), bool(e.expect_ok)
    if e.rule:
        d["r"] = e.rule
        reg = rules.setdefault(e.rule, {"c": e.cite or ""})
        if e.doc and "d" not in reg:
            reg["d"] = e.doc
        if (e.cite or "") != reg["c"]:
            d["c"] = e.cite or ""
        if (e.doc or "") != reg.get("d", ""):
            d["doc"] = e.doc or ""
    else:
        d["db"] = e.decided_by
        if e.cite:
            d["c"] = e.cite
        if e.doc:
            d["doc"] = e.doc
    trail: list[Any] = []
    for rid, c in e.trail:
        reg = rules.setdefault(rid, {"c": c})
        trail.append(rid if reg["c"] == c else [rid, c])
    if trail:
        d["tr"] = trail
    for key, items in (("f", e.facts), ("s", e.state), ("du", e.during)):
        if items:
            d[key] = _capped(items)
    if e.whatifs:
        d["wi"] = [[w.label, w.outcome, 1 if w.changed else 0] for w in e.whatifs]
    return d


REF = "@"  # a packed string: "@" and its index in the page's string table ("@@..." is a string that began with "@")


def pack_strings(data: Any) -> tuple[Any, list[str]]:
    """``data`` with every string (value or key) that occurs more than once and is longer than its
    reference written once, in the returned table, and referred to as ``"@<index>"`` elsewhere.

    A step's explanation and its graph delta repeat the same sentences, node names and segment
    labels from one connection to the next; the page holds each once. :func:`unpack_strings` (and
    the page's script) undo it."""
    counts: dict[str, int] = {}

    def count(x: Any) -> None:
        if isinstance(x, str):
            counts[x] = counts.get(x, 0) + 1
        elif isinstance(x, list):
            for y in x:
                count(y)
        elif isinstance(x, dict):
            for k, v in x.items():
                counts[k] = counts.get(k, 0) + 1
                count(v)

    count(data)
    table: list[str] = []
    refs: dict[str, str] = {}
    for text, n in sorted(counts.items(), key=lambda kv: -kv[1] * len(kv[0])):  # the most saved, the shortest index
        if n > 1 and n * (len(text) - len(str(len(table))) - 1) > len(text) + 3:  # written n times vs once + n refs
            refs[text] = f"{REF}{len(table)}"
            table.append(text)

    def enc(x: Any) -> Any:
        if isinstance(x, str):
            return refs.get(x) or (REF + x if x.startswith(REF) else x)
        if isinstance(x, list):
            return [enc(y) for y in x]
        if isinstance(x, dict):
            return {enc(k): enc(v) for k, v in x.items()}
        return x

    return enc(data), table


def unpack_strings(data: Any, table: list[str]) -> Any:
    """The inverse of :func:`pack_strings`."""
    if isinstance(data, str):
        if not data.startswith(REF):
            return data
        return data[1:] if data.startswith(REF + REF) else table[int(data[1:])]
    if isinstance(data, list):
        return [unpack_strings(y, table) for y in data]
    if isinstance(data, dict):
        return {unpack_strings(k, table): unpack_strings(v, table) for k, v in data.items()}
    return data


def graph_delta(before: nx.DiGraph | None, after: nx.DiGraph) -> dict[str, Any]:
    """What changed from one object graph to the next: nodes added or changed (only the changed
    attributes; ``null`` deletes one; false and None are left out), nodes removed, edges added and removed, host attributes that
    moved -- of each, what the page shows (:data:`SHOWN`). A TIME_WAIT entry's remaining time is left
    out (the page computes it from the step's time)."""
    out: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {}
    bn = before.nodes if before is not None else {}
    for n, d in after.nodes(data=True):
        shown = SHOWN.get(d.get("kind"), ())
        cur = {k: v for k, v in d.items() if (k == "kind" or k in shown) and v is not None and v is not False}
        old = bn[n] if n in bn else None
        if old is None:
            nodes[n] = cur
            continue
        if {k: v for k, v in d.items() if k != "remaining"} == {k: v for k, v in old.items() if k != "remaining"}:
            continue
        old = {k: v for k, v in old.items() if (k == "kind" or k in shown) and v is not None and v is not False}
        diff = {k: v for k, v in cur.items() if old.get(k, _MISSING) != v}
        diff.update({k: None for k in old if k not in cur})
        nodes[n] = diff
    if nodes:
        out["n"] = nodes
    gone = [n for n in bn if n not in after] if before is not None else []
    if gone:
        out["nr"] = gone
    be = set(before.edges()) if before is not None else set()
    ae = set(after.edges())
    added = [[a, b, after.edges[a, b].get("rel", "")] for a, b in after.edges() if (a, b) not in be
             or before.edges[a, b].get("rel") != after.edges[a, b].get("rel")]
    removed = [[a, b] for a, b in before.edges() if (a, b) not in ae and a in after and b in after] if before is not None else []
    if added:
        out["ea"] = added
    if removed:
        out["er"] = removed
    ga = {k: v for k, v in after.graph.items() if k in HOST_SHOWN}
    gb = {k: v for k, v in before.graph.items() if k in HOST_SHOWN} if before is not None else {}
    moved = {k: v for k, v in ga.items() if gb.get(k, _MISSING) != v}
    if moved:
        out["g"] = moved
    return out


_MISSING = object()
# what the page's script reads of each kind of node (sim.graph.node_lines, the tables); a change of
# any other attribute still marks the node as changed by the step (an empty entry)
SHOWN = {
    "process": ("name", "pid", "alive", "nofile", "cluster"), "std": ("fds", "cluster"),
    "fd": ("fd", "name", "cluster"), "file": ("refs", "nonblock", "holders"),
    "tcb": ("proto", "state", "laddr", "lport", "raddr", "rport", "reuse", "reuseport", "orphan", "request",
            "backlog", "err", "label", "snd_q", "rcv_q"),
    "buffer": ("dir", "bytes", "size"), "acceptq": ("queued", "backlog", "limit", "overflows"),
    "port": ("proto", "port", "owners"),
    "timewait": ("state", "laddr", "lport", "raddr", "rport", "reuse", "reuseport", "expires", "origin", "origin_proc"),
    "pool": ("bytes", "pages", "tcp_mem", "peak", "pressure", "name"), "more": ("count", "what"),
}
HOST_SHOWN = ("sockstat", "mib")


CSS = """
:root { --red: #d62728; --ink: #1d2733; --muted: #5b6675; --line: #d8dee6; --bg: #f7f9fb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); margin: 0; background: var(--bg); }
header { padding: 12px 20px 4px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 20px; }
h2 { font-size: 16px; margin: 0 0 8px; }
h3 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.desc p { margin: 4px 0; max-width: 110ch; } .desc .lead { font-weight: 600; }
.desc .sub { color: var(--muted); font-size: 12px; margin-top: 8px; }
.desc ul { margin: 4px 0 4px 18px; padding: 0; color: var(--muted); font-size: 13px; max-width: 110ch; }
.meta { color: var(--muted); font-size: 12px; }
.warn { color: var(--red); }
#controls { position: sticky; top: 0; z-index: 5; display: flex; gap: 10px; align-items: center; padding: 8px 20px;
  background: #fff; border-bottom: 1px solid var(--line); }
#controls input[type=range] { flex: 1; }
#controls button { font: inherit; padding: 3px 10px; cursor: pointer; }
#step-label { flex: 2; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
main { display: grid; grid-template-columns: minmax(320px, 40%) 1fr; gap: 14px; padding: 14px 20px; }
@media (max-width: 1000px) { main { grid-template-columns: 1fr; } }
#left { position: sticky; top: 52px; align-self: start; max-height: calc(100vh - 64px); overflow: auto; background: #fff;
  border: 1px solid var(--line); border-radius: 6px; padding: 10px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; margin-bottom: 14px; }
table { border-collapse: collapse; width: 100%; font-size: 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#timeline tbody tr { cursor: pointer; }
#timeline tbody tr:hover { background: #eef4fb; }
#timeline tr.current { background: #fff3bf !important; outline: 2px solid #f0c000; }
#timeline tr.future { color: #98a2ad; }
#timeline tr.err td.res { color: var(--red); font-weight: 600; }
#timeline tr.blocked td.res { color: #b26a00; }
#timeline td.rule { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; color: var(--muted); }
.via { font-size: 11px; color: #0a7d8c; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.call { font-size: 15px; } .proc { color: #1f5fa8; font-weight: 600; }
.outcome { color: #1b7a36; } .outcome.err { color: var(--red); }
.when { font-weight: normal; color: var(--muted); font-size: 13px; }
.note { background: #fffbe6; border-left: 3px solid #f0c000; padding: 4px 8px; margin: 6px 0; }
.decision { border-left: 3px solid #1f5fa8; padding: 4px 8px; background: #f2f7fd; margin: 8px 0; }
.cite { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.cite2 { color: var(--muted); font-size: 12px; }
pre.doc { white-space: pre-wrap; font-size: 12px; background: #fff; padding: 6px; border: 1px solid var(--line); }
ul { margin: 2px 0 2px 18px; padding: 0; } li { margin: 2px 0; }
ul.whatif.changed li b { color: #1b7a36; } ul.whatif.same li { color: var(--muted); }
.expect.good, .good { color: #1b7a36; } .expect.bad, .bad { color: var(--red); font-weight: 600; }
.effect { color: var(--muted); }
.hint { color: var(--muted); font-size: 12px; margin: 0 0 6px; }
.empty { color: var(--muted); font-style: italic; margin: 2px 0; }
#graph, #states { overflow: auto; }
#graph.fit svg, #states svg { max-width: 100%; height: auto; }
#graph { cursor: zoom-in; } #graph.fit { cursor: zoom-in; } #graph:not(.fit) { cursor: zoom-out; }
#states g.edge.hl path { stroke: var(--red); stroke-width: 3.5; }
#states g.edge.hl polygon { fill: var(--red); stroke: var(--red); }
#states g.edge.hl text { fill: var(--red); font-weight: bold; }
#states g.node.hl ellipse { stroke: var(--red); stroke-width: 3.5; }
#states g.node.cur ellipse { fill: #ffe14d; }
#ladder { overflow: auto; max-height: 70vh; }
#ladder g.seg { cursor: pointer; } #ladder g.seg:hover text.lbl { text-decoration: underline; }
#ladder g.seg.future, #ladder g.state.future { opacity: .25; }
#ladder g.seg.cur line, #ladder g.seg.cur path { stroke-width: 3; }
#ladder g.seg.cur text.lbl { font-weight: bold; }
#path-text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; margin: 6px 0; }
footer { color: var(--muted); font-size: 12px; padding: 6px 20px 20px; }
"""
