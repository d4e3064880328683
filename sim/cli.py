"""The ``socksim`` command."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__

EXIT_OK, EXIT_DIFF, EXIT_BAD_INPUT = 0, 1, 2


def scenarios_dir() -> Path:
    """The bundled scenarios: ``scenarios/`` of the checkout (or $SOCKSIM_SCENARIOS)."""
    env = os.environ.get("SOCKSIM_SCENARIOS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "scenarios"


def _bad(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _write_json(path: str, data: Any, force: bool = True) -> str | None:
    p = Path(path)
    if p.is_dir():
        return f"{path}: is a directory, expected a file path for the JSON output"
    if not p.parent.exists():
        return f"{path}: the folder {p.parent} does not exist"
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, p)
    except OSError as e:
        return f"{path}: cannot write: {e.strerror}"
    return None


def _load(path: str):
    from .scenario.loader import ScenarioError, load_file

    try:
        return load_file(path), None
    except ScenarioError as e:
        return None, str(e)


def cmd_run(args: argparse.Namespace) -> int:
    from .engine import SimBackend
    from .report.terminal import print_summary, print_timeline
    from .scenario.runner import run

    sc, err = _load(args.file)
    if err:
        return _bad(err)
    seed = args.seed if args.seed is not None else sc.seed
    from .personality import PERSONALITIES

    if args.personality and args.personality not in PERSONALITIES:
        return _bad(f"--personality: unknown personality {args.personality!r}; "
                    f"expected one of: {', '.join(sorted(PERSONALITIES))}")
    if args.compare_personalities:
        from .report.personalities import compare_personalities

        return compare_personalities(sc, seed, quiet=args.quiet)
    from .scenario.loader import ScenarioError

    try:
        trace = run(sc, SimBackend(seed=seed), seed=seed, personality=args.personality)
    except ScenarioError as e:
        return _bad(str(e))
    if args.json:
        e = _write_json(args.json, trace.to_dict())
        if e:
            return _bad(e)
    if args.html:
        if Path(args.html).is_dir():
            return _bad(f"{args.html}: is a directory, expected a file path for the HTML page")
        if importlib.util.find_spec("sim.report.page") is None:
            return _bad("--html needs sim.report.page, which this installation lacks")
        from .report.page import write_page

        write_page(sc, trace, args.html, seed=seed)
    if not args.quiet:
        print_timeline(trace, sc, explain=args.explain)
        if args.wire:
            from .report.terminal import print_wire

            print_wire(trace)
        print_summary(trace)
        if args.explain and importlib.util.find_spec("sim.explain") is not None:
            from .explain import print_explanations

            print_explanations(sc, trace, seed=seed)
    failed = trace.failed_expectations
    if failed:
        print(f"{len(failed)} expectation(s) not met: steps "
              + ", ".join(str(s.index) for s in failed), file=sys.stderr)
        return EXIT_DIFF
    return EXIT_OK


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from .compare import compare_traces
    from .engine import SimBackend
    from .real.topology import real_backend_for
    from .report.terminal import print_side_by_side
    from .scenario.runner import run

    sc, err = _load(args.file)
    if err:
        return _bad(err)
    pers = {h.personality for h in ([sc.host] if not sc.hosts else sc.hosts.values())} - {"linux"}
    if pers:
        return _bad(f"{args.file}: the {pers.pop()} personality cannot be cross-checked: "
                    "the real kernel here is Linux")
    real_backend = real_backend_for(sc)
    ok, why = type(real_backend).available()
    if not ok:
        return _bad(f"cannot run on the real kernel here: {why}")
    seed = args.seed if args.seed is not None else sc.seed
    from .scenario.loader import ScenarioError

    try:
        sim_trace = run(sc, SimBackend(seed=seed), seed=seed)
        real_trace = run(sc, real_backend)
    except ScenarioError as e:
        return _bad(str(e))
    except KeyboardInterrupt:
        print("interrupted: the namespace and its processes were cleaned up", file=sys.stderr)
        return 130
    result = compare_traces(sc, sim_trace, real_trace)
    if args.json:
        e = _write_json(args.json, {"verdict": result.to_dict(), "sim": sim_trace.to_dict(),
                                    "real": real_trace.to_dict()})
        if e:
            return _bad(e)
    if not args.quiet:
        print_side_by_side(sc, sim_trace, real_trace, result)
    return EXIT_OK if result.agree else EXIT_DIFF


def cmd_list(args: argparse.Namespace) -> int:
    from .scenario.loader import ScenarioError, load_file

    root = scenarios_dir()
    files = sorted(p for p in root.rglob("*.yaml"))
    if not files:
        print(f"no scenarios under {root}")
        return EXIT_OK
    for f in files:
        rel = f.relative_to(root)
        try:
            sc = load_file(f)
            desc = (sc.description.strip().splitlines() or [""])[0]
            slow = " [slow]" if sc.slow else ""
            print(f"{str(rel):48s} {desc}{slow}")
        except ScenarioError as e:
            print(f"{str(rel):48s} (invalid: {e.message})")
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from .coverage import bundled, coverage, needs_crosscheck
    from .kernel.rules import RULES
    from .kernel.tcp_states import TRANSITIONS
    from .report.terminal import console

    cov = coverage(bundled(scenarios_dir()))
    t = Table(title="rules of the model", box=box.SIMPLE_HEAD)
    t.add_column("rule")
    t.add_column("source", overflow="fold")
    t.add_column("cross-checked by", overflow="fold")
    missing = 0
    for rid in sorted(RULES):
        names = cov.rules.get(rid, [])
        if names:
            shown = _first(names)
        elif needs_crosscheck(rid):
            shown = "[bold red]none[/]"
            missing += 1
        else:
            shown = "[dim](cited source only: no such kernel here)[/]"
        t.add_row(rid, RULES[rid].cite, shown)
    console.print(t)
    console.print(f"{len(RULES)} rules; {missing} without a cross-checking scenario")
    rows = Table(title="rows of the TCP transition table (sim/kernel/tcp_states.py)", box=box.SIMPLE_HEAD)
    for col in ("state", "event", "new state", "exercised by"):
        rows.add_column(col, overflow="fold")
    idle = 0
    for (state, event), names in cov.rows.items():
        idle += not names
        rows.add_row(state.name, event, TRANSITIONS[(state, event)][0].name,
                     _first(names) if names else "[bold red]none[/]")
    console.print(rows)
    console.print(f"{len(cov.rows)} rows; {idle} exercised by no bundled scenario")
    for b in cov.bad:
        print(f"warning: {b}", file=sys.stderr)
    return EXIT_DIFF if missing or idle else EXIT_OK


def _first(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")


# Commands that live in their own modules: each module has register(subparsers), which adds its
# subcommand with set_defaults(func=...) returning an exit code (0 ok, 1 disagreement, 2 bad input).
EXTRA_COMMANDS = ("fuzz", "sweep", "report.command", "bench", "explain")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="socksim",
        description="Simulate the kernel's socket machinery and check it against the real kernel.")
    ap.add_argument("--version", action="version", version=f"socksim {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a scenario on the simulator and show its timeline",
                       description="Run a scenario file on the simulated kernel: a timeline of every "
                                   "call, its result and the kernel rule behind it.")
    r.add_argument("file", help="scenario .yaml file")
    r.add_argument("--json", metavar="PATH", help="also write the trace as JSON to PATH")
    r.add_argument("--seed", type=int, help="seed for the kernel's random choices (default: the scenario's)")
    r.add_argument("--explain", action="store_true", help="show the facts behind every outcome")
    r.add_argument("--personality", metavar="NAME", help="run under this personality (linux, windows) "
                   "instead of the scenario's")
    r.add_argument("--compare-personalities", action="store_true",
                   help="run under every personality and show the steps where they differ, with the rules")
    r.add_argument("--html", metavar="OUT.html", help="also write a self-contained page: timeline, "
                   "object graph and explanation at every step")
    r.add_argument("--wire", action="store_true", help="also draw the segments on the wire as a "
                   "ladder (sequence) diagram, each under the step that caused it")
    r.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("crosscheck", help="run a scenario on the simulator and on the real kernel, compare",
                       description="Run the scenario on the simulator and on this host's kernel (inside a "
                                   "private network namespace) and compare the traces step by step. "
                                   "Exit 0 when they agree, 1 when a step disagrees, 2 for bad input.")
    c.add_argument("file", help="scenario .yaml file")
    c.add_argument("--json", metavar="PATH", help="write both traces and the verdict as JSON to PATH")
    c.add_argument("--seed", type=int, help="seed for the simulator")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    c.set_defaults(func=cmd_crosscheck)

    ls = sub.add_parser("list", help="list the bundled scenarios", description="List the bundled scenarios.")
    ls.set_defaults(func=cmd_list)

    ru = sub.add_parser("rules", help="list the model's rules and their sources",
                        description="List every rule of the kernel model with its source.")
    ru.set_defaults(func=cmd_rules)
    for mod in EXTRA_COMMANDS:
        if importlib.util.find_spec(f"sim.{mod}") is None:
            continue
        importlib.import_module(f"sim.{mod}").register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
