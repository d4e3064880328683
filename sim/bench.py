"""``socksim bench``: the simulator's speed and scale, as ratios to a bare SimPy loop.

Every figure runs in a fresh child process pinned to one CPU, which first times a bare SimPy loop
of 1,000,000 timeouts (best of three; the unit: what the machine does for SimPy itself) and then
the figure:

- (a) one full connection lifecycle -- socket, connect, accept, a 100-byte send and recv, close by
  the client, the server's EOF and close, and the TIME_WAIT entry's expiry -- through the
  simulator's call interface (what a scenario step does), in bare-loop timeouts. Target: at most
  100. (a') the same lifecycle without data inside a load step. Target: at most 20, and cheaper
  than the same lifecycle on the real kernel's loopback driven from Python, measured in the same
  run by :mod:`sim.real.loopbench` (as root, in a private network namespace; skipped with the
  reason otherwise).
- (b) 1,000,000 concurrent TIME_WAIT entries, made by real load steps (34 destinations of
  30,000 connections each, all within 50 simulated seconds), and the process's peak RSS. Target:
  at most 300 MB for the whole process.
- (c) the what-if question (scenarios/whatif/ports-2000cps.yaml: 2,000 connections/s for 600
  simulated seconds, 1.2 M connections) run as ``socksim run`` runs it, at three sizes (150, 300
  and 600 simulated seconds) for tcp_tw_reuse 0 and 2: wall time against simulated time (target:
  at most 1/30 at tcp_tw_reuse=2, 1/60 at tcp_tw_reuse=0) and the cost per connection across
  sizes (linear: the same at every size).
- (d) the HTML page of ``socksim run --html`` for scenarios of 10, 20 and 40 connections written
  as steps (5 steps each): page size and time against the number of steps (target: the size
  grows linearly, at most about a kilobyte per step).

A child that exceeds ``--budget`` seconds is stopped and its figure reported as a lower bound;
a size whose projected time (from the size before it) exceeds the budget is not started.
``--quick`` runs every figure at a tenth of its size (a smoke test, not the figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_MISSED, EXIT_BAD_INPUT = 0, 1, 2
BARE_TIMEOUTS = 1_000_000
TARGET_A = 100.0  # bare-loop timeouts per lifecycle through the call interface
TARGET_A_LOAD = 20.0  # bare-loop timeouts per lifecycle inside a load step
TARGET_B_MB = 300.0  # peak RSS with 1,000,000 TIME_WAIT entries
TARGET_C = {2: 1 / 30, 0: 1 / 60}  # wall seconds per simulated second, by tcp_tw_reuse
TARGET_D_BYTES = 1024  # page bytes per step (beyond the page's fixed part)
FULL = {"lifecycles": 20_000, "tw": 1_000_000, "sizes": (150.0, 300.0, 600.0), "pages": (10, 20, 40)}
QUICK = {"lifecycles": 2_000, "tw": 100_000, "sizes": (15.0, 30.0, 60.0), "pages": (2, 4, 8)}
PER_DESTINATION = 30_000  # connections per destination in (b): below the even half of the range
WHATIF = "whatif/ports-2000cps.yaml"


# ----------------------------------------------------------------------------- measurements


def bare_loop(n: int = BARE_TIMEOUTS) -> float:
    """Wall seconds for a SimPy process yielding ``n`` timeouts, nothing else."""
    import simpy

    env = simpy.Environment()

    def proc(env: simpy.Environment) -> Any:
        timeout = env.timeout
        for _ in range(n):
            yield timeout(1)

    env.process(proc(env))
    t = time.perf_counter()
    env.run()
    return time.perf_counter() - t


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_now_kb() -> int:
    return _status_kb("VmRSS:")


def _peak_rss_kb() -> int:
    """The process's RSS high-water mark, read from the same accounting as VmRSS (VmHWM), so that a
    peak is never below the current figure; getrusage()'s ru_maxrss where /proc is not there."""
    return _status_kb("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def _host(tw_buckets: int = 131072, nofile: int = 1 << 20) -> dict[str, Any]:
    return {"host": {"sysctls": {"ip_local_port_range": [1024, 65535], "tcp_max_tw_buckets": tw_buckets,
                                 "tcp_tw_reuse": 0}},
            "processes": {"server": {"nofile": nofile}, "client": {"nofile": nofile}}}


def _listener(b: Any, addr: str = "127.0.0.1", port: int = 8080) -> int:
    srv = b.call(0, "server", "socket", {}).ret
    assert b.call(1, "server", "bind", {"sock": srv, "addr": addr, "port": port}).err is None
    assert b.call(2, "server", "listen", {"sock": srv, "backlog": 4096}).err is None
    return srv


def _load_spec(**kw: Any) -> dict[str, Any]:
    from .scenario.model import LoadSpec

    listener = kw.pop("listener")
    spec = LoadSpec(listener="srv", **kw).model_dump()
    spec["listener"] = listener
    return spec


def figure_a(n: int) -> dict[str, Any]:
    """(a): n lifecycles through SimBackend.call, then every TIME_WAIT entry expires."""
    from .engine import SimBackend
    from .kernel.timewait import TCP_TIMEWAIT_LEN

    b = SimBackend(seed=0)
    b.start(_host(tw_buckets=max(131072, 2 * n)))
    srv = _listener(b)
    call = b.call
    t = time.perf_counter()
    for i in range(n):
        c = call(i, "client", "socket", {}).ret
        r = call(i, "client", "connect", {"sock": c, "addr": "127.0.0.1", "port": 8080})
        if r.err is not None:
            raise RuntimeError(f"connect {i}: {r.err}")
        a = call(i, "server", "accept", {"sock": srv}).ret
        call(i, "client", "send", {"sock": c, "bytes": 100})
        call(i, "server", "recv", {"sock": a, "bytes": 100})
        call(i, "client", "close", {"sock": c})
        call(i, "server", "recv", {"sock": a, "bytes": 100})
        call(i, "server", "close", {"sock": a})
    made = b.kernel.tw.count
    b.sleep(TCP_TIMEWAIT_LEN + 5.0)  # the timer wheel ends TIME_WAIT 60-62 s after entry
    wall = time.perf_counter() - t
    left = b.kernel.tw.count
    if made != n or left != 0:
        raise RuntimeError(f"expected {n} TIME_WAIT entries then none, saw {made} then {left}")
    return {"lifecycles": n, "wall_seconds": wall, "per_lifecycle_s": wall / n}


def figure_a_load(n: int) -> dict[str, Any]:
    """(a'): n connections of a load step (no data), then every TIME_WAIT entry expires."""
    from .engine import SimBackend
    from .kernel.timewait import TCP_TIMEWAIT_LEN

    b = SimBackend(seed=0)
    b.start(_host(tw_buckets=max(131072, 2 * n)))
    srv = _listener(b)
    rate = 2000.0
    t = time.perf_counter()
    obs = b.load(3, _load_spec(proc="client", port=8080, rate=rate, duration=n / rate,
                               accept_proc="server", listener=srv))
    made = b.kernel.tw.count
    b.sleep(TCP_TIMEWAIT_LEN + 5.0)  # the timer wheel ends TIME_WAIT 60-62 s after entry
    wall = time.perf_counter() - t
    if obs.get("ok") != n or made != n or b.kernel.tw.count != 0:
        raise RuntimeError(f"expected {n} connections and TIME_WAIT entries, saw ok={obs.get('ok')} tw={made}")
    return {"lifecycles": n, "wall_seconds": wall, "per_lifecycle_s": wall / n}


def figure_b(n: int) -> dict[str, Any]:
    """(b): n concurrent TIME_WAIT entries from load steps; peak RSS of this process."""
    import gc

    from .engine import SimBackend

    gc.collect()
    base_rss = _rss_now_kb()
    base_peak = _peak_rss_kb()
    b = SimBackend(seed=0)
    b.start(_host(tw_buckets=n + 1))
    srv = _listener(b, addr="0.0.0.0")
    dests = math.ceil(n / PER_DESTINATION)
    if dests > 250:
        raise RuntimeError(f"{n} entries need more than 250 destinations")
    rate = n / 50.0  # every entry made within 50 s, inside one TIME_WAIT length
    t = time.perf_counter()
    left = n
    for k in range(dests):
        m = min(PER_DESTINATION, left)
        left -= m
        obs = b.load(3 + k, _load_spec(proc="client", addr=f"127.0.0.{k + 1}", port=8080, rate=rate,
                                       duration=m / rate, accept_proc="server", listener=srv))
        if obs.get("ok") != m:
            raise RuntimeError(f"destination {k + 1}: {obs.get('ok')} of {m} connections succeeded ({obs.get('errors')})")
    wall = time.perf_counter() - t
    count = b.kernel.tw.count
    sim_time = b.now()
    peak = _peak_rss_kb()
    rss = _rss_now_kb()
    res = {"entries": count, "destinations": dests, "simulated_seconds": sim_time, "wall_seconds": wall,
           "baseline_rss_mb": base_rss / 1024, "baseline_peak_rss_mb": base_peak / 1024,
           "rss_mb": rss / 1024, "peak_rss_mb": peak / 1024,
           "bytes_per_entry": (rss - base_rss) * 1024 / max(1, count)}
    if count != n:
        raise RuntimeError(f"expected {n} concurrent TIME_WAIT entries, saw {count} at t={sim_time:.1f} s")
    t = time.perf_counter()
    b.close()  # the end-of-run summary lists every entry (what `socksim run` keeps in its trace)
    res["close_seconds"] = time.perf_counter() - t
    res["peak_rss_after_summary_mb"] = _peak_rss_kb() / 1024
    return res


def figure_c(scenario: str, duration: float, tw_reuse: int) -> dict[str, Any]:
    """(c): the what-if scenario, as `socksim run` runs it, for ``duration`` simulated seconds."""
    from .engine import SimBackend
    from .scenario.loader import load_file
    from .scenario.runner import run
    from .sweep import point_metrics, validate_point

    sc = load_file(scenario)
    sc = validate_point(sc.model_dump(by_alias=True, mode="json"),
                        {"duration": duration, "tcp_tw_reuse": tw_reuse}, sc.step_lines)
    t = time.perf_counter()
    trace = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)
    wall = time.perf_counter() - t
    m = point_metrics(trace, sc)
    return {"duration": duration, "tcp_tw_reuse": tw_reuse, "wall_seconds": wall,
            "simulated_seconds": m["sim_seconds"], "attempts": m["attempts"], "ok": m["ok"],
            "first_port_error_at": m["first_port_error_at"], "time_wait_peak": m["time_wait_peak"],
            "per_connection_s": wall / max(1, m["attempts"])}


