"""A long real run agrees: 1,000 connections written as steps, at the default tcp_tw_reuse=2.

Real time passes between the steps of a real run (tens of milliseconds each, minutes in all),
and rules that read the clock see it: with eight ephemeral ports, each connection's port waits
in TIME_WAIT, and connect() may take it over only once the entry's last segment is more than
tcp_tw_reuse_delay (1000 ms) old (tcp_twsk_unique(), net/ipv4/tcp_ipv4.c); until then connect()
fails with EADDRNOTAVAIL. Which connects fail depends on how fast the real steps ran, so the
model starts every step when the kernel started it and must then agree at every step (where
the real calls' windows straddle the millisecond the kernel compares, about one run in ten
here, the real outcome decides that comparison: tw_old_enough in sim/kernel/timewait.py). The same
model on its own clock (every step at once) cannot: the check that the comparison is not vacuous.

Slow (minutes of real steps): run with ``-m slow``.
"""

from __future__ import annotations

import os

import pytest

from sim.bench import steps_scenario
from sim.compare import compare_traces
from sim.engine import SimBackend
from sim.real.backend import RealBackend
from sim.scenario.loader import load_text
from sim.scenario.runner import run

pytestmark = [pytest.mark.slow, pytest.mark.real]

CONNECTIONS = 1000


def test_a_thousand_connections_as_steps_agree():
    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no namespace can be made: {why}")
        pytest.skip(f"no private network namespace here: {why}")
    # eight ports, each connection closed by the client first: its port waits in TIME_WAIT
    sc = load_text(steps_scenario(CONNECTIONS, port_range=(40000, 40007)), "connections-as-steps.yaml")
    real = run(sc, RealBackend())
    sim = run(sc, SimBackend(seed=sc.seed), seed=sc.seed, follow=real)
    result = compare_traces(sc, sim, real)
    bad = [(d.index, d.disagree) for d in result.steps if d.disagree][:5]
    # every call's result; the segments are not held here: which of the eight ports a connect()
    # picks is not always the real kernel's (the wire shows the other port; README, "Time in a cross-check")
    assert not result.disagreeing and not result.faults, (len(result.disagreeing), bad)
    connects = [r for r in real.steps if r.call == "connect"]
    refused = sum(r.err == "EADDRNOTAVAIL" for r in connects)
    assert len(connects) == CONNECTIONS and 0 < refused < CONNECTIONS, refused  # time decided
    alone = run(sc, SimBackend(seed=sc.seed), seed=sc.seed)  # every step at t = 0
    assert not compare_traces(sc, alone, real).agree
