"""pytest plugin: scenario files are test items.

Which files are collected:

- a scenario file named on the command line, wherever it lives (``python -m pytest mine.yaml``);
- files matching the ``socksim_scenarios`` ini option (glob patterns relative to the rootdir,
  e.g. ``socksim_scenarios = tests/net/*.yaml``) in a project's pytest.ini / pyproject.toml;
- without that option, every ``*.yaml`` file under a folder named ``scenarios``.

Each becomes two items:

- ``[sim]``: the scenario runs on the simulator and every ``expect:`` must hold;
- ``[real]``: the scenario runs on the host's real kernel inside a private network namespace:
  every ``expect:`` must hold there too, and the simulator's trace must agree with the kernel's
  step by step (tolerances as the scenario names them). Where the host cannot create a namespace
  the item is skipped with the reason -- except when ``CI=true``, where the same condition fails.
  Scenarios with Qt or QTimer steps also need PySide6 (the ``qt`` extra) for their real run:
  skipped without it, failed under CI.

A fault of the real run (a scenario process that died without a step ending it, a namespace that
cannot be made, a step that timed out) ends the ``[real]`` item as an error, with no verdict: one
line naming the process, the step and the signal. The real run goes first and the model then
starts each step when the kernel started it, so rules that read the clock agree.

A failure is told in the scenario's terms: the step as written, the call, expected and found;
where the real kernel gives different results on two runs, the tolerance block to paste.
Scenarios with ``slow: true`` (they wait out real kernel timers) carry the ``slow`` marker.
Options: ``--socksim-no-real`` skips every real-kernel item.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("socksim")
    g.addoption("--socksim-no-real", action="store_true", help="do not run scenarios on the real kernel")
    parser.addini("socksim_scenarios", type="linelist", default=[],
                  help="glob patterns (relative to the rootdir) of scenario files to collect; "
                       "default: *.yaml under folders named 'scenarios'")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: waits out real kernel timers (e.g. the 60 s TIME_WAIT)")
    config.addinivalue_line("markers", "real: needs a private network namespace on the host kernel")


def _wanted(parent: pytest.Collector, file_path: Path) -> bool:
    if file_path.suffix not in (".yaml", ".yml"):
        return False
    if parent.session.isinitpath(file_path):
        return True  # named on the command line
    globs = parent.config.getini("socksim_scenarios")
    if not globs:
        return file_path.suffix == ".yaml" and "scenarios" in file_path.parts
    root = Path(str(parent.config.rootpath))
    try:
        rel = file_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = file_path.as_posix()
    return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(file_path.name, g) for g in globs)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> Any:
    if _wanted(parent, file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFailure(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A fault of the real run (no verdict) is reported as one line naming what broke."""
    outcome = yield
    rep = outcome.get_result()
    if isinstance(item, ScenarioItem) and call.excinfo is not None and rep.failed:
        from .real.common import RealBackendError

        exc = call.excinfo.value
        if isinstance(exc, RealBackendError):
            rep.longrepr = f"fault of the real run (no verdict): {exc}"
            rep.user_properties.append(("real_fault", {
                "proc": getattr(exc, "proc", None), "step": getattr(exc, "step", None),
                "how": getattr(exc, "how", None), "found_at": getattr(exc, "at", None)}))


class ScenarioFile(pytest.File):
    def collect(self) -> Any:
        from .scenario.loader import ScenarioError, load_file

        try:
            sc = load_file(self.path)
        except ScenarioError as e:
            yield ScenarioItem.from_parent(self, name="load", scenario=None, mode="load", error=str(e))
            return
        for mode in ("sim", "real"):
            item = ScenarioItem.from_parent(self, name=mode, scenario=sc, mode=mode, error=None)
            if sc.slow:
                item.add_marker(pytest.mark.slow)
            if mode == "real":
                item.add_marker(pytest.mark.real)
            yield item


