"""The `socksim sweep` command: executors, progress, the table and the output files."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable

from .params import (
    EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, SWEEP_KIND, SWEEP_SCHEMA, SweepError, build_grid,
    show_value, validate_point,
)
from ..outfile import AtomicFile, OutputError, check_file, write_file
from .point import _init_worker, _plain, point_work, result_line, run_point


# ----------------------------------------------------------------------------- executors


class _Inline:
    """Runs tasks in this process, one by one (``--jobs 1``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _local_executor(jobs: int, progress: bool) -> tuple[Any, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["sim.sweep", "sim.scenario.runner", "sim.engine"])
        _quiet_helpers()
    queue = ctx.Queue() if progress else None
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(queue,))
    return ex, queue


def _quiet_helpers() -> None:
    """Start multiprocessing's fork server and resource tracker with stderr on /dev/null: a
    worker stopped by an interrupt must not print a traceback (a worker's own errors come back
    through its future and are reported as the point's error)."""
    from multiprocessing import forkserver, resource_tracker

    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
        forkserver.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _dask_executor(address: str, timeout: float) -> tuple[Any, Any]:
    if not re.match(r"^(tcp|tls|ucx|ws|wss)://[^\s/]+(:\d+)?/?$", address):
        raise SweepError(f"--scheduler {address!r}: expected a Dask scheduler address such as tcp://HOST:8786")
    try:
        from distributed import Client
    except ImportError:
        raise SweepError("--scheduler needs Dask: pip install 'socksim[dask]'") from None
    import threading

    # The client's handshake is bounded here, not by the client: a peer that accepts the
    # connection and never answers (or answers with other bytes) is an error within the timeout.
    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = Client(address, timeout=timeout, set_as_default=False)
        except BaseException as e:  # noqa: BLE001 -- reported below as one line
            box["error"] = e

    t = threading.Thread(target=connect, name="dask-connect", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if t.is_alive() or not box:
        raise SweepError(f"cannot reach the Dask scheduler at {address}: no answer within "
                         f"{timeout:g} s (--connect-timeout)")
    e = box.get("error")
    if e is not None:
        if isinstance(e, KeyboardInterrupt):
            raise e
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        kind = "cannot reach" if isinstance(e, (OSError, TimeoutError)) else "no Dask scheduler answers at"
        raise SweepError(f"{kind} the Dask scheduler at {address}: {first}" if kind == "cannot reach" else
                         f"{kind} {address}: the peer answered with something else ({type(e).__name__}: {first})")
    client = box["client"]
    return client.get_executor(pure=False), client


# ----------------------------------------------------------------------------- the command


def _fmt_s(v: Any) -> str:
    return "never" if v is None else f"{v:.3f} s" if v < 100 else f"{v:.1f} s"


def _fmt_n(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return f"{v:,}"


def _fmt_bytes(v: Any) -> str:
    if v is None:
        return "-"
    for unit, f in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if v >= f:
            return f"{v / f:.1f} {unit}"
    return f"{v} B"


def print_table(params: list[dict[str, Any]], results: list[dict[str, Any]], file: Any = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False, width=None if (file or sys.stdout).isatty() else 200)
    t = Table(box=box.SIMPLE_HEAD)
    for p in params:
        t.add_column(p["name"], justify="right")
    for title in ("first port error", "estimate", "peak TIME_WAIT", "peak sock mem", "accepted",
                  "refused", "reset", "ok / attempts"):
        t.add_column(title, justify="right")
    for r in results:
        cells = [show_value(r["params"][p["name"]]) for p in params]
        if "error" in r:
            cells += [f"[red]failed: {r['error']}[/red]"] + [""] * 7
            t.add_row(*cells)
            continue
        m, e = r["metrics"], r.get("estimate") or {}
        first = _fmt_s(m["first_port_error_at"])
        if m["first_port_error"]:
            first += f" {m['first_port_error']}"
        elif m["first_port_error_time_unknown"]:
            first = "after another error"
        cells += [first, _fmt_s(e.get("exhaustion_at")) if e else "-", _fmt_n(m["time_wait_peak"]),
                  _fmt_bytes(m["tcp_mem_peak_bytes"]), _fmt_n(m["accepted"]), _fmt_n(m["refused"]),
                  _fmt_n(m["reset"]), f"{_fmt_n(m['ok'])} / {_fmt_n(m['attempts'])}"]
        t.add_row(*cells)
    console.print(t)


class _OrderedWriter:
    """Writes JSON lines in grid order as results arrive in any order."""

    def __init__(self, fh: Any):
        self.fh, self.next, self.held = fh, 0, {}

    def add(self, res: dict[str, Any]) -> None:
        self.held[res["index"]] = res
        while self.next in self.held:
            self.fh.write(json.dumps(result_line(self.held.pop(self.next)), sort_keys=False) + "\n")
            self.fh.flush()
            self.next += 1

    def flush_finished(self) -> None:
        """After an interrupt: the finished points that wait for an earlier one are written too."""
        for i in sorted(self.held):
            self.fh.write(json.dumps(result_line(self.held.pop(i)), sort_keys=False) + "\n")
        self.fh.flush()


def _make_folder(p: Path, path: str) -> None:
    """An output file's folder is created when missing (``-o runs/ports.json`` in a fresh clone)."""
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"{path}: cannot create the folder {p.parent}: {e.strerror}") from None



def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        return _sweep(args)
    except (SweepError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _prepare(args: argparse.Namespace) -> tuple[Any, list, list, dict, int, list[float]]:
    """Everything that can fail on bad input, before any point runs."""
    from ..scenario.loader import ScenarioError, load_file

    if not args.param:
        raise SweepError("nothing to sweep: give at least one --param NAME=VALUES (e.g. --param rate=500..4000:500)")
    if args.jobs is not None and args.jobs < 1:
        raise SweepError(f"--jobs {args.jobs}: needs at least 1")
    if args.scheduler and args.jobs is not None:
        raise SweepError("--jobs is for local processes; with --scheduler the Dask cluster decides")
    if not args.connect_timeout > 0:
        raise SweepError(f"--connect-timeout {args.connect_timeout}: expected a positive number of seconds")
    try:
        sc = load_file(args.file)
    except ScenarioError as e:
        raise SweepError(str(e)) from None
    params, grid = build_grid(args.param)
    base = sc.model_dump(by_alias=True, mode="json")
    seed = args.seed if args.seed is not None else sc.seed
    # every point is validated before anything runs: a bad value fails fast, with its name
    from ..scenario import cost

    work = []
    for point in grid:
        psc = validate_point(base, point, sc.step_lines)
        try:
            cost.check(psc, args.max_connections)
        except cost.TooCostly as e:
            raise SweepError(f"the point {', '.join(f'{k}={show_value(v)}' for k, v in point.items())}: "
                             f"{str(e).split(': ', 1)[1]}") from None
        work.append(point_work(psc))
    # and every output can be written: found now, not after the last point (a missing folder
    # is created, as for -o runs/ports.json in a fresh clone)
    for path, what in ((args.jsonl, "the JSON lines"), (args.out, "the run file")):
        if path and path != "-":
            if not Path(path).is_dir():
                _make_folder(Path(path), path)
            check_file(path, what, args.force)
    return sc, params, grid, base, seed, work


def spread_order(n: int) -> list[int]:
    """0..n-1 in bit-reversed order (0, 4, 2, 6, 1, 5, 3, 7 for 8): every prefix spreads over the
    whole grid instead of sweeping one corner of it first. The remaining-time estimate
    extrapolates from the work done so far; a prefix of points that all cost alike per unit
    (e.g. every tcp_tw_reuse=0 point before any tcp_tw_reuse=2 one) would bias it."""
    bits = max(1, (n - 1).bit_length())
    order = sorted(range(1 << bits), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))
    return [i for i in order if i < n]


def _run_all(executor: Any, client: Any, queue: Any, tasks: list[dict[str, Any]], work: list[float],
             bar: _Progress, add: Callable[[dict[str, Any]], None], seed: int) -> None:
    """Run every task, in :func:`spread_order`, handing each result to ``add`` as it arrives."""
    params = {t["index"]: t["params"] for t in tasks}
    order = spread_order(len(tasks))
    tasks, work = [tasks[i] for i in order], [work[i] for i in order]
    bar.plan([t["index"] for t in tasks], work)
    if isinstance(executor, _Inline):
        inline_done: dict[int, float] = {}
        for t, w in zip(tasks, work):
            if bar.enabled:
                t = dict(t, _report=lambda d, i=t["index"]: (bar.advance(d, i), inline_done.__setitem__(i, inline_done.get(i, 0) + d)))
            res = run_point(t)
            bar.point_done(w - inline_done.get(t["index"], 0.0), t["index"])
            add(res)
        return
    futures = {executor.submit(run_point, t): (t["index"], w) for t, w in zip(tasks, work)}
    credited: dict[int, float] = {}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        if queue is not None:
            _drain(queue, bar, credited)
        for f in done:
            idx, w = futures[f]
            try:
                res = f.result()
            except Exception as e:  # noqa: BLE001 -- the worker could not run the task at all
                msg = f"{type(e).__name__}: {e}"
                if isinstance(e, (ModuleNotFoundError, ImportError)) and client is not None:
                    raise SweepError(f"the Dask workers cannot import socksim ({e}); install socksim "
                                     "on every worker") from None
                res = {"index": idx, "params": params[idx], "seed": seed, "error": msg}
            bar.point_done(max(0.0, w - credited.pop(idx, 0.0)), idx)
            add(res)


def _stop_executor(executor: Any, client: Any, interrupted: bool) -> None:
    if client is not None:
        executor.shutdown(wait=False)  # ClientExecutor cancels what has not run
        client.close(timeout=2)
    elif not isinstance(executor, _Inline):
        if interrupted:  # the points being run are abandoned: their workers are stopped now
            import multiprocessing

            for child in multiprocessing.active_children():
                child.kill()
        executor.shutdown(wait=not interrupted, cancel_futures=True)


def _sweep(args: argparse.Namespace) -> int:
    from .. import __version__, interrupt

    sc, params, grid, base, seed, work = _prepare(args)
    text = Path(args.file).read_text(encoding="utf-8")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    tasks = [{"index": i, "scenario": base, "params": point, "seed": seed,
              "step_lines": list(sc.step_lines), "progress": progress}
             for i, point in enumerate(grid)]
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    jsonl = None if not args.jsonl else sys.stdout if args.jsonl == "-" else AtomicFile(args.jsonl, "the JSON lines", args.force)
    writer = _OrderedWriter(jsonl) if jsonl else None

    def add(res: dict[str, Any]) -> None:
        results[res["index"]] = res
        if writer:
            writer.add(res)

    wall0 = time.monotonic()
    stopped: KeyboardInterrupt | None = None
    executor = client = queue = None
    desc: dict[str, Any] = {"kind": "dask", "scheduler": args.scheduler}
    try:
        if args.scheduler:
            executor, client = _dask_executor(args.scheduler, args.connect_timeout)
            for t in tasks:
                t["progress"] = False
        else:
            avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            jobs = min(args.jobs or avail, len(tasks))
            desc = {"kind": "local", "jobs": jobs}
            executor, queue = (_Inline(), None) if jobs == 1 else _local_executor(jobs, progress)
        with _Progress(progress, len(tasks), sum(work), desc.get("jobs", 0)) as bar:
            _run_all(executor, client, queue, tasks, work, bar, add, seed)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: keep the finished points
        stopped = e
    except BaseException:
        if isinstance(jsonl, AtomicFile):
            jsonl.abort()
        raise
    finally:
        if executor is not None:
            _stop_executor(executor, client, stopped is not None)
    wall = time.monotonic() - wall0
    done_results = [r for r in results if r is not None]
    if isinstance(jsonl, AtomicFile):
        if writer:
            writer.flush_finished()
        jsonl.commit()
    versions = {r.get("socksim") for r in done_results if r.get("socksim")}
    if versions - {__version__}:
        print(f"warning: points ran on socksim {', '.join(sorted(versions))}; this is {__version__}",
              file=sys.stderr)
    if args.out:
        run_file = {
            "kind": SWEEP_KIND,
            "schema": SWEEP_SCHEMA,
            "socksim": __version__,
            "scenario": {"name": sc.name, "file": str(args.file), "description": sc.description,
                         "sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text},
            "params": [{k: p[k] for k in ("name", "target", "field", "values", "spec")} for p in params],
            "seed": seed,
            "command": ["socksim", "sweep", str(args.file)] + [a for p in params for a in ("--param", p["spec"])]
                       + ([f"--seed={args.seed}"] if args.seed is not None else []),
            "points": [_plain(r) for r in done_results],
            "executor": desc,
            "timing": {"wall_seconds": round(wall, 3)},
        }
        if stopped is not None:
            run_file["interrupted"] = {"signal": interrupt.name_of(stopped), "points_done": len(done_results),
                                       "points": len(tasks)}
        write_file(args.out, json.dumps(run_file, indent=2, default=str) + "\n", "the run file", args.force)
    if stopped is not None:
        kept = [p for p in (args.out, args.jsonl) if p and p != "-"]
        print(f"interrupted ({interrupt.name_of(stopped)}): {len(done_results)} of {len(tasks)} points had "
              f"finished" + (f"; they are kept in {' and '.join(kept)}" if kept and done_results else
                             f"; {' and '.join(kept)} written with no points" if kept else ""),
              file=sys.stderr)
        return interrupt.exit_code(stopped)
    if not args.quiet and args.jsonl != "-":
        print_table(params, done_results)
        print(f"{len(done_results)} point(s) in {wall:.1f} s on {_describe(desc)}"
              + (f"; run file: {args.out}" if args.out else ""), file=sys.stderr)
    failed = [r for r in done_results if "error" in r]
    if failed:
        print(f"{len(failed)} point(s) failed; first: {failed[0]['error']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _describe(desc: dict[str, Any]) -> str:
    if desc["kind"] == "dask":
        return f"the Dask cluster at {desc['scheduler']}"
    return f"{desc['jobs']} local process{'es' if desc['jobs'] > 1 else ''}"


def _drain(queue: Any, bar: _Progress, credited: dict[int, float]) -> None:
    import queue as _q

    while True:
        try:
            idx, d = queue.get_nowait()
        except (_q.Empty, OSError, EOFError):
            return
        credited[idx] = credited.get(idx, 0.0) + d
        bar.advance(d, idx)


REPORT_EVERY = 0.25  # seconds between a running point's progress reports (sim/sweep/point.py)


def whole_run_eta(estimate: Callable[[float], float | None] | None = None) -> Any:
    """A remaining-time column from the whole run's average speed (elapsed x left / done), not
    from the last seconds' speed, which swings with the cost of the point being run; or from
    ``estimate(elapsed)`` (a sweep's: its points scheduled on its workers)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _Eta(ProgressColumn):
        def render(self, task: Any) -> Text:
            if not task.completed or not task.total or task.elapsed is None:
                return Text("-:--:--", style="progress.remaining")
            left = estimate(task.elapsed) if estimate is not None else None
            if left is None:
                left = task.elapsed * max(0.0, task.total - task.completed) / task.completed
            h, rest = divmod(int(left + 0.5), 3600)
            return Text(f"{h}:{rest // 60:02d}:{rest % 60:02d}", style="progress.remaining")

    return _Eta()


class _Progress:
    """A rich progress bar on stderr, in units of work (connections, see point_work); points
    done in its text."""

    def __init__(self, enabled: bool, points: int, work: float, jobs: int = 0):
        self.enabled, self.points, self.work, self.done = enabled, points, work, 0
        self.jobs = jobs  # local worker processes (0: unknown, e.g. a Dask cluster)
        self.order: list[int] = []  # point indices in the order they are handed out
        self.size: dict[int, float] = {}  # point index -> its work
        self.credit: dict[int, float] = {}  # point index -> work done so far (points started)
        self.span: dict[int, list[float]] = {}  # point index -> [first report, end] (monotonic)
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("[bold]sweep[/bold] {task.description}"), BarColumn(),
                              TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                              TextColumn("eta"), whole_run_eta(self.remaining),
                              console=Console(stderr=True), transient=False)
            self.task = self.p.add_task(self._text(), total=work)

    def _text(self) -> str:
        return f"{self.done}/{self.points} points"

    def __enter__(self) -> _Progress:
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.p:
            self.p.stop()

    def plan(self, order: list[int], work: list[float]) -> None:
        """The points in the order they are handed to the workers, and the work of each."""
        self.order, self.size = list(order), dict(zip(order, work))

    def remaining(self, elapsed: float) -> float | None:
        """The time left if the points left run on the workers as they are handed out: a
        worker's speed is the work done so far over the time workers spent running points; each
        point left goes to the worker that is free first. A single average over the run would
        miss its end, where fewer points than workers are left and workers idle."""
        now = time.monotonic()
        done = sum(self.credit.values())
        busy = sum((end if end else now) - start for start, end in self.span.values())
        if self.jobs <= 0 or not self.order or done <= 0 or busy <= 0:
            return None
        speed = done / busy
        running = [i for i, (_, end) in self.span.items() if not end]
        free = sorted(max(0.0, self.size[i] - self.credit[i]) / speed for i in running)
        free += [0.0] * max(0, self.jobs - len(free))
        for i in self.order:
            if i not in self.credit:
                free.sort()
                free[0] += self.size[i] / speed
        return max(free)

    def _started(self, index: int) -> None:
        # a point reports first after REPORT_EVERY seconds of running
        self.span.setdefault(index, [time.monotonic() - REPORT_EVERY, 0.0])

    def advance(self, d: float, index: int | None = None) -> None:
        if index is not None:
            self._started(index)
            self.credit[index] = self.credit.get(index, 0.0) + d
        if self.p and d > 0:
            self.p.advance(self.task, d)

    def point_done(self, rest: float, index: int | None = None) -> None:
        self.done += 1
        if index is not None:
            self._started(index)
            self.credit[index] = self.credit.get(index, 0.0) + max(0.0, rest)
            self.span[index][1] = time.monotonic()
        if self.p:
            self.p.update(self.task, advance=max(0.0, rest), description=self._text())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep", help="run a scenario over a grid of parameters (what-if questions)",
        description="Run a scenario once per point of a parameter grid on the simulator and report, "
                    "per point, the time to the first EADDRNOTAVAIL/EADDRINUSE, the peak TIME_WAIT "
                    "entries and socket memory, connections accepted, refused and reset, beside the "
                    "closed-form estimate. Points run in parallel: local processes, or a Dask cluster "
                    "with --scheduler. Exit 0 when every point ran, 1 when one failed, 2 for bad input.",
        epilog="parameters: fields of the first load step (rate, duration, close_first, reuseaddr, "
               "port, ...), sysctls (tcp_tw_reuse, tcp_tw_reuse_delay, tcp_max_tw_buckets, "
               "ip_local_port_range as LOW-HIGH, ...; net.ipv4. prefix allowed), host fields "
               "(latency, file_max) and seed. values: A..B (step 1), A..B:STEP, A..B:xFACTOR, "
               "V1,V2,... or one value. example: socksim sweep scenarios/whatif/ports-2000cps.yaml "
               "--param rate=500..4000:500 --param tcp_tw_reuse=0,2 -o runs/ports.json")
    p.add_argument("file", help="scenario .yaml file")
    p.add_argument("--param", action="append", metavar="NAME=VALUES", default=[],
                   help="a swept parameter (repeat for a grid), e.g. rate=500..4000:500 or tcp_tw_reuse=0,2")
    p.add_argument("--seed", type=int, help="seed of every point (default: the scenario's); sweep it with --param seed=0..9")
    p.add_argument("-o", "--out", metavar="RUN.json",
                   help="write the run file (grid, metrics, time series, scenario text) for `socksim report`")
    p.add_argument("--jsonl", metavar="PATH", help="write one JSON line per point, in grid order ('-': stdout, no table)")
    p.add_argument("-j", "--jobs", type=int, help="local worker processes (default: the CPUs available; 1 runs in this process)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the points on this Dask cluster (needs socksim[dask])")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="seconds to reach the Dask scheduler (default 10)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="show the progress bar even when stderr is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace existing output files (-o, --jsonl)")
    from ..cli import add_cost_flag

    add_cost_flag(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no table")
    p.set_defaults(func=cmd_sweep)