def steps_scenario(n: int, port_range: tuple[int, int] | None = None) -> str:
    """A scenario of ``n`` connections written as steps: 3 steps of set-up, then 5 per connection.
    With ``port_range`` (an ephemeral range), the listener is non-blocking: a connect() that
    finds no port fails and the accept() after it answers EAGAIN."""
    lines = ["name: page-size", "description: |", f"  {n} connections written as steps.",
             *(["host:", f"  sysctls: {{ip_local_port_range: [{port_range[0]}, {port_range[1]}]}}"]
               if port_range else []),
             "processes:", "  server: {}", "  client: {nofile: 65536}", "steps:",
             "  - {proc: server, call: socket, as: srv}",
             "  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 8080}",
             "  - {proc: server, call: listen, sock: srv, backlog: 4096}",
             *(["  - {proc: server, call: set_nonblocking, sock: srv}"] if port_range else [])]
    for i in range(n):
        lines += [f"  - {{proc: client, call: socket, as: c{i}}}",
                  f"  - {{proc: client, call: connect, sock: c{i}, addr: 127.0.0.1, port: 8080}}",
                  f"  - {{proc: server, call: accept, sock: srv, as: a{i}}}",
                  f"  - {{proc: client, call: close, sock: c{i}}}",
                  f"  - {{proc: server, call: close, sock: a{i}}}"]
    return "\n".join(lines) + "\n"


