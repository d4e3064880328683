"""The kernel object graph and the TCP state diagram (networkx; DOT and SVG)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sim import graph as G
from sim.kernel import tcp_states as tcp
from sim.kernel.tcp_states import TRANSITIONS, State
from sim.scenario.loader import load_file, load_text

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

FORK = """
name: fork
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 7300}
  - {proc: server, call: listen, sock: srv, backlog: 5}
  - {proc: client, call: socket, as: c}
  - {proc: client, call: connect, sock: c, addr: 127.0.0.1, port: 7300}
  - {proc: server, call: accept, sock: srv, as: conn}
  - {proc: client, call: fork, as: child}
  - {proc: client, call: send, sock: c, bytes: 300}
  - {proc: server, call: recv, sock: conn, bytes: 1000}
  - {proc: server, call: close, sock: conn}
  - {proc: server, call: exit}
  - {proc: child, call: close, sock: c}
  - {proc: client, call: close, sock: c}
"""


@pytest.fixture(scope="module")
def fork():
    return G.record(load_text(FORK, "fork.yaml"))


def test_after_fork_fd_3_in_two_processes_is_one_open_file(fork):
    g = fork.after(6)
    files = {next(iter(g.successors(f"fd:{p}:3"))) for p in ("client", "child")}
    assert len(files) == 1
    f = files.pop()
    assert g.nodes[f]["kind"] == "file" and g.nodes[f]["refs"] == 2
    assert sorted(g.nodes[f]["holders"]) == ["child:3", "client:3"]
    tcb = next(iter(g.successors(f)))
    assert g.nodes[tcb]["state"] == "ESTABLISHED"
    assert {g.nodes[n]["kind"] for n in g.successors(tcb)} >= {"buffer"}
    # the child's close drops a reference; the connection is untouched
    g1, g2 = fork.before(11), fork.after(11)
    assert "fd:child:3" not in g2 and g2.nodes[f]["refs"] == 1
    assert g2.nodes[tcb]["state"] == g1.nodes[tcb]["state"] == "CLOSE_WAIT"


def test_time_wait_entry_holds_the_port_after_its_process_exited(fork):
    g = fork.after(10)  # server closed conn first, then exited
    assert g.nodes["proc:server"]["alive"] is False
    assert not [n for n in g.nodes if n.startswith("fd:server:")]
    owners = [g.nodes[n] for n in g.predecessors("port:tcp:7300")]
    tw = [o for o in owners if o["kind"] == "timewait"]
    assert len(tw) == 1 and tw[0]["state"] == "FIN_WAIT2"  # the orphan waits for the client's FIN
    g2 = fork.after(12)
    tw = [g2.nodes[n] for n in g2.predecessors("port:tcp:7300") if g2.nodes[n]["kind"] == "timewait"]
    assert tw and tw[0]["state"] == "TIME_WAIT" and tw[0]["origin_proc"] == "server"
    assert tw[0]["origin"].startswith("accepted connection conn of server")
    assert tw[0]["expires"] >= tw[0]["entry"] + 60


def test_buffers_are_charged_to_the_never_paged_pool(fork):
    g = fork.after(7)  # 300 bytes sent, unread by the server
    rcv = [n for n, d in g.nodes(data=True) if d.get("kind") == "buffer" and d["bytes"] == 300]
    assert rcv and all(g.has_edge(n, "pool") for n in rcv)
    assert g.nodes["pool"]["bytes"] >= 300
    assert "never paged out" in " ".join(G.node_lines("pool", g.nodes["pool"]))


def test_accept_queue_and_requests():
    lesson = next((ROOT / "scenarios" / "lessons").glob("07-*.yaml"))
    r = G.record(load_file(lesson))
    g = r.after(6)  # two connections completed, none accepted
    q = next(n for n, d in g.nodes(data=True) if d.get("kind") == "acceptq")
    assert g.nodes[q]["queued"] == 2 and g.nodes[q]["backlog"] == 1
    assert len(list(g.successors(q))) == 2


def test_changed_nodes_mark_what_a_step_did(fork):
    ch = G.changed_nodes(fork.before(6), fork.after(6))
    assert "proc:child" in ch and "fd:child:3" in ch
    assert not [n for n in ch if n.startswith("fd:server:")]


def test_connection_paths_follow_the_transition_table(fork):
    labels = {tid: info["label"] for tid, info in fork.tracks.items()}
    client = next(t for t, label in labels.items() if label.startswith("connection c of client"))
    path = [(t.src, t.event, t.dst) for t in fork.path(client)]
    assert path[:2] == [("CLOSE", "connect", "SYN_SENT"), ("SYN_SENT", "rcv_synack", "ESTABLISHED")]
    assert path[2:] == [("ESTABLISHED", "rcv_fin", "CLOSE_WAIT"), ("CLOSE_WAIT", "close", "LAST_ACK"),
                        ("LAST_ACK", "rcv_ack", "CLOSE")]
    acc = next(t for t, label in labels.items() if label.startswith("accepted connection conn"))
    apath = fork.path(acc)
    assert (apath[0].src, apath[0].event) == ("LISTEN", "rcv_syn")
    for t in fork.transitions:
        if t.event in ("recycled", "?"):
            continue
        assert (State[t.src], t.event) in TRANSITIONS, t


# ------------------------------------------------------------------------------- the state diagram


def test_state_diagram_is_generated_from_the_table():
    dr = G.state_drawing()
    labels = "\n".join(e.label for e in dr.edges)
    for (state, event), (new, _actions) in TRANSITIONS.items():
        assert event in labels
        assert dr.node(G.state_node_id(state.name)) is not None
    assert {n.id for n in dr.nodes} == {G.state_node_id(s.name) for s in State} | {G.state_node_id(G.END)}
    g = G.state_graph()
    assert g.number_of_edges() == len(TRANSITIONS)


def test_a_new_transition_shows_up_in_the_diagram(monkeypatch):
    before = G.to_dot(G.state_drawing())
    table = dict(TRANSITIONS)
    table[(State.LISTEN, "made_up_event")] = (State.SYN_SENT, ())
    monkeypatch.setattr(tcp, "TRANSITIONS", table)
    G.state_depths.cache_clear()
    try:
        after = G.to_dot(G.state_drawing())
    finally:
        G.state_depths.cache_clear()
    assert "made_up_event" not in before and "made_up_event" in after


def test_every_state_reachable_and_every_state_reaches_close():
    depth = G.state_depths()
    assert all(depth[s.name] < len(State) for s in State)
    g = G.state_graph()
    import networkx as nx

    for s in State:
        assert nx.has_path(g, s.name, "CLOSE")


def test_highlighted_path_in_dot_and_both_svgs(fork):
    acc = next(t for t, info in fork.tracks.items() if info.get("role") == "accepted")
    dr = G.state_drawing(fork.path(acc))
    hl = [e for e in dr.edges if "hl" in e.cls]
    assert {e.id for e in hl} >= {"tr-SYN_RECV-ESTABLISHED", "tr-ESTABLISHED-FIN_WAIT1", "tr-FIN_WAIT1-FIN_WAIT2",
                                  "tr-FIN_WAIT2-TIME_WAIT", "tr-LISTEN-LISTEN"}
    dot = G.to_dot(dr)
    assert 'id="tr-FIN_WAIT2-TIME_WAIT"' in dot and "penwidth=3" in dot
    engines = ["python"] + (["dot"] if G.have_dot() else [])
    for engine in engines:
        svg = G.to_svg(dr, engine=engine)
        root = ET.fromstring(G.standalone(svg))
        ids = {el.get("id") for el in root.iter() if el.get("id")}
        assert "st-ESTABLISHED" in ids and "tr-ESTABLISHED-FIN_WAIT1" in ids, engine
        assert f'data-engine="{engine}"' in svg


def test_object_graph_svg_both_engines(fork):
    g = fork.after(12)
    dr = G.object_drawing(g, G.changed_nodes(fork.before(12), g))
    for engine in ["python"] + (["dot"] if G.have_dot() else []):
        svg = G.to_svg(dr, engine=engine)
        root = ET.fromstring(G.standalone(svg))
        text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
        assert "TIME_WAIT entry" in text and "TCP port 7300" in text, engine


def test_docs_state_diagram_is_up_to_date():
    committed = ROOT / "docs" / "state-diagram.dot"
    dr = G.state_drawing(title="TCP states (generated from sim/kernel/tcp_states.py TRANSITIONS)")
    assert committed.read_text(encoding="utf-8") == G.to_dot(dr), \
        "regenerate with: python -m sim.graph state-diagram docs/state-diagram"


def test_many_time_wait_entries_are_summarised():
    text = """
name: many
host: {sysctls: {ip_local_port_range: [40000, 40999]}}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9100}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9100, rate: 100, duration: 1, accept_proc: server, listener: srv}
"""
    r = G.record(load_text(text, "many.yaml"))
    g = r.after(3)
    tws = [n for n, d in g.nodes(data=True) if d.get("kind") == "timewait"]
    assert len(tws) == G.MAX_OBJECTS and "more:tw" in g
    assert g.nodes["more:tw"]["count"] >= 50
