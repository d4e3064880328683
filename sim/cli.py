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

EXIT_OK, EXIT_DIFF, EXIT_BAD_INPUT, EXIT_FAULT = 0, 1, 2, 3  # 128+N: stopped by signal N


def scenarios_dir() -> Path:
    """The bundled scenarios: ``scenarios/`` of the checkout (or $SOCKSIM_SCENARIOS)."""
    env = os.environ.get("SOCKSIM_SCENARIOS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "scenarios"


def _bad(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _write_json(path: str, data: Any, force: bool = False) -> str | None:
    """Write ``data`` as JSON to ``path`` atomically; the one-line problem, or None."""
    from .outfile import OutputError, write_file

    try:
        write_file(path, json.dumps(data, indent=2, default=str) + "\n", "the JSON output", force)
    except OutputError as e:
        return str(e)
    return None


def _check_outputs(args: argparse.Namespace, *outs: tuple[str, str]) -> str | None:
    """Before any work: every output named on the command line can be written (see sim.outfile)."""
    from .outfile import OutputError, check_file

    try:
        for attr, what in outs:
            if getattr(args, attr, None):
                check_file(getattr(args, attr), what, getattr(args, "force", False))
    except OutputError as e:
        return str(e)
    return None


def _load(path: str, args: argparse.Namespace | None = None, real: bool = False):
    """The scenario, or the one-line problem: bad input, or a projected cost above the ceiling
    (see sim.scenario.cost; a large but allowed cost is announced on stderr)."""
    from .scenario import cost
    from .scenario.loader import ScenarioError, load_file

    try:
        sc = load_file(path)
    except ScenarioError as e:
        return None, str(e)
    if args is not None:
        try:
            note = cost.check(sc, getattr(args, "max_connections", None), real)
        except cost.TooCostly as e:
            return None, str(e)
        if note and not getattr(args, "quiet", False):
            print(f"note: {note}", file=sys.stderr)
    return sc, None


def _max_connections(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of connections, found {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more connections, found {n}")
    return n


def add_cost_flag(p: argparse.ArgumentParser) -> None:
    from .scenario.cost import MAX_CONNECTIONS

    p.add_argument("--max-connections", type=_max_connections, metavar="N",
                   help=f"run a scenario whose load steps project more than {MAX_CONNECTIONS:,} "
                        "connections (the default ceiling)")


def cmd_run(args: argparse.Namespace) -> int:
    from .report.terminal import print_summary, print_timeline

    sc, err = _load(args.file, args)
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
    if args.html and importlib.util.find_spec("sim.report.page") is None:
        return _bad("--html needs sim.report.page, which this installation lacks")
    e = _check_outputs(args, ("json", "the JSON trace"), ("html", "the HTML page"))
    if e:
        return _bad(e)
    from .scenario.loader import ScenarioError

    try:
        trace = _run_with_progress(sc, seed, args)
    except ScenarioError as e:
        return _bad(str(e))
    if args.json:
        e = _write_json(args.json, trace.to_dict(), args.force)
        if e:
            return _bad(e)
    if args.html:
        from .report.page import write_page

        write_page(sc, trace, args.html, seed=seed, force=args.force)
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


RUN_PROGRESS_CONNECTIONS = 20_000  # a run projected above this shows a progress bar on a terminal


def _run_with_progress(sc: Any, seed: int, args: argparse.Namespace) -> Any:
    """Run on the simulator; a large run (many connections) shows a progress bar, on a terminal
    only (nothing when stderr is piped, nothing with -q)."""
    from .engine import SimBackend
    from .scenario import cost
    from .scenario.runner import run

    work = cost.projected_connections(sc)
    if args.quiet or work < RUN_PROGRESS_CONNECTIONS or not sys.stderr.isatty():
        return run(sc, SimBackend(seed=seed), seed=seed, personality=args.personality)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .sweep.command import whole_run_eta
    from .sweep.point import _progress_backend

    with Progress(TextColumn(f"[bold]run[/bold] {sc.name}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}% of {task.total:,.0f} connections"),
                  TimeElapsedColumn(), TextColumn("eta"), whole_run_eta(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("run", total=work)
        backend = _progress_backend(seed, lambda d: bar.advance(task, d))
        return run(sc, backend, seed=seed, personality=args.personality)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    from .compare import compare_traces
    from .engine import SimBackend
    from .real.topology import real_backend_for
    from .report.terminal import print_side_by_side
    from .scenario.runner import run

    sc, err = _load(args.file, args, real=True)
    if err:
        return _bad(err)
    pers = {h.personality for h in ([sc.host] if not sc.hosts else sc.hosts.values())} - {"linux"}
    if pers:
        return _bad(f"{args.file}: the {pers.pop()} personality cannot be cross-checked: "
                    "the real kernel here is Linux")
    e = _check_outputs(args, ("json", "the JSON traces and verdict"))
    if e:
        return _bad(e)
    real_backend = real_backend_for(sc)
    ok, why = type(real_backend).available()
    if not ok:
        print(f"fault: cannot run on the real kernel here (no private network namespace): {why}",
              file=sys.stderr)
        return EXIT_FAULT
    seed = args.seed if args.seed is not None else sc.seed
    from . import interrupt
    from .real.backend import RealBackendError
    from .scenario.loader import ScenarioError

    try:
        real_trace = run(sc, real_backend)
        # the model starts each step when the kernel did: real time passes between real steps
        sim_trace = run(sc, SimBackend(seed=seed), seed=seed, follow=real_trace)
    except ScenarioError as e:
        return _bad(str(e))
    except RealBackendError as e:  # a process died unasked, a step timed out: no verdict
        print(f"fault: {e}".splitlines()[0], file=sys.stderr)
        return EXIT_FAULT
    except KeyboardInterrupt as e:
        print(f"interrupted ({interrupt.name_of(e)}): the namespace and its processes were cleaned up",
              file=sys.stderr)
        return interrupt.exit_code(e)
    result = compare_traces(sc, sim_trace, real_trace)
    if args.json:
        e = _write_json(args.json, {"verdict": result.to_dict(), "sim": sim_trace.to_dict(),
                                    "real": real_trace.to_dict()}, args.force)
        if e:
            return _bad(e)
    if not args.quiet:
        print_side_by_side(sc, sim_trace, real_trace, result)
    return EXIT_OK if result.agree else EXIT_DIFF


def cmd_list(args: argparse.Namespace) -> int:
    from .scenario.loader import ScenarioError, load_file
    from .text import printable

    root = scenarios_dir()
    files = sorted(p for p in root.rglob("*.yaml"))
    if not files:
        print(f"no scenarios under {root}")
        return EXIT_OK
    for f in files:
        rel = f.relative_to(root)
        try:
            sc = load_file(f)
            desc = printable((sc.description.strip().splitlines() or [""])[0])
            slow = " [slow]" if sc.slow else ""
            print(f"{printable(rel):48s} {desc}{slow}")
        except ScenarioError as e:
            print(f"{printable(rel):48s} (invalid: {e.message})")
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
    r.add_argument("--force", action="store_true", help="replace existing output files")
    add_cost_flag(r)
    r.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("crosscheck", help="run a scenario on the simulator and on the real kernel, compare",
                       description="Run the scenario on the simulator and on this host's kernel (inside a "
                                   "private network namespace) and compare the traces step by step. "
                                   "Exit 0 when they agree, 1 when a step disagrees, 2 for bad input, "
                                   "3 for a fault of the real run (no namespace, a scenario process "
                                   "that died unasked, a step that timed out: no verdict), 128+N when "
                                   "stopped by signal N.")
    c.add_argument("file", help="scenario .yaml file")
    c.add_argument("--json", metavar="PATH", help="write both traces and the verdict as JSON to PATH")
    c.add_argument("--seed", type=int, help="seed for the simulator")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    add_cost_flag(c)
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
    from . import interrupt
    from .outfile import OutputError

    previous = interrupt.install()  # before anything slow: a signal while starting is handled too
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        if not getattr(args, "func", None):
            ap.print_help()
            return EXIT_BAD_INPUT
        return args.func(args)
    except BrokenPipeError:
        return EXIT_OK
    except OutputError as e:
        return _bad(str(e))
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: cleaned up on the way out
        print(f"interrupted ({interrupt.name_of(e)}): stopped; nothing was left running",
              file=sys.stderr)
        return interrupt.exit_code(e)
    except Exception as e:
        if interrupt.received() is None:
            raise
        # the interrupt surfaced wrapped in another exception (pydantic builds its validators
        # in native code, which reports a KeyboardInterrupt as a SchemaError)
        print(f"interrupted ({interrupt.name_of(e)}): stopped; nothing was left running",
              file=sys.stderr)
        return interrupt.exit_code(e)
    finally:
        interrupt.restore(previous)


if __name__ == "__main__":
    sys.exit(main())