def figure_d(connections: int) -> dict[str, Any]:
    """(d): the HTML page of a scenario of ``connections`` connections as steps; size and time."""
    from .report.page import render_page
    from .scenario.loader import load_text

    sc = load_text(steps_scenario(connections), "page-size.yaml")
    t = time.perf_counter()
    page = render_page(sc, None, seed=0)
    wall = time.perf_counter() - t
    size = len(page.encode("utf-8"))
    return {"connections": connections, "steps": len(sc.steps), "page_bytes": size, "wall_seconds": wall,
            "bytes_per_step": size / len(sc.steps), "seconds_per_step": wall / len(sc.steps)}


def figure_real(n: int, data: bool) -> dict[str, Any]:
    """(a') beside the model: the same lifecycle on the real kernel's loopback (sim.real.loopbench)."""
    from .real.loopbench import measure

    return measure(n, data)


def _child_main(argv: list[str]) -> int:
    """``python -m sim.bench FIGURE JSON-ARGS``: one figure in this process, JSON on stdout."""
    fig, kw = argv[0], json.loads(argv[1])
    cpu = kw.pop("cpu", None)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    bare_n = kw.pop("bare", BARE_TIMEOUTS)
    if fig != "real":  # the real kernel's side imports nothing of the model
        import sim.engine  # noqa: F401  (imports are not part of any figure)
        import sim.scenario.runner  # noqa: F401

    bare = min(bare_loop(bare_n) for _ in range(3))  # best of three, as timeit does
    fn = {"a": figure_a, "a_load": figure_a_load, "b": figure_b, "c": figure_c, "d": figure_d,
          "real": figure_real}[fig]
    res = fn(**kw)
    res["bare_seconds"] = bare
    res["bare_timeouts"] = bare_n
    res["bare_unit_s"] = bare / bare_n
    print(json.dumps(res))
    return 0


