"""The loader's cost is bounded while it reads, and a load's projected cost before it runs.

An oversized file is refused while its YAML events stream past (no tree is built), so the refusal
takes little memory: each case runs in a child process whose address space is capped.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main
from sim.scenario.loader import MAX_PROCESSES, MAX_STEPS, MAX_VALUES, ScenarioError, load_text

CAP = 1 << 30  # 1 GiB of address space for the child that reads the file


def _refused_in_small_memory(path: Path) -> str:
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from sim.cli import main; sys.exit(main(['run', sys.argv[1], '-q']))" % (CAP, CAP))
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    return r.stderr


def test_a_file_of_200000_steps(tmp_path):
    f = tmp_path / "steps.yaml"
    f.write_text("name: x\nprocesses: {a: {}}\nsteps:\n"
                 + "".join(f"  - {{proc: a, call: socket, as: s{i}}}\n" for i in range(200_000)))
    err = _refused_in_small_memory(f)
    assert f"steps.yaml:{MAX_STEPS + 4}:5: expected at most {MAX_STEPS} steps" in err, err


def test_a_file_of_nearly_8_mib_of_values(tmp_path):
    f = tmp_path / "values.yaml"
    f.write_text("name: x\nprocesses: {a: {}}\nsteps: []\ndescription: [" + ",".join("1" * 3 for _ in range(2_000_000)) + "]\n")
    assert f.stat().st_size > 7 * 1024 * 1024
    err = _refused_in_small_memory(f)
    assert f"expected at most {MAX_VALUES} values" in err, err


def test_too_many_processes():
    text = "name: x\nprocesses: {" + ", ".join(f"p{i}: {{}}" for i in range(MAX_PROCESSES + 1)) + "}\nsteps: []\n"
    with pytest.raises(ScenarioError) as e:
        load_text(text, "p.yaml")
    assert f"expected at most {MAX_PROCESSES} processes" in str(e.value) and e.value.line == 2


def test_steps_at_the_limit_still_load():
    text = "name: x\nprocesses: {a: {}}\nsteps:\n" + "  - {proc: a, call: socket}\n" * 50
    assert len(load_text(text).steps) == 50


def test_a_load_beyond_the_ceiling_is_refused_up_front(tmp_path, capsys):
    f = tmp_path / "huge.yaml"
    f.write_text("name: huge\nprocesses: {a: {}}\nsteps:\n  - load: {proc: a, port: 9, rate: 1000000, duration: 604800}\n")
    for argv in (["run", str(f)], ["sweep", str(f), "--param", "rate=1,1000000"]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert "projected 604,800,000,000 connections" in err and "--max-connections" in err, err


def test_a_large_load_is_announced(tmp_path, capsys):
    from sim.scenario import cost

    sc = load_text("name: big\nprocesses: {a: {}}\nsteps:\n  - load: {proc: a, port: 9, rate: 1000, duration: 200}\n")
    note = cost.check(sc, None)
    assert note and "projected 200,000 connections" in note and "on the simulator" in note
    with pytest.raises(cost.TooCostly):
        cost.check(sc, 1000)
