"""`socksim bench`: the figures' plumbing at toy sizes (the figures themselves are in docs/whatif.md)."""

from __future__ import annotations

import json

import pytest

from sim import bench
from sim.cli import main, scenarios_dir


def test_bare_loop_times_the_timeouts():
    assert 0 < bench.bare_loop(20_000) < 5


def test_lifecycle_figures_count_connections_and_expiries():
    a = bench.figure_a(30)
    assert a["lifecycles"] == 30 and a["per_lifecycle_s"] > 0
    a2 = bench.figure_a_load(40)
    assert a2["lifecycles"] == 40 and a2["per_lifecycle_s"] > 0


def test_time_wait_figure_holds_every_entry_at_once(monkeypatch):
    monkeypatch.setattr(bench, "PER_DESTINATION", 400)  # three destinations
    b = bench.figure_b(1000)
    assert b["entries"] == 1000 and b["destinations"] == 3
    assert b["simulated_seconds"] <= 50.0 + 1e-9
    assert b["peak_rss_mb"] >= b["baseline_rss_mb"] > 0


def test_whatif_figure_runs_the_question():
    c = bench.figure_c(str(scenarios_dir() / bench.WHATIF), 0.5, 0)
    assert c["attempts"] == 1000 and c["ok"] == 1000 and c["simulated_seconds"] == pytest.approx(0.5)


def test_page_figure_measures_size_and_time():
    d = bench.figure_d(2)
    assert d["steps"] == 3 + 2 * 5 and d["page_bytes"] > 0 and d["wall_seconds"] > 0
    assert d["bytes_per_step"] == pytest.approx(d["page_bytes"] / d["steps"])


def test_real_lifecycle_child_runs_or_says_why():
    r = bench._run_child("real", {"n": 20, "data": True, "bare": 20000}, 60)
    if "skipped" in r:
        assert r["skipped"]
    else:
        assert r["lifecycles"] == 20 and r["per_lifecycle_s"] > 0 and r["bare_unit_s"] > 0


def test_bench_command_prints_and_writes_the_figures(capsys, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--only", "a", "--lifecycles", "20", "--bare", "20000", "--json", str(out)])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "machine:" in text and "(a) lifecycle" in text and "bare-loop timeouts" in text
    data = json.loads(out.read_text())
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    a = data["figures"]["a"]
    assert a["lifecycles"] == 20 and a["bare_timeouts"] == 20000
    assert a["ratio"] == pytest.approx(a["per_lifecycle_s"] / a["bare_unit_s"])
    assert a["met"] == (a["ratio"] <= bench.TARGET_A)


@pytest.mark.parametrize("argv, words", [
    (["--only", "e"], "unknown figure 'e'"),
    (["--pages", "2,x"], "expected connection counts"),
    (["--sizes", "1,x"], "expected simulated seconds"),
    (["--sizes", "1,-2"], "must be positive"),
    (["--tw", "0"], "must be positive"),
    (["--lifecycles", "50000"], "at most 30000"),
    (["--only", "c", "--scenario", "/nonexistent.yaml"], "no such scenario file"),
])
def test_bench_bad_input(capsys, argv, words):
    rc = main(["bench", *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