# ----------------------------------------------------------------------------- the command


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from . import __version__

    info = {"nproc": os.cpu_count(), "cpu": model or platform.processor() or platform.machine(),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()}", "socksim": __version__}
    try:
        import simpy

        info["simpy"] = simpy.__version__
    except Exception:  # noqa: BLE001
        pass
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "sim"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            info["commit"] = head.stdout.strip() + (" + local changes in sim/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class _Budget(Exception):
    pass


def _run_child(fig: str, kw: dict[str, Any], budget: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "sim.bench", fig, json.dumps(kw)]
    t = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        raise _Budget(f"stopped after the {budget:g} s budget") from None
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {fig} child failed: {last}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["child_wall_seconds"] = time.monotonic() - t
    return res


def _line(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, flush=True)


def run_bench(only: set[str], sizes: dict[str, Any], bare: int, budget: float, cpu: int | None,
              scenario: str, quiet: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "bare_timeouts": bare, "budget_seconds": budget,
                           "figures": {}}
    m = out["machine"]
    _line(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, socksim {m['socksim']}"
          + (f" ({m['commit']})" if m.get("commit") else ""), quiet)
    base = {"bare": bare}
    if cpu is not None:
        base["cpu"] = cpu
    figs = out["figures"]

    def unit(res: dict[str, Any]) -> str:
        return f"bare loop {res['bare_seconds']:.3f} s for {res['bare_timeouts']:,} timeouts"

    if "a" in only:
        for key, fig, what, target in (
                ("a", "a", "lifecycle with a 100-byte send/recv, SimBackend calls", TARGET_A),
                ("a_load", "a_load", "lifecycle inside a load step (no data)", TARGET_A_LOAD)):
            try:
                r = _run_child(fig, {**base, "n": sizes["lifecycles"]}, budget)
                r["ratio"] = r["per_lifecycle_s"] / r["bare_unit_s"]
                r["target"] = target
                r["met"] = r["ratio"] <= target
                figs[key] = r
                _line(f"({key.replace('_load', chr(39))}) {what}: {r['per_lifecycle_s'] * 1e6:,.1f} us = "
                      f"{r['ratio']:,.1f} bare-loop timeouts (target <= {target:g}) "
                      f"{'met' if r['met'] else 'MISSED'}; {r['lifecycles']:,} lifecycles, {unit(r)}", quiet)
            except (_Budget, RuntimeError) as e:
                figs[key] = {"error": str(e), "met": False}
                _line(f"({key}) {what}: {e}", quiet)
        for key, data, sim_key in (("real_load", False, "a_load"), ("real", True, "a")):
            what = "the same lifecycle on the real kernel's loopback, from Python" + (
                " (with the 100-byte send/recv)" if data else " (no data)")
            try:
                r = _run_child("real", {**base, "n": sizes["lifecycles"], "data": data}, budget)
            except (_Budget, RuntimeError) as e:
                r = {"skipped": str(e)}
            figs[key] = r
            if "skipped" in r:
                _line(f"(a') {what}: skipped, {r['skipped']}", quiet)
                continue
            r["ratio"] = r["per_lifecycle_s"] / r["bare_unit_s"]
            sim = figs.get(sim_key, {})
            line = (f"(a') {what}: {r['per_lifecycle_s'] * 1e6:,.1f} us = {r['ratio']:,.1f} bare-loop timeouts; "
                    f"{r['lifecycles']:,} lifecycles, {unit(r)}")
            if "ratio" in sim:
                sim["real_ratio"] = r["ratio"]
                sim["cheaper_than_real"] = sim["ratio"] < r["ratio"]
                label = "(a)" if sim_key == "a" else "(a')"
                line += f"; the model's {label} costs x{sim['ratio'] / r['ratio']:.2f} of it"
                if sim_key == "a_load":
                    sim["met"] = sim["met"] and sim["cheaper_than_real"]
            _line(line, quiet)
    if "b" in only:
        try:
            r = _run_child("b", {**base, "n": sizes["tw"]}, budget)
            r["target_mb"] = TARGET_B_MB * sizes["tw"] / 1_000_000
            r["met"] = r["peak_rss_mb"] <= r["target_mb"]
            figs["b"] = r
            _line(f"(b) {r['entries']:,} concurrent TIME_WAIT entries: peak RSS {r['peak_rss_mb']:,.0f} MB "
                  f"(target <= {r['target_mb']:,.0f} MB) {'met' if r['met'] else 'MISSED'}; "
                  f"{r['bytes_per_entry']:,.0f} bytes per entry over a {r['baseline_rss_mb']:,.0f} MB baseline; "
                  f"{r['peak_rss_after_summary_mb']:,.0f} MB once the end-of-run summary lists them; "
                  f"built in {r['wall_seconds']:,.0f} s ({unit(r)})", quiet)
        except (_Budget, RuntimeError) as e:
            figs["b"] = {"error": str(e), "met": False}
            _line(f"(b) {sizes['tw']:,} TIME_WAIT entries: {e}", quiet)
    if "c" in only:
        for reuse in (0, 2):
            rows: list[dict[str, Any]] = []
            prev = None
            for d in sizes["sizes"]:
                if prev is not None and "per_connection_s" in prev:
                    projected = prev["per_connection_s"] * prev["rate"] * d
                    if projected > budget:
                        rows.append({"duration": d, "skipped": f"projected {projected:,.0f} s > budget", "met": False})
                        _line(f"(c) tcp_tw_reuse={reuse} {d:g} s: not started, projected {projected:,.0f} s "
                              f"(budget {budget:g} s)", quiet)
                        continue
                try:
                    r = _run_child("c", {**base, "scenario": scenario, "duration": d, "tw_reuse": reuse}, budget)
                    r["ratio"] = r["wall_seconds"] / r["simulated_seconds"]
                    r["per_connection_bare"] = r["per_connection_s"] / r["bare_unit_s"]
                    r["met"] = r["ratio"] <= TARGET_C[reuse]
                    r["rate"] = r["attempts"] / d
                    rows.append(r)
                    prev = r
                    _line(f"(c) tcp_tw_reuse={reuse} {d:g} s simulated, {r['attempts']:,} connections: "
                          f"{r['wall_seconds']:,.1f} s wall = 1/{1 / r['ratio']:,.1f} of simulated time "
                          f"(target <= 1/{1 / TARGET_C[reuse]:g}) {'met' if r['met'] else 'MISSED'}; "
                          f"{r['per_connection_s'] * 1e6:,.1f} us = {r['per_connection_bare']:,.1f} bare-loop "
                          f"timeouts per connection; {unit(r)}", quiet)
                except _Budget as e:
                    rows.append({"duration": d, "error": str(e), "lower_bound_ratio": budget / d, "met": False})
                    rate = prev["rate"] if prev else 2000.0
                    prev = {"per_connection_s": budget / (rate * d), "rate": rate}
                    _line(f"(c) tcp_tw_reuse={reuse} {d:g} s: {e} (wall/simulated > {budget / d:.2f})", quiet)
                except RuntimeError as e:
                    rows.append({"duration": d, "error": str(e), "met": False})
                    _line(f"(c) tcp_tw_reuse={reuse} {d:g} s: {e}", quiet)
            done = [r for r in rows if "per_connection_s" in r and "error" not in r]
            lin = None
            if len(done) >= 2:
                xs = [math.log(r["attempts"]) for r in done]
                ys = [math.log(r["wall_seconds"]) for r in done]
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                sxx = sum((x - mx) ** 2 for x in xs)
                lin = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None
                spread = max(r["per_connection_s"] for r in done) / min(r["per_connection_s"] for r in done)
                _line(f"(c) tcp_tw_reuse={reuse}: wall time ~ connections^{lin:.2f} over {len(done)} sizes; "
                      f"cost per connection varies x{spread:.2f} (linear: exponent 1, x1)", quiet)
            figs[f"c_reuse{reuse}"] = {"sizes": rows, "exponent": lin, "target": TARGET_C[reuse],
                                       "met": bool(rows) and all(r.get("met") for r in rows)
                                       and lin is not None and lin <= 1.15}
    if "d" in only:
        rows = []
        for n in sizes["pages"]:
            try:
                r = _run_child("d", {**base, "connections": n}, budget)
            except (_Budget, RuntimeError) as e:
                rows.append({"connections": n, "error": str(e)})
                _line(f"(d) page of {n} connections as steps: {e}", quiet)
                break
            rows.append(r)
            _line(f"(d) page of {n} connections as steps ({r['steps']} steps): {r['page_bytes'] / 1e6:,.2f} MB "
                  f"({r['bytes_per_step']:,.0f} bytes per step), written in {r['wall_seconds']:,.1f} s "
                  f"({r['seconds_per_step'] * 1e3:,.1f} ms per step)", quiet)
        done = [r for r in rows if "error" not in r]
        res: dict[str, Any] = {"sizes": rows, "target_bytes_per_step": TARGET_D_BYTES, "met": False}
        if len(done) >= 2:
            a, z = done[0], done[-1]
            marginal = (z["page_bytes"] - a["page_bytes"]) / (z["steps"] - a["steps"])
            exp_size = math.log(z["page_bytes"] / a["page_bytes"]) / math.log(z["steps"] / a["steps"])
            exp_time = math.log(max(z["wall_seconds"], 1e-9) / max(a["wall_seconds"], 1e-9)) / math.log(
                z["steps"] / a["steps"])
            res.update({"bytes_per_added_step": marginal, "size_exponent": exp_size, "time_exponent": exp_time,
                        "met": marginal <= TARGET_D_BYTES and exp_size <= 1.15})
            _line(f"(d) page size ~ steps^{exp_size:.2f}, {marginal:,.0f} bytes per added step "
                  f"(target <= {TARGET_D_BYTES}) {'met' if res['met'] else 'MISSED'}; "
                  f"time ~ steps^{exp_time:.2f}", quiet)
        figs["d"] = res
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    from .cli import scenarios_dir

    only = set(x.strip() for x in (args.only or "a,b,c,d").split(",") if x.strip())
    bad = only - {"a", "b", "c", "d"}
    if bad:
        print(f"error: --only {args.only}: unknown figure {sorted(bad)[0]!r}; the figures are a, b, c, d",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    sizes = dict(QUICK if args.quick else FULL)
    if args.lifecycles is not None:
        sizes["lifecycles"] = args.lifecycles
    if args.tw is not None:
        sizes["tw"] = args.tw
    if args.pages:
        try:
            sizes["pages"] = tuple(int(x) for x in args.pages.split(","))
        except ValueError:
            print(f"error: --pages {args.pages}: expected connection counts, e.g. 10,20,40", file=sys.stderr)
            return EXIT_BAD_INPUT
        if any(n <= 0 for n in sizes["pages"]):
            print(f"error: --pages {args.pages}: counts must be positive", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.sizes:
        try:
            sizes["sizes"] = tuple(float(x) for x in args.sizes.split(","))
        except ValueError:
            print(f"error: --sizes {args.sizes}: expected simulated seconds, e.g. 150,300,600", file=sys.stderr)
            return EXIT_BAD_INPUT
    for name, v in (("--lifecycles", sizes["lifecycles"]), ("--tw", sizes["tw"]), ("--bare", args.bare),
                    ("--budget", args.budget)):
        if v <= 0:
            print(f"error: {name} {v}: must be positive", file=sys.stderr)
            return EXIT_BAD_INPUT
    if any(d <= 0 for d in sizes["sizes"]):
        print(f"error: --sizes {args.sizes}: sizes must be positive", file=sys.stderr)
        return EXIT_BAD_INPUT
    if sizes["lifecycles"] > 30_000:
        print("error: --lifecycles is at most 30000 (all lifecycles share one destination's ports)", file=sys.stderr)
        return EXIT_BAD_INPUT
    scenario = args.scenario or str(scenarios_dir() / WHATIF)
    if "c" in only and not Path(scenario).is_file():
        print(f"error: {scenario}: no such scenario file (the what-if question for figure c)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        from .outfile import OutputError, check_file

        try:
            check_file(args.json, "the benchmark figures", args.force)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    cpu = args.cpu
    if cpu is None and hasattr(os, "sched_getaffinity"):
        cpu = max(os.sched_getaffinity(0))
    res = run_bench(only, sizes, args.bare, args.budget, cpu, scenario, quiet=args.quiet)
    res["quick"] = bool(args.quick)
    if args.json:
        from .outfile import write_file

        write_file(args.json, json.dumps(res, indent=2) + "\n", "the benchmark figures", args.force)
    missed = [k for k, v in res["figures"].items() if not v.get("met")]
    return EXIT_MISSED if missed and args.strict else EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure the simulator's speed and scale against a bare SimPy loop",
        description="Measure (a) the cost of one connection lifecycle (beside the real kernel's loopback), "
                    "(b) the peak RSS with 1,000,000 TIME_WAIT entries, (c) the what-if question (2,000 "
                    "connections/s for 600 s) at three sizes, (d) the HTML page's size against its steps -- each as a ratio to a bare SimPy loop of 1,000,000 timeouts timed in the same "
                    "process, every figure in a fresh process pinned to one CPU.")
    p.add_argument("--only", metavar="a,b,c,d", help="the figures to measure (default: all)")
    p.add_argument("--pages", metavar="N1,N2,N3", help="connections of the page scenarios in (d) (default 10,20,40)")
    p.add_argument("--quick", action="store_true", help="every figure at a tenth of its size (a smoke test)")
    p.add_argument("--lifecycles", type=int, help="lifecycles in (a) (default 20000)")
    p.add_argument("--tw", type=int, help="TIME_WAIT entries in (b) (default 1000000)")
    p.add_argument("--sizes", metavar="S1,S2,S3", help="simulated seconds of the what-if in (c) (default 150,300,600)")
    p.add_argument("--scenario", metavar="FILE", help="the what-if for (c) (default scenarios/whatif/ports-2000cps.yaml)")
    p.add_argument("--bare", type=int, default=BARE_TIMEOUTS, help="timeouts in the bare SimPy loop (default 1000000)")
    p.add_argument("--budget", type=float, default=900.0, metavar="S", help="seconds allowed to one child (default 900)")
    p.add_argument("--cpu", type=int, help="the CPU to pin children to (default: the last one available)")
    p.add_argument("--json", metavar="PATH", help="also write the figures and the machine as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a figure misses its target")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing (use with --json)")
    p.set_defaults(func=cmd_bench)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
