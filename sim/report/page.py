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
from ..graph import addr_text
from ..trace import Trace
from .ladder import ladder_panel

E = html.escape


def write_page(scenario: Any, trace: Trace | None, path: str, seed: int = 0) -> str:
    """Write the page for ``scenario`` to ``path`` and return its text.

    The scenario is re-run on the simulator (same seed) so that the kernel can be snapshotted at
    every step; ``trace`` is the run the caller already has (its outcomes are checked against the
    re-run, and a difference is reported on the page).
    """
    text = render_page(scenario, trace, seed=seed)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return text


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
    exps = [ex.explain(i) for i in range(len(steps))]
    # graphs: one drawing per step (after the step), deduplicated
    svgs: list[str] = []
    svg_index: dict[str, int] = {}
    step_data = []
    for i, e in enumerate(exps):
        gb, ga = r.before(i), r.after(i)
        dr = G.object_drawing(ga, G.changed_nodes(gb, ga))
        svg = G.to_svg(dr)
        if svg not in svg_index:
            svg_index[svg] = len(svgs)
            svgs.append(svg)
        step_data.append({
            "explain": explanation_html(e),
            "tables": tables_html(ga, e.time),
            "graph": svg_index[svg],
            "track": r.step_sock.get(i),
            "title": f"step {i}: {(e.proc + ': ') if e.proc else ''}{e.what} → {e.outcome}",
            "time": e.time,
        })
    # the connection whose path the diagram shows: the step's own socket, else the last one that moved
    last_moved = None
    moved = {t.step: t.track for t in r.transitions}
    for i, sd in enumerate(step_data):
        last_moved = moved.get(i, last_moved)
        if not (sd["track"] and r.path(sd["track"])):
            sd["track"] = last_moved
    tracks = {}
    for tid, info in r.tracks.items():
        path = r.path(tid)
        if not path:
            continue
        tracks[tid] = {
            "label": info.get("label") or tid,
            "path": [{"step": t.step, "edge": G.transition_edge_id(t), "nodes": G.transition_node_ids(t),
                      "text": f"{t.src} --{t.event}--> {t.dst}", "time": t.time} for t in path],
        }
    states_svg = G.to_svg(G.state_drawing())
    data = {"steps": step_data, "graphs": svgs, "tracks": tracks}
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    first = step_data[0] if step_data else {"explain": "", "tables": "", "graph": 0, "title": ""}
    head = _header(scenario, r.trace, seed, mismatch)
    timeline = _timeline(scenario, exps)
    n = len(steps)
    wire = ladder_panel(r.trace, {i: sd["title"] for i, sd in enumerate(step_data)})
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
  <span id="step-label">{E(first["title"])}</span>
</nav>
<main>
  <section id="left">
    <h2>Timeline</h2>
    {timeline}
  </section>
  <section id="right">
    <div id="explanation" class="panel">{first["explain"]}</div>
    {wire}
    <div class="panel">
      <h2>Kernel objects after this step</h2>
      <p class="hint">process &rarr; fd &rarr; open file &rarr; TCB &rarr; buffers; TCBs and TIME_WAIT entries
      own ports. A thick red border marks what this step created or changed. Click the drawing to zoom.</p>
      <div id="graph" class="fit">{svgs[first["graph"]] if svgs else ""}</div>
    </div>
    <div class="panel">
      <h2>Kernel tables after this step</h2>
      <div id="tables">{first["tables"]}</div>
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


