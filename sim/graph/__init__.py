"""networkx views of the model: the kernel object graph at any step, and the TCP state diagram.

The **object graph** shows what the kernel holds after a step, the way a learner should picture
it, so that, for example, fd 3 in a parent and in its forked child point to one open file, and a
TIME_WAIT entry keeps owning port 8080 after the process that made it has exited.

The package is split by concept:

- ``recording``: :func:`record` re-runs a scenario, subscribed to the kernel's events
  (sim/kernel/tracepoints.py) for the transitions, and snapshots the kernel's public tables
  around every trace record; no kernel function is wrapped or replaced;
- ``objects``: the object graph of one moment (a networkx ``DiGraph``);
- ``drawing``: what a view draws, independent of the renderer, and the object graph's drawing;
- ``states``: the state diagram, generated from :data:`sim.kernel.tcp_states.TRANSITIONS`;
- ``layout``: the pure-Python SVG layout used without Graphviz;
- ``render``: DOT and SVG output, files, and the command line::

    python -m sim.graph state-diagram docs/state-diagram     # writes .dot and .svg
"""

from __future__ import annotations

from .drawing import RANK, STATE_FILL, DEdge, DNode, Drawing, node_lines, object_drawing
from .layout import layout_svg
from .objects import (
    MAX_OBJECTS, addr_text, changed_nodes, holders_of, kernel_graph, port_owners, state_name,
)
from .recording import Recording, Transition, record, track_label
from .render import have_dot, main, standalone, to_dot, to_svg, write_graph, write_state_diagram
from .states import (
    END, state_depths, state_drawing, state_edge_id, state_graph, state_node_id, transition_edge_id,
    transition_node_ids,
)

__all__ = [
    "DEdge", "DNode", "Drawing", "END", "MAX_OBJECTS", "RANK", "Recording", "STATE_FILL", "Transition",
    "addr_text", "changed_nodes", "have_dot", "holders_of", "kernel_graph", "layout_svg", "main",
    "node_lines", "object_drawing", "port_owners", "record", "standalone", "state_depths",
    "state_drawing", "state_edge_id", "state_graph", "state_name", "state_node_id", "to_dot", "to_svg",
    "track_label", "transition_edge_id", "transition_node_ids", "write_graph", "write_state_diagram",
]
