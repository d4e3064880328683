"""Every rule of the Linux model is exercised by at least one bundled scenario that the real kernel
cross-checks (the scenario's [real] item), and every rule cites its source."""

from pathlib import Path

from sim.coverage import bundled, needs_crosscheck, rule_coverage
from sim.kernel.rules import RULES

ROOT = Path(__file__).resolve().parent.parent / "scenarios"


def test_every_rule_has_a_crosschecking_scenario():
    cover, bad = rule_coverage(bundled(ROOT))
    assert not bad, bad
    missing = sorted(r for r in RULES if needs_crosscheck(r) and not cover.get(r))
    assert not missing, f"rules without a cross-checking bundled scenario: {missing}"


def test_every_rule_cites_a_source():
    for rid, r in RULES.items():
        assert len(r.cite) > 15, rid
        assert any(w in r.cite for w in ("(", ".c", "(2)", "(7)", "RFC", "doc", "learn", "Qt", "::")), (rid, r.cite)
