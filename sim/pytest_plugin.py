"""pytest plugin: scenario files are test items.

Every ``*.yaml`` file under a folder named ``scenarios`` becomes two items:

- ``[sim]``: the scenario runs on the simulator and every ``expect:`` must hold;
- ``[real]``: the scenario runs on the simulator and on the host's real kernel inside a private
  network namespace, and the two traces must agree step by step (tolerances as the scenario
  names them). Where the host cannot create a namespace the item is skipped with the reason --
  except when ``CI=true``, where the same condition fails.

Scenarios with ``slow: true`` (they wait out real kernel timers) carry the ``slow`` marker.
Options: ``--socksim-no-real`` skips every real-kernel item.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("socksim")
    g.addoption("--socksim-no-real", action="store_true", help="do not run scenarios on the real kernel")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: waits out real kernel timers (e.g. the 60 s TIME_WAIT)")
    config.addinivalue_line("markers", "real: needs a private network namespace on the host kernel")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> Any:
    if file_path.suffix == ".yaml" and "scenarios" in file_path.parts:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFailure(Exception):
    pass


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


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Any, mode: str, error: str | None, **kw: Any):
        super().__init__(**kw)
        self.scenario, self.mode, self.error = scenario, mode, error

    def runtest(self) -> None:
        if self.mode == "load":
            raise ScenarioFailure(self.error)
        from .engine import SimBackend
        from .kernel.tcp_states import check_state_write
        from .scenario.runner import run

        sc = self.scenario
        # every TCP state write of the run must be a row of the transition table
        sim = run(sc, SimBackend(seed=sc.seed, probes=(check_state_write,)), seed=sc.seed)
        if self.mode == "sim":
            bad = sim.failed_expectations
            if bad:
                lines = [f"{len(bad)} expectation(s) not met on the simulator:"]
                for r in bad:
                    lines.append(f"  step {r.index} (line {r.line}) {r.proc or ''} {r.call or r.kind}: "
                                 f"expected {r.expect!r}, got {r.outcome() if r.kind == 'call' else r.obs!r}"
                                 + (f"   [rule {r.rule}: {r.cite}]" if r.rule else ""))
                raise ScenarioFailure("\n".join(lines))
            return
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
        from .compare import compare_traces

        real = run(sc, real_backend)
        result = compare_traces(sc, sim, real)
        if not result.agree:
            from .compare import failure_text

            raise ScenarioFailure(failure_text(result, sim, real))

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, ScenarioFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int, str]:
        return self.path, 0, f"scenario {self.path.name} [{self.mode}]"