def _uses_qt(sc: Any) -> bool:
    """Qt steps and QTimer steps run on real Qt (PySide6) in the cross-check."""
    from .scenario.model import QtStep, TimerStep

    return any(isinstance(st, (QtStep, TimerStep)) for st in sc.steps)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, mode: str, error: str | None, **kw: Any):
        super().__init__(**kw)
        self.scenario, self.mode, self.error = scenario, mode, error

    def setup(self) -> None:
        """A ``[real]`` item runs both sides here: a fault of the real run (a scenario process that
        died unasked, a namespace that could not be made, a step that timed out) then ends the
        item as an *error* -- no verdict -- and never as a disagreement."""
        self._problems: list[str] = []
        if self.mode == "real":
            self._problems = self._run_real()

    def runtest(self) -> None:
        if self.mode == "load":
            raise ScenarioFailure(self.error)
        if self.mode == "sim":
            sim = self._run_sim()
            if isinstance(sim, str):
                raise ScenarioFailure(sim)
            from .scenario.failures import expectation_failures

            bad = expectation_failures(self.scenario, sim, "simulator")
            if bad:
                raise ScenarioFailure(f"{len(bad)} expectation(s) not met on the simulator:\n" + "\n".join(bad))
            return
        if self._problems:
            raise ScenarioFailure("\n".join(self._problems))

    def _run_sim(self, follow: Any = None) -> Any:
        """The model's trace, or the scenario's error as text; with ``follow`` (a real trace) the
        model's clock follows the real run's step times."""
        from .engine import SimBackend
        from .kernel.tcp_states import check_state_write
        from .scenario.loader import ScenarioError
        from .scenario.runner import run

        sc = self.scenario
        try:
            # every TCP state write of the run must be a row of the transition table
            return run(sc, SimBackend(seed=sc.seed, probes=(check_state_write,)), seed=sc.seed,
                       follow=follow)
        except ScenarioError as e:
            return str(e)

    def _run_real(self) -> list[str]:
        """Run on the real kernel, then the model following its step times; the problems found."""
        from .scenario.failures import divergences, expectation_failures
        from .scenario.loader import ScenarioError
        from .scenario.runner import run

        sc = self.scenario
        if self.config.getoption("--socksim-no-real"):
            pytest.skip("--socksim-no-real given")
        pers = {h.personality for h in ([sc.host] if not sc.hosts else sc.hosts.values())} - {"linux"}
        if pers:
            pytest.skip(f"the {pers.pop()} personality has no kernel here to cross-check "
                        "against: its rules are checked against their cited sources")
        from .real.topology import real_backend_for

        real_backend = real_backend_for(sc)
        ok, why = type(real_backend).available()
        if not ok:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true but the real kernel cannot be reached: {why}")
            pytest.skip(f"no private network namespace here: {why}")
        if _uses_qt(sc):
            from .real.qt_control import available as qt_available

            ok, why = qt_available()
            if not ok:
                if os.environ.get("CI") == "true":
                    pytest.fail(f"CI=true but this Qt scenario cannot run on real Qt: {why}")
                pytest.skip(f"a Qt scenario needs real Qt for its cross-check: {why}")
        from .compare import compare_traces

        try:
            real = run(sc, real_backend)  # a RealBackendError (a fault) propagates: the item errors
        except ScenarioError as e:
            return [str(e)]
        sim = self._run_sim(follow=real)
        if isinstance(sim, str):
            return [sim]
        problems = expectation_failures(sc, real, "real kernel")
        result = compare_traces(sc, sim, real)
        if result.disagreeing:
            again = run(sc, real_backend_for(sc))  # does the kernel itself vary at those steps?
            problems += divergences(sc, sim, real, result, again)
        if not result.agree and result.wire.disagree:
            problems.append("the segments on the wire differ" + ("" if result.wire_enforced else
                                                                  " (reported only)") + ":")
            problems.extend("  " + x for x in result.wire.disagree)
        return problems

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, f"scenario {self.path.name} [{self.mode}]"
