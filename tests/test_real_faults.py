"""Faults of the real run are named at once, and nothing outlives socksim.

- A scenario process killed from outside mid-run is reported within a second, by name, with the
  step and the signal; crosscheck exits 3 (a fault: no verdict), not 1 (a disagreement).
- After SIGKILL of socksim itself, no process of its namespace outlives it by more than a second.

Every wait is bounded; every process started here is killed on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sim.real.backend import RealBackend
from sim.real.faults import RealFault
from sim.scenario.loader import load_text
from sim.scenario.runner import run

SLEEPY = """
name: sleepy
processes: {victim: {}, other: {}}
steps:
  - {proc: victim, call: socket, as: s}
  - {proc: other, call: socket, as: t}
  - sleep: 20
  - {proc: victim, call: close, sock: s}
"""


@pytest.fixture(autouse=True)
def _needs_namespace():
    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no namespace can be made: {why}")
        pytest.skip(f"no private network namespace here: {why}")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_scenario_process_is_named_within_a_second():
    sc = load_text(SLEEPY, "sleepy.yaml")
    backend = RealBackend()
    killed: dict[str, float] = {}

    def killer() -> None:
        deadline = time.monotonic() + 30
        while "victim" not in backend.pids() or "other" not in backend.pids():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(0.5)  # inside the sleep step
        os.kill(backend.pids()["victim"], signal.SIGKILL)
        killed["at"] = time.monotonic()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        with pytest.raises(RealFault) as e:
            run(sc, backend)
        seen = time.monotonic()
    finally:
        backend.close()
        t.join(5)
    assert "at" in killed
    assert seen - killed["at"] < 1.0, seen - killed["at"]
    fault = e.value
    assert fault.proc == "victim" and fault.how == "killed by SIGKILL", str(fault)
    assert "'victim'" in str(fault) and "SIGKILL" in str(fault) and "step 2" in str(fault), str(fault)


def _start_crosscheck(tmp_path: Path) -> subprocess.Popen:
    f = tmp_path / "sleepy.yaml"
    f.write_text(SLEEPY)
    return subprocess.Popen([sys.executable, "-m", "sim.cli", "crosscheck", str(f), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_namespace(p: subprocess.Popen, n: int = 3, limit: float = 60) -> list[int]:
    """The zygote and the scenario processes, once they all exist."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and p.poll() is None:
        procs = _descendants(p.pid)
        if len(procs) >= n:
            time.sleep(0.3)  # past the start-up: inside the sleep step
            return _descendants(p.pid)
        time.sleep(0.1)
    pytest.fail(f"the namespace's processes did not appear: {p.poll()} {p.stderr.read() if p.poll() is not None else ''}")


def test_crosscheck_reports_the_fault_with_its_own_exit_code(tmp_path):
    p = _start_crosscheck(tmp_path)
    try:
        procs = _wait_for_namespace(p)
        zygote = next(q for q in procs if q in _children(p.pid))
        scenario = [q for q in procs if q != zygote]
        os.kill(scenario[0], signal.SIGKILL)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 3, err
    assert err.startswith("fault: scenario process ") and "SIGKILL" in err and err.count("\n") == 1, err
    assert took < 3.0, took  # named at once, then the namespace is cleaned up


def test_nothing_outlives_socksim_killed_by_sigkill(tmp_path):
    p = _start_crosscheck(tmp_path)
    procs: list[int] = []
    try:
        procs = _wait_for_namespace(p)
        p.kill()
        p.communicate(timeout=10)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(_running(q) for q in procs):
            time.sleep(0.05)
        left = [q for q in procs if _running(q)]
    finally:
        for q in procs:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
    assert not left, f"still running a second after socksim was killed: {left}"


ALONE = """
name: alone
processes: {victim: {}}
steps:
  - {proc: victim, call: socket, as: s}
  - sleep: 20
  - {proc: victim, call: close, sock: s}
"""


def test_the_real_item_errors_on_a_fault_and_names_it_within_a_second(tmp_path):
    """The [real] pytest item of a scenario whose process is killed mid-run ends as an error
    (no verdict), not as a failure, and its report names the process, the step and the signal."""
    f = tmp_path / "alone.yaml"
    f.write_text(ALONE)
    reports: dict[str, tuple[Any, float]] = {}
    killed: dict[str, float] = {}
    me = os.getpid()

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the zygote is our child; the scenario process its child
            for z in _children(me):
                kids = _children(z)
                if kids:
                    time.sleep(0.5)  # inside the sleep step
                    os.kill(kids[0], signal.SIGKILL)
                    killed["at"] = time.monotonic()
                    return
            time.sleep(0.05)

    class Recorder:
        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.nodeid.endswith("::real") and (report.failed or report.when == "call"):
                reports.setdefault(report.when, (report, time.monotonic()))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        pytest.main([f"{f}::real", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
                    plugins=[Recorder()])
    finally:
        t.join(65)
    assert "at" in killed, "the scenario process never appeared"
    assert "setup" in reports and "call" not in reports, reports  # an error in set-up: no verdict
    rep, seen = reports["setup"]
    assert rep.outcome == "failed" and rep.when == "setup"  # pytest's 'error' outcome
    fault = dict(rep.user_properties)["real_fault"]
    assert fault["proc"] == "victim" and fault["step"] == 1 and fault["how"] == "killed by SIGKILL", fault
    assert fault["found_at"] - killed["at"] < 1.0, fault["found_at"] - killed["at"]  # named at once
    assert seen - killed["at"] < 3.0, seen - killed["at"]  # reported once the namespace is gone
    text = str(rep.longrepr)
    assert text.startswith("fault of the real run") and text.count("\n") == 0, text
    assert "'victim'" in text and "SIGKILL" in text and "step 1" in text, text
