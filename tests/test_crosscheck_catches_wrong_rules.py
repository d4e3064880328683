"""The crosscheck is only worth something if a wrong rule makes it fail: mutate rules, expect red.

Each case breaks one rule of the model in place (monkeypatch), runs a bundled scenario on the
simulator and on the real kernel, and asserts that the comparison now disagrees at the step the
rule decides. Needs a private network namespace (skipped without one; fails under CI=true).
"""

import os
from pathlib import Path

import pytest

from sim.compare import compare_traces
from sim.engine import SimBackend
from sim.kernel import ports, timewait
from sim.kernel import tcp_states as tcp
from sim.real.backend import RealBackend
from sim.scenario.loader import load_file
from sim.scenario.runner import run

ROOT = Path(__file__).resolve().parent.parent / "scenarios"
pytestmark = pytest.mark.real


@pytest.fixture(autouse=True)
def _need_real():
    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no network namespace: {why}")
        pytest.skip(why)


def _crosscheck(name):
    sc = load_file(ROOT / name)
    sim = run(sc, SimBackend(seed=sc.seed))
    real = run(sc, RealBackend())
    return compare_traces(sc, sim, real), sim


def test_unmutated_scenario_agrees():
    result, _ = _crosscheck("restart-time-wait-reuseaddr-both.yaml")
    assert result.agree, result.to_dict()


def test_inverted_reuseaddr_rule_is_caught(monkeypatch):
    real_rule = ports.bind_conflict

    def inverted(sk, sk2, relax, reuseport_ok):
        # the SO_REUSEADDR exception inverted: sharing only when one of them lacks the flag
        if sk is sk2 or not ports.rcv_saddr_equal(sk, sk2):
            return False
        if (sk.reuse and sk2.reuse) and sk2.tcp_state != ports.LISTEN_STATE:
            return True
        return real_rule(sk, sk2, relax, reuseport_ok)

    monkeypatch.setattr(ports, "bind_conflict", inverted)
    result, sim = _crosscheck("restart-time-wait-reuseaddr-both.yaml")
    assert not result.agree
    bad = result.first_divergence()
    assert sim.steps[bad.index].call == "bind"


def test_wrong_time_wait_owner_is_caught(monkeypatch):
    # claim the passive closer enters TIME_WAIT: CLOSE_WAIT --close--> TIME_WAIT
    table = dict(tcp.TRANSITIONS)
    table[(tcp.State.LAST_ACK, "rcv_ack")] = (tcp.State.TIME_WAIT, ("time_wait",))
    monkeypatch.setattr(tcp, "TRANSITIONS", table)
    result, _ = _crosscheck("restart-client-closes-first.yaml")
    assert not result.agree


def test_wrong_tw_reuse_rule_is_caught(monkeypatch):
    # pretend TIME_WAIT entries never keep the reuse flag of their socket
    orig = timewait.TimeWaitSock.__init__

    def init(self, sk, *a, **kw):
        orig(self, sk, *a, **kw)
        self.reuse = False

    monkeypatch.setattr(timewait.TimeWaitSock, "__init__", init)
    result, _ = _crosscheck("restart-time-wait-reuseaddr-both.yaml")
    assert not result.agree


def test_a_wrong_window_is_caught_on_the_wire(monkeypatch, capsys):
    """A model that reaches every call result through a wrong segment fails the crosscheck: the
    window field of every segment after the handshake off by one unit, nothing else changed."""
    from sim.cli import main
    from sim.kernel.tcp_output import TcpOutput

    name = "restart-time-wait-reuseaddr-both.yaml"
    real_rule = TcpOutput.tcp_select_window
    monkeypatch.setattr(TcpOutput, "tcp_select_window", lambda self, sk: real_rule(self, sk) + 1)
    result, _ = _crosscheck(name)
    assert not result.disagreeing  # every call result still agrees ...
    assert not result.agree and result.wire.disagree  # ... the wire does not
    assert main(["crosscheck", str(ROOT / name)]) == 1
    out = capsys.readouterr().out
    assert "segments on the wire differ:" in out and "(reported only)" not in out
    assert "expected (real kernel): step" in out and "found (simulator):      step" in out