def _timeline(scenario: Any, exps: list[Explanation]) -> str:
    rows = []
    for e in exps:
        cls = "err" if e.outcome.startswith(("-1 ", "INVALID_SOCKET", "SOCKET_ERROR")) or "PROCESS_" in e.outcome else (
            "blocked" if e.outcome.startswith(("BLOCKED", "blocked")) else "")
        mark = "" if e.expect_ok is None else ('<span class="good">&#10003;</span>' if e.expect_ok
                                                else '<span class="bad">&#10007;</span>')
        via = f'<div class="via">{E(e.via)}</div>' if e.via else ""
        rows.append(
            f'<tr data-step="{e.index}" class="{cls}"><td class="num">{e.index}</td>'
            f'<td class="num">{e.time:.6g}</td><td>{E(e.proc or "")}</td>'
            f'<td>{via}<code>{E(e.what)}</code></td><td class="res">{E(e.outcome)} {mark}</td>'
            f'<td class="rule">{E(e.rule or e.decided_by)}</td></tr>')
    return ('<table id="timeline"><thead><tr><th>#</th><th>t (s)</th><th>process</th><th>call</th>'
            '<th>result</th><th>rule</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def explanation_html(e: Explanation) -> str:
    """The explanation panel of one step."""
    err = e.outcome.startswith(("-1 ", "INVALID_SOCKET", "SOCKET_ERROR")) or "PROCESS_" in e.outcome
    parts = [f'<h2>Step {e.index} <span class="when">t = {e.time:.6g} s'
             + (f", line {e.line}" if e.line else "") + "</span></h2>"]
    who = f'<span class="proc">{E(e.proc)}</span> ' if e.proc else ""
    parts.append(f'<p class="call">{who}<code>{E(e.what)}</code> &rarr; '
                 f'<b class="outcome{" err" if err else ""}">{E(e.outcome)}</b></p>')
    if e.via:
        parts.append(f'<p class="via">called by the slot of a timer: {E(e.via)}</p>')
    if e.expect is not None:
        ok = e.expect_ok
        parts.append(f'<p class="expect {"good" if ok else "bad"}">expected {E(str(e.expect))}: '
                     f'{"met" if ok else "NOT met"}</p>')
    if e.note:
        parts.append(f'<p class="note">{_inline(e.note)}</p>')
    rule = f'<b class="rule">{E(e.rule)}</b>' if e.rule else f'<b class="rule">{E(e.decided_by)}</b>'
    parts.append(f'<div class="decision"><div>decided by {rule}</div><div class="cite">{E(e.cite or "")}</div>')
    more = []
    if e.doc and len(e.doc.strip().splitlines()) > 1:
        more.append("<pre class=\"doc\">" + E(e.doc.strip()) + "</pre>")
    if len(e.trail) > 1:
        more.append("<p>rules consulted, in order:</p><ul class=\"trail\">" + "".join(
            f"<li><b>{E(rid)}</b> <span class=\"cite2\">{E(c)}</span></li>" for rid, c in e.trail) + "</ul>")
    if more:
        parts.append("<details><summary>the rule's text and every rule consulted</summary>" + "".join(more) + "</details>")
    parts.append("</div>")

    def ul(title: str, items: list[str], cls: str) -> None:
        if items:
            parts.append(f"<h3>{title}</h3><ul class=\"{cls}\">" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")

    ul("What the rule looked at", e.facts, "facts")
    ul("The kernel's tables just before the step", e.state, "state")
    ul("During the step", e.during, "during")
    if e.effect:
        parts.append(f'<p class="effect">afterwards: {E(e.effect)}</p>')
    changed = [w for w in e.whatifs if w.changed]
    same = [w for w in e.whatifs if not w.changed]
    if changed:
        parts.append("<h3>What would have changed the outcome</h3><p class=\"hint\">each variant of the scenario "
                     "was re-run on the model</p><ul class=\"whatif changed\">" + "".join(
                         f"<li>{E(w.label)}: <b>{E(w.outcome)}</b></li>" for w in changed) + "</ul>")
    if same:
        parts.append("<h3>What would not have changed it</h3><ul class=\"whatif same\">" + "".join(
            f"<li>{E(w.label)}: still <b>{E(w.outcome)}</b></li>" for w in same) + "</ul>")
    return "\n".join(parts)


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{E(empty)}</p>'
    return ("<table><thead><tr>" + "".join(f"<th>{E(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")


def tables_html(g: nx.DiGraph, now: float) -> str:
    """The kernel's tables after a step, read from its object graph."""
    out = []
    # fd tables
    rows = []
    for n, d in g.nodes(data=True):
        if d.get("kind") != "process":
            continue
        fds = [(m, g.nodes[m]) for m in g.successors(n) if g.nodes[m].get("kind") in ("fd", "std")]
        state = "exited" if not d["alive"] else f"pid {d['pid']}"
        if not fds:
            rows.append([E(d["name"]), E(state), "", "<i>no open fds</i>", ""])
        for m, f in sorted(fds, key=lambda x: (x[1].get("fd", -1) if x[1]["kind"] == "fd" else -1)):
            if f["kind"] == "std":
                rows.append([E(d["name"]), E(state), E(", ".join(map(str, f["fds"]))), "stdin/stdout/stderr", ""])
                continue
            files = [x for x in g.successors(m) if g.nodes[x].get("kind") == "file"]
            fdesc, sdesc = "", ""
            for fl in files:
                fa = g.nodes[fl]
                others = [h.replace(":", " fd ") for h in fa.get("holders", []) if h != f"{d['name']}:{f['fd']}"]
                fdesc = f"open file #{E(fl[4:])}: {fa['refs']} ref" + ("s" if fa["refs"] != 1 else "") + (
                    f" (shared with {E(', '.join(others))})" if others else "") + (", O_NONBLOCK" if fa.get("nonblock") else "")
                for t in g.successors(fl):
                    td = g.nodes[t]
                    sdesc = E(f"{td['proto'].upper()} {td['state'] if td['proto'] == 'tcp' else ''} "
                              + (f"{addr_text(td['laddr'], td['lport'])}" if td['lport'] else "unbound"))
            rows.append([E(d["name"]), E(state), f"{f['fd']}" + (f" ({E(f['name'])})" if f.get("name") else ""), fdesc, sdesc])
    out.append("<h3>File descriptor tables</h3>" + _table(["process", "", "fd", "open file", "socket"], rows,
                                                          "no processes"))
    # sockets
    rows = []
    for n, d in g.nodes(data=True):
        if d.get("kind") != "tcb":
            continue
        flags = ", ".join(f for f, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)) or "-"
        owner = ", ".join(h.replace(":", " fd ") for h in G.holders_of(g, n)) or ("orphan" if d.get("orphan") else (
            "request" if d.get("request") else "-"))
        rows.append([E(d.get("label") or n), E(d["state"] if d["proto"] == "tcp" else d["proto"].upper()),
                     E(addr_text(d["laddr"], d["lport"]) if d["lport"] else "-"),
                     E(addr_text(d["raddr"], d["rport"]) if d["raddr"] else "-"),
                     f"{d['rcv_q']}", f"{d['snd_q']}", E(flags), E(owner)])
    out.append("<h3>Sockets (TCBs)</h3>" + _table(
        ["socket", "state", "local", "remote", "Recv-Q", "Send-Q", "options", "fds"], rows, "no sockets"))
    # ports
    rows = []
    for n, d in g.nodes(data=True):
        if d.get("kind") != "port":
            continue
        owners = []
        for o in g.predecessors(n):
            od = g.nodes[o]
            if od.get("kind") == "timewait":
                owners.append(f"{od['state']} entry {addr_text(od['raddr'], od['rport'])}")
            else:
                owners.append(f"{od.get('label') or o} ({od['state']})")
        rows.append([f"{d['proto'].upper()} {d['port']}", E("; ".join(owners))])
    out.append("<h3>Port table (bind buckets)</h3>" + _table(["port", "owners"], rows, "no port is in use"))
    # TIME_WAIT
    rows = []
    for n, d in g.nodes(data=True):
        if d.get("kind") != "timewait":
            continue
        rows.append([E(f"{addr_text(d['laddr'], d['lport'])} → {addr_text(d['raddr'], d['rport'])}"), E(d["state"]),
                     f"{d['expires']:g}", f"{max(0.0, d['expires'] - now):g}",
                     "yes" if d.get("reuse") else "no", E(d.get("origin") or "-")
                     + ("" if d.get("origin_proc") is None or _alive(g, d["origin_proc"]) else E(f" (process {d['origin_proc']} exited)"))])
    out.append("<h3>TIME_WAIT entries</h3>" + _table(
        ["4-tuple", "state", "expires at (s)", "remaining (s)", "SO_REUSEADDR", "left by"], rows, "none"))
    # accept queues
    rows = []
    for n, d in g.nodes(data=True):
        if d.get("kind") != "acceptq":
            continue
        lst = next(iter(g.predecessors(n)), None)
        rows.append([E(g.nodes[lst].get("label") or lst) if lst else "", f"{d['queued']}", f"{d['backlog']}",
                     f"{d['limit']}", f"{d['overflows']}"])
    out.append("<h3>Accept queues</h3>" + _table(["listener", "queued", "backlog", "holds at most", "SYNs dropped"],
                                                 rows, "no listener"))
    # memory
    pool = g.nodes.get("pool")
    ss = g.graph.get("sockstat", {})
    mem = []
    if pool and len(pool["tcp_mem"]) == 3:
        lo, pr, hi = pool["tcp_mem"]
        mem.append(f"TCP memory in use: <b>{pool['bytes']} B</b> ({pool['pages']} pages; peak {pool['peak']} B). "
                   f"It is kernel memory that is never paged out; tcp_mem = {lo} / {pr} / {hi} pages "
                   f"(no pressure / pressure / hard limit)" + (" &mdash; <b>under pressure</b>" if pool["pressure"] else "") + ".")
    elif pool:
        mem.append(f"{E(pool.get('name', 'kernel memory'))} in use: <b>{pool['bytes']} B</b> (peak {pool['peak']} B) "
                   f"of a limit of {pool['tcp_mem'][0]} B; kernel memory that is never paged out.")
    if ss:
        mem.append("/proc/net/sockstat TCP: " + E(" ".join(f"{k} {v}" for k, v in ss.items())))
    if g.graph.get("mib"):
        mem.append("counters: " + E(" ".join(f"{k} {v}" for k, v in sorted(g.graph["mib"].items()))))
    out.append("<h3>Memory and counters</h3>" + "".join(f"<p>{m}</p>" for m in mem))
    return "\n".join(out)


def _alive(g: nx.DiGraph, proc: str) -> bool:
    n = f"proc:{proc}"
    return bool(g.nodes[n].get("alive", True)) if n in g else True


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

JS = r"""
(function () {
  var D = JSON.parse(document.getElementById('data').textContent);
  var n = D.steps.length, cur = 0, chosen = null;
  var slider = document.getElementById('step-slider');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#timeline tbody tr'));
  var select = document.getElementById('conn-select');
  var segs = Array.prototype.slice.call(document.querySelectorAll('#ladder g.seg, #ladder g.state'));
  function highlight() {
    var svg = document.querySelector('#states svg');
    if (!svg) return;
    Array.prototype.forEach.call(svg.querySelectorAll('.hl, .cur'), function (el) {
      el.classList.remove('hl'); el.classList.remove('cur');
    });
    var tid = select.value, t = D.tracks[tid], text = [], last = null;
    if (!t) { document.getElementById('path-text').textContent = ''; return; }
    t.path.forEach(function (p) {
      if (p.step > cur) return;
      if (p.edge) { var e = svg.getElementById ? svg.getElementById(p.edge) : document.getElementById(p.edge);
        if (e) e.classList.add('hl'); }
      p.nodes.forEach(function (id) { var el = document.getElementById(id); if (el) el.classList.add('hl'); });
      text.push('step ' + p.step + ': ' + p.text);
      last = p;
    });
    if (last) { var ln = document.getElementById(last.nodes[last.nodes.length - 1]); if (ln) ln.classList.add('cur'); }
    document.getElementById('path-text').textContent = text.length ? text.join('   ') : 'no transition yet';
  }
  function show(i, fromUser) {
    i = Math.max(0, Math.min(n - 1, i | 0));
    cur = i;
    var s = D.steps[i];
    slider.value = i;
    document.getElementById('step-label').textContent = s.title;
    document.getElementById('explanation').innerHTML = s.explain;
    document.getElementById('tables').innerHTML = s.tables;
    document.getElementById('graph').innerHTML = D.graphs[s.graph];
    rows.forEach(function (r, k) {
      r.classList.toggle('current', k === i);
      r.classList.toggle('future', k > i);
    });
    if (rows[i] && fromUser !== 'row' && rows[i].scrollIntoView) rows[i].scrollIntoView({block: 'nearest'});
    var firstSeg = null;
    segs.forEach(function (g) {
      var k = +g.getAttribute('data-step');
      g.classList.toggle('cur', k === i);
      g.classList.toggle('future', k > i);
      if (k === i && !firstSeg && g.classList.contains('seg')) firstSeg = g;
    });
    var lb = document.getElementById('ladder');
    if (firstSeg && lb && firstSeg.getBBox) {
      var y = firstSeg.getBBox().y;
      if (y < lb.scrollTop || y > lb.scrollTop + lb.clientHeight - 40) lb.scrollTop = Math.max(0, y - 60);
    }
    if (!chosen && s.track && D.tracks[s.track]) select.value = s.track;
    highlight();
    if (history.replaceState) history.replaceState(null, '', '#step=' + i);
  }
  slider.addEventListener('input', function () { show(+slider.value, 'slider'); });
  slider.addEventListener('change', function () { show(+slider.value, 'slider'); });
  document.getElementById('prev').addEventListener('click', function () { show(cur - 1); });
  document.getElementById('next').addEventListener('click', function () { show(cur + 1); });
  rows.forEach(function (r) { r.addEventListener('click', function () { show(+r.getAttribute('data-step'), 'row'); }); });
  segs.forEach(function (g) {
    if (g.classList.contains('seg')) g.addEventListener('click', function () { show(+g.getAttribute('data-step'), 'wire'); });
  });
  select.addEventListener('change', function () { chosen = select.value; highlight(); });
  document.getElementById('graph').addEventListener('click', function () { this.classList.toggle('fit'); });
  document.addEventListener('keydown', function (ev) {
    if (ev.target && (ev.target.tagName === 'SELECT' || ev.target.tagName === 'INPUT' && ev.target.type !== 'range')) return;
    if (ev.key === 'ArrowRight' || ev.key === 'j') { show(cur + 1); ev.preventDefault(); }
    if (ev.key === 'ArrowLeft' || ev.key === 'k') { show(cur - 1); ev.preventDefault(); }
    if (ev.key === 'Home') { show(0); ev.preventDefault(); }
    if (ev.key === 'End') { show(n - 1); ev.preventDefault(); }
  });
  window.socksimShow = show;
  var m = /step=(\d+)/.exec(location.hash || '');
  show(m ? +m[1] : 0);
})();
"""
