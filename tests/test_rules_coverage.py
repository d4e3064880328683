"""Every rule of the Linux model is exercised by at least one bundled scenario that the real kernel
cross-checks (the scenario's [real] item), every row of the TCP transition table is taken by a
bundled scenario, and every rule cites its source."""

from pathlib import Path

import pytest

from sim.coverage import Coverage, bundled, coverage, needs_crosscheck
from sim.kernel.rules import RULES
from sim.kernel.tcp_states import TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture(scope="module")
def cov() -> Coverage:
    return coverage(bundled(ROOT))


def test_every_rule_has_a_crosschecking_scenario(cov):
    assert not cov.bad, cov.bad
    missing = sorted(r for r in RULES if needs_crosscheck(r) and not cov.rules.get(r))
    assert not missing, f"rules without a cross-checking bundled scenario: {missing}"


def test_every_row_of_the_transition_table_is_taken_by_a_bundled_scenario(cov):
    idle = sorted(f"{s.name} --{e}-->" for (s, e), names in cov.rows.items() if not names)
    assert not idle, f"rows no bundled scenario takes (give one a scenario, or remove it): {idle}"
    assert set(cov.rows) == set(TRANSITIONS)
    # a Linux scenario among them, so that the real kernel judges the path (the table is shared)
    for row, names in cov.rows.items():
        assert any(":" not in n for n in names), (row, names)


def test_every_rule_cites_a_source():
    for rid, r in RULES.items():
        assert len(r.cite) > 15, rid
        assert any(w in r.cite for w in ("(", ".c", "(2)", "(7)", "RFC", "doc", "learn", "Qt", "::")), (rid, r.cite)
