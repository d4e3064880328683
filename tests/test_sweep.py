"""`socksim sweep`: the grid, bad input, metrics against the closed form, executors agreeing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sim.cli import main
from sim.sweep import (
    SweepError, build_grid, closed_form, expand_range, parse_param, resolve_name, run_point,
    validate_point,
)

# 100 ephemeral ports, client closing first: with tcp_tw_reuse 0 the ports run out after
# 100 / rate seconds; with tcp_tw_reuse 2 towards loopback they never do.
TINY = """
name: tiny-ports
description: a hundred ports at a few hundred connections per second
host:
  sysctls: {ip_local_port_range: [40000, 40099], tcp_tw_reuse: 0}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 9999}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, port: 9999, rate: 200, duration: 1, accept_proc: server, listener: srv}
"""

NO_LOAD = """
name: no-load
processes: {a: {}}
steps:
  - {proc: a, call: socket, as: s}
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def _sweep(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["sweep", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- the grid


def test_ranges_lists_and_port_ranges():
    assert expand_range("500..4000:500", "x") == [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]
    assert expand_range("1..3", "x") == [1, 2, 3]
    assert expand_range("0.1..0.5:0.1", "x") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert expand_range("250..4000:x2", "x") == [250, 500, 1000, 2000, 4000]
    assert expand_range("1..10:4", "x") == [1, 5, 9]  # the end is included only when on the grid
    assert parse_param("tcp_tw_reuse=0,2")[1:] == ("sysctls", "tcp_tw_reuse", [0, 2])
    assert parse_param("net.ipv4.ip_local_port_range=32768-60999,1024-65535")[3] == [(32768, 60999), (1024, 65535)]
    assert parse_param("load.reuseaddr=true,false")[3] == [True, False]
    assert resolve_name("host.latency")[1:] == ("host", "latency")
    assert resolve_name("seed")[1] == "seed"
    params, grid = build_grid(["rate=100..200:100", "tcp_tw_reuse=0,2"])
    assert [p["name"] for p in params] == ["rate", "tcp_tw_reuse"]
    assert grid == [{"rate": 100, "tcp_tw_reuse": 0}, {"rate": 100, "tcp_tw_reuse": 2},
                    {"rate": 200, "tcp_tw_reuse": 0}, {"rate": 200, "tcp_tw_reuse": 2}]


@pytest.mark.parametrize("param, words", [
    ("colour=1,2", "unknown parameter 'colour'"),
    ("rat=100", "did you mean 'rate'"),
    ("rate=4000..500:500", "starts at 4000, above its end 500"),
    ("rate=500..4000:0", "the step must be positive"),
    ("rate=500..4000:-5", "the step must be positive, got -5"),
    ("rate=a..b", "is not a number"),
    ("rate=1..3,7", "not both"),
    ("rate=100,100", "repeated"),
    ("rate", "expected NAME=VALUES"),
    ("rate=", "no values"),
    ("=5", "name is missing"),
    ("ip_local_port_range=32768", "LOW-HIGH"),
    ("ip_local_reserved_ports=1,2", "cannot be swept"),
    ("rate=1..100000000", "at most"),
    ("tcp_tw_reuse=3", "tcp_tw_reuse=3"),
    ("rate=0", "rate=0: Input should be greater than 0"),
    ("ip_local_port_range=60999-32768", "above high"),
    ("close_first=nobody", "close_first=nobody"),
])
def test_bad_parameters_are_one_line_and_exit_2(capsys, tiny, param, words):
    rc, out, err = _sweep(capsys, str(tiny), "--param", param, "--jobs", "1", "--no-progress")
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert "Traceback" not in err and out == ""


def test_other_bad_input(capsys, tiny, tmp_path):
    cases = [
        ([str(tiny)], "nothing to sweep"),
        ([str(tiny), "--param", "rate=100", "--param", "load.rate=200"], "already swept"),
        ([str(tmp_path / "missing.yaml"), "--param", "rate=1"], "no such file"),
        ([str(tiny), "--param", "rate=1", "--jobs", "0"], "--jobs 0"),
        ([str(tiny), "--param", "rate=1", "--scheduler", "localhost:8786"], "expected a Dask scheduler address"),
        ([str(tiny), "--param", "rate=1", "-o", str(tmp_path)], "is a directory"),
        ([str(tiny), "--param", "rate=1", "--jsonl", str(tiny / "x.jsonl")], "cannot create the folder"),
        ([str(tiny), "--param", "rate=1", "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "0.5"],
         "cannot reach the Dask scheduler"),
    ]
    for argv, words in cases:
        rc, out, err = _sweep(capsys, *argv, "--no-progress")
        assert rc == 2, argv
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, (argv, err)
    p = tmp_path / "noload.yaml"
    p.write_text(NO_LOAD)
    rc, _, err = _sweep(capsys, str(p), "--param", "rate=1,2", "--no-progress")
    assert rc == 2 and "has no load step" in err
    rc, _, err = _sweep(capsys, str(p), "--param", "tcp_tw_reuse=0,1", "--jobs", "1", "--no-progress", "-q")
    assert rc == 0, err  # a sysctl sweep needs no load step


def test_output_folders_are_created(capsys, tiny, tmp_path):
    """`-o runs/ports.json` works in a fresh clone: the missing folders are made."""
    out, lines = tmp_path / "runs" / "deep" / "ports.json", tmp_path / "lines" / "p.jsonl"
    rc, _, err = _sweep(capsys, str(tiny), "--param", "rate=1", "--jobs", "1", "--no-progress", "-q",
                        "-o", str(out), "--jsonl", str(lines))
    assert rc == 0, err
    assert json.loads(out.read_text())["kind"] == "socksim-sweep"
    assert json.loads(lines.read_text().splitlines()[0])["index"] == 0


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_the_closed_form(tiny):
    from sim.scenario.loader import load_file

    sc = load_file(tiny)
    base = sc.model_dump(by_alias=True, mode="json")
    results = {}
    for reuse in (0, 2):
        for rate in (50, 200, 400):
            task = {"index": 0, "scenario": base, "params": {"rate": rate, "tcp_tw_reuse": reuse}, "seed": 0}
            results[reuse, rate] = run_point(task)
    for rate in (200, 400):
        r = results[0, rate]
        m, e = r["metrics"], r["estimate"]
        assert "error" not in r
        assert m["first_port_error"] == "EADDRNOTAVAIL"
        assert e["exhaustion_at"] == pytest.approx(100 / rate)
        assert m["first_port_error_at"] == pytest.approx(100 / rate, abs=1 / rate)
        assert m["ok"] == m["accepted"] == 100 == e["ok"]
        assert m["time_wait_peak"] == 100 == e["peak_time_wait"]
        assert m["port_errors"] == m["attempts"] - 100 == rate - 100
        assert m["free_ports_min"] == 0
        assert e["capacity_ratio"] == pytest.approx(100 / (rate * 60))
    low = results[0, 50]  # 50 connections in 1 s: the 100 ports last
    assert low["metrics"]["first_port_error_at"] is None and low["estimate"]["exhaustion_at"] is None
    assert low["metrics"]["ok"] == 50
    # tcp_tw_reuse 2 on loopback: a TIME_WAIT entry older than 1 s is taken over, so 100 ports carry
    # 100 connections/s: 50/s never runs out, 200/s and 400/s still do (after 100 / rate seconds)
    m = results[2, 50]["metrics"]
    assert m["first_port_error_at"] is None and m["ok"] == m["attempts"] == 50
    for rate in (200, 400):
        r = results[2, rate]
        assert r["estimate"]["hold_seconds"] == 1.0
        assert r["estimate"]["exhaustion_at"] == pytest.approx(100 / rate)
        assert r["metrics"]["first_port_error_at"] == pytest.approx(100 / rate, abs=1 / rate)
    s = results[0, 400]["series"]
    assert s["t"][0] == 0 and len(s["t"]) == len(s["time_wait"]) == len(s["free_ports"])
    assert max(s["time_wait"]) == 100 and min(s["free_ports"]) == 0


def test_closed_form_cases(tiny):
    from sim.scenario.loader import load_file

    sc = load_file(tiny)
    base = sc.model_dump(by_alias=True, mode="json")
    cf = lambda **p: closed_form(validate_point(base, p))  # noqa: E731
    e = cf(rate=2000, duration=600, ip_local_port_range=(32768, 60999))
    assert e["ports"] == 28232 and e["hold_seconds"] == 60
    assert e["exhaustion_at"] == pytest.approx(14.116)
    assert e["sustainable_fraction"] == pytest.approx(28232 / (2000 * 60), rel=1e-5)
    assert e["sustainable_rate"] == pytest.approx(28232 / 60, rel=1e-5)
    assert e["ok"] == 10 * 28232  # ten full TIME_WAIT cycles of the whole range
    default_range = (32768, 60999)
    assert cf(tcp_tw_reuse=2, rate=2000, ip_local_port_range=default_range)["exhaustion_at"] is None
    # reuse needs the entry to be 1 s old: 100 ports at 2000/s still run out, after 0.05 s
    assert cf(tcp_tw_reuse=2, rate=2000)["exhaustion_at"] == pytest.approx(0.05)
    assert cf(tcp_tw_reuse=2, tcp_timestamps=0, rate=2000)["hold_seconds"] == 60  # no timestamps, no reuse
    assert cf(tcp_tw_reuse=1, rate=2000)["hold_seconds"] == 1.0
    assert cf(close_first="server", rate=2000)["exhaustion_at"] is None
    capped = cf(tcp_max_tw_buckets=50, rate=2000)
    assert capped["exhaustion_at"] is None and "tcp_max_tw_buckets" in capped["basis"]


# ----------------------------------------------------------------------------- runs and executors


GRID = ["--param", "rate=100..300:100", "--param", "tcp_tw_reuse=0,2"]


def test_sweep_writes_table_jsonl_and_run_file(capsys, tiny, tmp_path):
    jl, run = tmp_path / "points.jsonl", tmp_path / "run.json"
    rc, out, err = _sweep(capsys, str(tiny), *GRID, "--jobs", "1", "--no-progress", "--jsonl", str(jl), "-o", str(run))
    assert rc == 0, err
    assert "first port error" in out and "EADDRNOTAVAIL" in out and "never" in out
    lines = _lines(jl)
    assert [ln["index"] for ln in lines] == list(range(6))
    assert lines[0]["params"] == {"rate": 100, "tcp_tw_reuse": 0}
    assert set(lines[0]) == {"index", "params", "seed", "metrics", "estimate"}
    data = json.loads(run.read_text())
    assert data["kind"] == "socksim-sweep" and len(data["points"]) == 6
    assert data["scenario"]["text"] == TINY and len(data["scenario"]["sha256"]) == 64
    assert data["command"][:3] == ["socksim", "sweep", str(tiny)]
    assert all(p["series"]["t"] for p in data["points"])
    rc, out, _ = _sweep(capsys, str(tiny), "--param", "rate=100,200", "--jobs", "1", "--jsonl", "-", "--no-progress")
    assert rc == 0 and [json.loads(x)["params"]["rate"] for x in out.splitlines()] == [100, 200]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, str]:
    """The tiny scenario and its GRID sweep run in this process, one point after the other."""
    d = tmp_path_factory.mktemp("ref")
    sc, out = d / "tiny.yaml", d / "inline.jsonl"
    sc.write_text(TINY)
    assert main(["sweep", str(sc), *GRID, "--jobs", "1", "--no-progress", "-q", "--jsonl", str(out)]) == 0
    return sc, out.read_text()


def test_local_processes_with_progress_give_identical_results(capsys, reference, tmp_path):
    sc, expected = reference
    assert "EADDRNOTAVAIL" in expected
    path = tmp_path / "processes.jsonl"
    # the progress bar reads simulated time from inside the runs: it must not change them
    rc, _, err = _sweep(capsys, str(sc), *GRID, "--jobs", "2", "--progress", "--jsonl", str(path), "-q")
    assert rc == 0, err
    assert path.read_text() == expected
    path = tmp_path / "inline-progress.jsonl"
    rc, _, err = _sweep(capsys, str(sc), *GRID, "--jobs", "1", "--progress", "--jsonl", str(path), "-q")
    assert rc == 0, err
    assert path.read_text() == expected


def test_seed_is_a_parameter(capsys, tiny, tmp_path):
    path = tmp_path / "seeds.jsonl"
    rc, _, err = _sweep(capsys, str(tiny), "--param", "seed=1..3", "--param", "rate=200", "--jobs", "1",
                        "--no-progress", "--jsonl", str(path), "-q")
    assert rc == 0, err
    assert [ln["seed"] for ln in _lines(path)] == [1, 2, 3]


def test_dask_local_cluster_gives_the_same_results(capsys, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    sc, expected = reference
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        dask_out, dask_run = tmp_path / "dask.jsonl", tmp_path / "dask.json"
        rc, _, err = _sweep(capsys, str(sc), *GRID, "--scheduler", cluster.scheduler_address,
                            "--no-progress", "--jsonl", str(dask_out), "-o", str(dask_run), "-q")
        assert rc == 0, err
    assert dask_out.read_text() == expected
    data = json.loads(dask_run.read_text())
    assert data["executor"] == {"kind": "dask", "scheduler": cluster.scheduler_address}
    assert all(p["worker"].split(":")[1] != str(os.getpid()) for p in data["points"])  # ran elsewhere


def test_a_point_that_fails_is_reported_and_the_sweep_goes_on(capsys, tiny, tmp_path, monkeypatch):
    import sim.sweep.point as sweep

    real = sweep.point_metrics

    def flaky(trace, sc=None):
        if sc is not None and sc.steps[-1].load.rate == 200:
            raise RuntimeError("boom")
        return real(trace, sc)

    monkeypatch.setattr(sweep, "point_metrics", flaky)
    path = tmp_path / "p.jsonl"
    rc, out, err = _sweep(capsys, str(tiny), "--param", "rate=100,200,300", "--jobs", "1", "--no-progress",
                          "--jsonl", str(path))
    assert rc == 1
    assert "1 point(s) failed; first: RuntimeError: boom" in err
    lines = _lines(path)
    assert "error" in lines[1] and "metrics" in lines[0] and "metrics" in lines[2]


def test_sweep_error_type_is_bad_input():
    with pytest.raises(SweepError):
        resolve_name("nope")


WEIGHED = """
name: weighed
host:
  sysctls: {tcp_tw_reuse: 0, ip_local_port_range: [40000, 40009]}
processes: {server: {}, client: {}}
steps:
  - {proc: server, call: socket, as: srv}
  - {proc: server, call: bind, sock: srv, addr: 127.0.0.1, port: 8080}
  - {proc: server, call: listen, sock: srv, backlog: 128}
  - load: {proc: client, addr: 127.0.0.1, port: 8080, rate: 100, duration: 1, accept_proc: server, listener: srv}
"""


def test_the_progress_unit_is_what_a_point_costs():
    """The sweep's progress unit is connections made (refused attempts cost the simulator far
    less: REFUSED_COST each), so a point whose ports run out weighs its successes; the work its
    run reports adds up to that weight, and the run makes the connections the weight assumed."""
    from sim.scenario.loader import load_text
    from sim.scenario.runner import run
    from sim.sweep.point import REFUSED_COST, _progress_backend, closed_form, point_metrics, point_work

    sc = load_text(WEIGHED, "weighed.yaml")
    est = closed_form(sc)
    assert (est["ok"], est["attempts"]) == (10, 100)
    assert point_work(sc) == pytest.approx(10 + REFUSED_COST * 90 + len(sc.steps))
    reported: list[float] = []
    trace = run(sc, _progress_backend(0, reported.append, sc), seed=0)
    assert sum(reported) == pytest.approx(point_work(sc) - len(sc.steps))
    assert point_metrics(trace, sc)["ok"] == 10
