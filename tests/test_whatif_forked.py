"""What-if variants forked from the base run give what fresh runs of the variants give.

sim/explain/forked.py runs each variant from the base run's state at its first changed step (a
fork) instead of from the start. Its claim is that nothing changes but the cost: the judge here is
the ordinary path (every variant run from the start), over bundled scenarios of each kind, with the
thresholds lowered so that every eligible variant is forked even in small scenarios.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim.bench import steps_scenario
from sim.explain import whatif
from sim.explain.explainer import Explainer
from sim.scenario.loader import load_file, load_text

ROOT = Path(__file__).resolve().parent.parent / "scenarios"
CASES = [
    "lessons/03-restart-bind-fails.yaml",
    "lessons/04-so-reuseaddr.yaml",
    "lessons/07-accept-queue.yaml",
    "lessons/09-close-with-unread-data.yaml",
    "time-wait-tw-reuse-loopback.yaml",
    "fd-fork-shares-socket.yaml",
    "connect-nonblocking.yaml",
    "windows/win-backlog-full-refused.yaml",
]

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is not available here")


def _whatifs(sc, forked: bool) -> tuple[list, Explainer]:
    ex = Explainer(sc, seed=0)
    if forked:
        ex.prefetch_whatifs()
    out = [[(w.label, w.outcome, w.changed, w.kind) for w in ex.explain(i).whatifs]
           for i in range(len(ex.trace.steps))]
    return out, ex


@pytest.fixture
def fork_everything(monkeypatch):
    monkeypatch.setattr(whatif, "FORK_MIN_STEPS", 0)
    monkeypatch.setattr(whatif, "FORK_MIN_VARIANTS", 1)


@pytest.mark.parametrize("rel", CASES)
def test_forked_variants_equal_fresh_runs(rel, fork_everything):
    sc = load_file(ROOT / rel)
    plain, _ = _whatifs(sc, forked=False)
    forked, ex = _whatifs(sc, forked=True)
    assert ex._forked, f"{rel}: no variant was forked, the comparison would prove nothing"
    for i, (a, b) in enumerate(zip(plain, forked)):
        assert a == b, f"{rel} record {i}: fresh runs gave {a}, forked runs {b}"
    assert len(plain) == len(forked)


def test_forked_variants_of_a_long_scenario(fork_everything):
    """Five connections written as steps: variants fork deep into the run (after many steps)."""
    sc = load_text(steps_scenario(5), "page-size.yaml")
    plain, _ = _whatifs(sc, forked=False)
    forked, ex = _whatifs(sc, forked=True)
    assert max(k[0] for k in ex._forked) > 20
    assert plain == forked


def test_a_wrong_fork_point_is_noticed(fork_everything, monkeypatch):
    """The comparison can fail: forking one step too late (the variant's first changed step
    already run as the base's) changes what-if outcomes."""
    from sim.explain import forked as fk

    real = fk.first_changed
    monkeypatch.setattr(fk, "first_changed", lambda base, data: (
        None if real(base, data) is None else real(base, data) + 1))
    sc = load_file(ROOT / "lessons/04-so-reuseaddr.yaml")
    plain, _ = _whatifs(sc, forked=False)
    forked, _ = _whatifs(sc, forked=True)
    assert plain != forked
