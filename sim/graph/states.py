"""The TCP state diagram, generated from :data:`sim.kernel.tcp_states.TRANSITIONS` (never drawn by hand)."""

from __future__ import annotations

import functools
from typing import Iterable

import networkx as nx

from ..kernel import tcp_states
from ..kernel.tcp_states import State
from .drawing import DEdge, DNode, Drawing, STATE_FILL
from .recording import Transition


@functools.lru_cache(maxsize=1)
def state_depths() -> dict[str, int]:
    """Breadth-first distance of every state from CLOSE over the transition table."""
    adj: dict[str, list[str]] = {}
    for (s, _e), (d, _a) in tcp_states.TRANSITIONS.items():
        adj.setdefault(s.name, []).append(d.name)
    depth = {"CLOSE": 0}
    todo = ["CLOSE"]
    while todo:
        s = todo.pop(0)
        for d in adj.get(s, []):
            if d not in depth:
                depth[d] = depth[s] + 1
                todo.append(d)
    for s in State:
        depth.setdefault(s.name, max(depth.values()) + 1)
    return depth


END = "CLOSE_end"  # CLOSE drawn a second time at the bottom, as in RFC 793's figure 6


def state_node_id(name: str) -> str:
    return f"st-{name}"


def _edge_dst(src: str, dst: str, depth: dict[str, int]) -> str:
    return END if dst == "CLOSE" and depth.get(src, 0) >= 2 else dst


def state_edge_id(src: str, dst: str) -> str:
    depth = state_depths()
    return f"tr-{src}-{_edge_dst(src, dst, depth)}"


def transition_edge_id(t: Transition) -> str | None:
    """The diagram edge a recorded transition took (None when the table has no such edge)."""
    try:
        key = (State[t.src], t.event)
    except KeyError:
        return None
    if key not in tcp_states.TRANSITIONS:
        return None
    return state_edge_id(t.src, tcp_states.TRANSITIONS[key][0].name)


def transition_node_ids(t: Transition) -> list[str]:
    """The diagram nodes a recorded transition touches (source, and destination as drawn)."""
    depth = state_depths()
    out = [state_node_id(t.src)]
    if t.dst in State.__members__:
        dst = t.dst
        eid = transition_edge_id(t)
        out.append(state_node_id(eid.split("-", 2)[2] if eid else _edge_dst(t.src, dst, depth)))
    return out


def state_graph() -> nx.MultiDiGraph:
    """The TCP state machine as a networkx graph: one edge per (state, event) of the table."""
    g = nx.MultiDiGraph()
    for s in State:
        g.add_node(s.name)
    for (s, event), (d, actions) in tcp_states.TRANSITIONS.items():
        g.add_edge(s.name, d.name, key=event, event=event, actions=list(actions))
    return g


def state_drawing(path: Iterable[Transition] | None = None, title: str = "") -> Drawing:
    """The state diagram, generated from TRANSITIONS; the transitions of ``path`` highlighted."""
    depth = state_depths()
    g = state_graph()
    path = list(path or [])
    hl_edges = {e for e in (transition_edge_id(t) for t in path) if e}
    hl_nodes = set()
    for t in path:
        hl_nodes.update(transition_node_ids(t))
    dr = Drawing("tcp_states", rankdir="TB", title=title)
    order = sorted(State, key=lambda s: (depth[s.name], s.value))
    for s in order:
        nid = state_node_id(s.name)
        dr.nodes.append(DNode(nid, [s.name], fill=STATE_FILL.get(s.name, "#fff"), shape="ellipse",
                              rank=depth[s.name], cls="state" + (" hl" if nid in hl_nodes else ""),
                              color="#d62728" if nid in hl_nodes else "#444444",
                              penwidth=3.0 if nid in hl_nodes else 1.2))
    end_rank = max(depth.values()) + 1
    nid = state_node_id(END)
    dr.nodes.append(DNode(nid, ["CLOSE"], fill=STATE_FILL["CLOSE"], shape="ellipse", rank=end_rank,
                          cls="state" + (" hl" if nid in hl_nodes else ""),
                          color="#d62728" if nid in hl_nodes else "#444444",
                          penwidth=3.0 if nid in hl_nodes else 1.2))
    pairs: dict[tuple[str, str], list[str]] = {}
    for s, d, data in g.edges(data=True):
        dst = _edge_dst(s, d, depth)
        acts = data["actions"]
        pairs.setdefault((s, dst), []).append(data["event"] + (f" / {', '.join(acts)}" if acts and s != d else ""))
    for (s, d), labels in pairs.items():
        eid = f"tr-{s}-{d}"
        on = eid in hl_edges
        dr.edges.append(DEdge(state_node_id(s), state_node_id(d), label="\n".join(labels), id=eid,
                              color="#d62728" if on else "#777777", penwidth=3.0 if on else 1.0,
                              cls="tr" + (" hl" if on else "")))
    return dr
