"""``socksim explain`` and ``socksim run --explain``: explanations on the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..graph import Recording
from .explainer import Explainer
from .text import render_text


def print_explanations(scenario: Any, trace: Any = None, seed: int = 0, steps: list[int] | None = None,
                       whatif: bool = True, out: Any = None, personality: str | None = None) -> None:
    """Print the explanation of every step (or of ``steps``); the hook for ``socksim run --explain``.

    The scenario is re-run with ``seed`` (and ``personality``, default: the trace's or the
    scenario's) so that the kernel can be read around each step.
    """
    out = out or sys.stdout
    if personality is None and trace is not None and getattr(trace, "personality", None) != \
            getattr(getattr(scenario, "host", None), "personality", None):
        personality = trace.personality
    ex = Explainer(scenario, seed=seed, whatif=whatif, personality=personality)
    idx = steps if steps is not None else range(len(ex.trace.steps))
    if steps is None:
        ex.prefetch_whatifs()  # every step's what-ifs: run them forked from one base run
    for i in idx:
        print(render_text(ex.explain(i)), file=out)
        print(file=out)


def _find_track(r: Recording, spec: str) -> str | None:
    """A connection by tcb id, 'proc:name', 'proc:fd', or part of its label."""
    if spec in r.tracks:
        return spec
    if ":" in spec:
        p, n = spec.split(":", 1)
        for tid, info in r.tracks.items():
            if info.get("proc") == p and (info.get("name") == n or str(info.get("fd")) == n):
                return tid
    for tid, info in r.tracks.items():
        if spec in (info.get("label") or ""):
            return tid
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    from .. import graph as G

    def bad(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    from ..outfile import OutputError, check_file

    try:  # every output can be written: found now, before the work
        for path, what in ((args.json, "the explanations"), (args.graph, "the object graph"),
                           (args.states, "the state diagram")):
            if path:
                check_file(path, what, args.force)
    except OutputError as e:
        return bad(str(e))
    if not args.file:
        if not args.states:
            return bad("give a scenario FILE (or --states OUT to write the plain state diagram)")
        G.write_graph(G.state_drawing(title="TCP states (generated from sim/kernel/tcp_states.py TRANSITIONS)"),
                      args.states, force=args.force)
        print(f"wrote {args.states}")
        return 0
    from ..scenario.loader import ScenarioError, load_file

    try:
        sc = load_file(args.file)
    except ScenarioError as e:
        return bad(str(e))
    seed = args.seed if args.seed is not None else sc.seed
    if args.personality:
        from ..personality import PERSONALITIES

        if args.personality not in PERSONALITIES:
            return bad(f"--personality: unknown personality {args.personality!r}; "
                       f"expected one of: {', '.join(sorted(PERSONALITIES))}")
    ex = Explainer(sc, seed=seed, whatif=not args.no_whatif, personality=args.personality)
    n = len(ex.trace.steps)
    steps = args.step if args.step else list(range(n))
    for s in steps:
        if not 0 <= s < n:
            return bad(f"--step {s}: the trace has steps 0..{n - 1}")
    if not args.step:
        ex.prefetch_whatifs()  # every step's what-ifs: run them forked from one base run
    exps = [ex.explain(s) for s in steps]
    if args.json:
        from ..outfile import write_file

        write_file(args.json, json.dumps([e.to_dict() for e in exps], indent=2, default=str) + "\n",
                   "the explanations", args.force)
    at = steps[-1]
    if args.graph:
        g = ex.r.after(at)
        dr = G.object_drawing(g, G.changed_nodes(ex.r.before(at), g), title=f"after step {at}: {exps[-1].what}")
        G.write_graph(dr, args.graph, force=args.force)
    if args.states:
        tid = _find_track(ex.r, args.conn) if args.conn else ex.r.step_sock.get(at)
        if args.conn and tid is None:
            labels = "; ".join(f"{k}: {v.get('label')}" for k, v in ex.r.tracks.items())
            return bad(f"--conn {args.conn}: no such connection (known: {labels})")
        path = ex.r.path(tid, upto=at) if tid else []
        title = f"path of the {ex.r.tracks.get(tid, {}).get('label', tid)} up to step {at}" if tid else ""
        G.write_graph(G.state_drawing(path, title=title), args.states, force=args.force)
    if not args.quiet:
        for e in exps:
            print(render_text(e))
            print()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain", help="why a step turned out as it did, and what would have changed it",
        description="Explain steps of a scenario: the rule that decided each outcome and its source, "
                    "the facts it looked at, the kernel's tables before the step, and what-if variants "
                    "of the scenario re-run on the model. Optionally write the kernel object graph and "
                    "the TCP state diagram (DOT or SVG, by file extension).")
    p.add_argument("file", nargs="?", help="scenario .yaml file")
    p.add_argument("--step", type=int, action="append", metavar="N",
                   help="the step to explain (repeatable; default: every step)")
    p.add_argument("--seed", type=int, help="seed for the kernel's random choices (default: the scenario's)")
    p.add_argument("--personality", metavar="NAME", help="run under this personality (linux, windows) "
                   "instead of the scenario's")
    p.add_argument("--json", metavar="PATH", help="also write the explanations as JSON")
    p.add_argument("--graph", metavar="OUT", help="write the kernel object graph after the (last) step: .dot or .svg")
    p.add_argument("--states", metavar="OUT", help="write the TCP state diagram with the path of a connection: .dot or .svg")
    p.add_argument("--conn", metavar="PROC:NAME", help="the connection whose path --states highlights "
                   "(default: the step's socket)")
    p.add_argument("--no-whatif", action="store_true", help="skip the what-if re-runs")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_explain)
