"""Differential fuzzing (sim/fuzz.py): the generator, the reduction, the command, and a small
real-kernel campaign.

The generator and the campaign machinery are tested without the real kernel (scenarios are
validated by the loader; a stand-in evaluator plays the part of a divergence). The last test
runs a couple of dozen generated scenarios on the simulator and on this host's kernel and needs
a private network namespace: it is skipped where there is none, except under CI=true, where that
is a failure.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sim import fuzz
from sim.cli import main
from sim.scenario.loader import load_file, load_text
from sim.scenario.model import ListenCall, SocketCall, step_kind

GEN = settings(max_examples=60, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- the generator


@GEN
@given(fuzz.scenario_documents())
def test_generated_scenarios_are_valid_files(doc):
    text = fuzz.to_yaml(doc)
    sc = load_text(text, "gen.yaml")  # the loader is the judge: names bound, types right
    # what is written is what was generated
    again = load_text(fuzz.to_yaml(doc), "again.yaml")
    assert sc.model_dump() == again.model_dump()
    assert 2 <= len(doc["processes"]) <= 3
    calls = [s for s in sc.steps if step_kind(s) == "call"]
    assert 1 <= len(sc.steps) <= fuzz.MAX_STEPS
    assert calls
    sysctls = sc.host.sysctls
    lo, hi = sysctls.ip_local_port_range
    assert hi - lo <= 1, "ephemeral ranges of one or two ports keep autobind choices deterministic"
    assert sysctls.tcp_tw_reuse_delay == fuzz.TW_REUSE_DELAY_MS
    assert sum(getattr(s, "sleep", 0) for s in sc.steps) <= 3.0
    for s in sc.steps:
        if getattr(s, "call", None) == "send":
            assert s.bytes < 1000
        if getattr(s, "sleep", None) is not None:
            assert s.sleep <= 1.5


@settings(GEN, phases=(Phase.explicit, Phase.generate))
@given(fuzz.scenario_documents())
def test_the_simulator_runs_every_generated_scenario(doc):
    """The model never crashes on a valid scenario (no shrinking here: ``socksim fuzz`` does it,
    and reports a crash as a divergence)."""
    from sim.engine import SimBackend
    from sim.scenario.runner import run

    sc = fuzz.load_document(doc)
    try:
        trace = run(sc, SimBackend(seed=0), seed=0)
    except Exception as exc:
        pytest.fail(f"the simulator raised {type(exc).__name__}: {exc} on\n{fuzz.to_yaml(doc)}",
                    pytrace=False)
    assert len(trace.steps) == len(sc.steps)


def test_interpretation_is_a_function_of_the_choices():
    raw = (12345, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    assert fuzz.interpret(raw) == fuzz.interpret(raw)


def test_generation_is_mostly_meaningful():
    """Over many examples the usual life of a socket shows up: not only socket() calls."""
    counts: dict[str, int] = {}

    @settings(max_examples=150, deadline=None, database=None)
    @given(fuzz.scenario_documents())
    def collect(doc):
        for s in doc["steps"]:
            key = s.get("call") or next(iter(s))
            counts[key] = counts.get(key, 0) + 1

    collect()
    total = sum(counts.values())
    for call in ("bind", "listen", "connect", "accept", "send", "recv", "close", "setsockopt",
                 "shutdown", "fork", "dup", "observe"):
        assert counts.get(call, 0) > 0, f"{call} never generated: {counts}"
    assert counts["socket"] < 0.35 * total
    assert counts.get("sleep", 0) < 0.05 * total


def test_calls_mostly_do_what_they_are_meant_to():
    """On the simulator, a fixed sample of generated scenarios mostly gets past the errors: the
    generator aims connects at listening ports, accepts at pending connections, sends at
    connected sockets (an error is still a meaningful outcome, just not the usual one)."""
    import random

    from sim.engine import SimBackend
    from sim.scenario.runner import run

    rng = random.Random(0)
    ok: dict[str, list[int]] = {}
    for _ in range(120):
        raw = (rng.getrandbits(32), [rng.getrandbits(32) for _ in range(rng.randint(5, 40))])
        sc = fuzz.load_document(fuzz.interpret(raw))
        try:
            trace = run(sc, SimBackend(seed=0), seed=0)
        except Exception:  # a model crash is for socksim fuzz to report, not this test
            continue
        for r in trace.steps:
            if r.call:
                ok.setdefault(r.call, [0, 0])[r.err in (None, "EINPROGRESS")] += 1

    def share(call: str) -> float:
        bad, good = ok.get(call, [0, 0])
        return good / max(1, good + bad)

    assert share("connect") > 0.35, ok
    assert share("listen") > 0.7, ok
    assert share("bind") > 0.5, ok
    assert share("send") > 0.25, ok
    assert share("accept") > 0.2, ok


# ----------------------------------------------------------------------------- YAML and reduction


def test_written_scenario_is_loadable_and_carries_the_real_outcome(tmp_path):
    doc = {"name": "fuzz-x", "description": "", "host": {"sysctls": {"ip_local_port_range": [40000, 40000]}},
           "processes": {"a": {}, "b": {}},
           "steps": [{"proc": "a", "call": "socket", "as": "s1"},
                     {"proc": "a", "call": "bind", "sock": "s1", "addr": "::1", "port": 7001},
                     {"observe": {"what": "tcp_states", "port": 7001}}]}
    v = fuzz.Verdict(False, {1: "bind: simulator ok, real EAFNOSUPPORT", 2: "observe tcp_states: local differ"},
                     {1: ["step 1"], 2: ["step 2"]},
                     {1: "EAFNOSUPPORT", 2: {"local": [], "remote": []}})
    path = fuzz.write_scenario(doc, tmp_path / "sub" / "x.yaml", v, "bind: simulator ok, real EAFNOSUPPORT")
    sc = load_file(path)
    assert sc.steps[1].expect == "EAFNOSUPPORT"
    assert sc.steps[2].expect is None  # only the steps of the divergence being written
    assert sc.steps[1].addr == "::1"


def test_reduce_keeps_only_what_the_divergence_needs():
    doc = fuzz.interpret((7, list(range(100, 140))))
    doc["steps"] = [{"proc": "a", "call": "socket", "as": "zz"},
                    {"proc": "a", "call": "listen", "sock": "zz", "backlog": 5}] + doc["steps"]

    def fails(d):
        sc = fuzz.load_document(d)
        return any(isinstance(s, ListenCall) for s in sc.steps)

    small = fuzz.reduce(doc, fails, deadline=float("inf"))
    sc = fuzz.load_document(small)
    assert [type(s) for s in sc.steps] == [SocketCall, ListenCall]
    assert "backlog" not in small["steps"][1]


# ----------------------------------------------------------------------------- the campaign


def _stand_in(sig="listen: simulator ok, real EADDRINUSE"):
    """An evaluator for which every scenario with a listen() call diverges at that call."""
    def evaluate(sc):
        idx = [i for i, s in enumerate(sc.steps) if isinstance(s, ListenCall)]
        if not idx:
            return fuzz.Verdict(True)
        return fuzz.Verdict(False, {idx[0]: sig}, {idx[0]: [f"step {idx[0]}: listen"]},
                            {idx[0]: "EADDRINUSE"})
    return evaluate


def test_campaign_counts_shrinks_and_writes(tmp_path):
    res = fuzz.campaign(40, 3, tmp_path, evaluator=_stand_in(), progress_every=0)
    assert res.examples == 40
    assert res.agreed + res.diverged == 40
    assert res.diverged > 0
    assert list(res.divergences) == ["listen: simulator ok, real EADDRINUSE"]
    div = res.divergences["listen: simulator ok, real EADDRINUSE"]
    assert div.stable and div.count == res.diverged
    sc = load_file(div.path)
    assert [type(s) for s in sc.steps] == [SocketCall, ListenCall]  # minimal
    assert sc.steps[1].expect == "EADDRINUSE"
    assert "seed 3" in sc.description


def test_campaign_is_reproducible_from_its_seed():
    seen: list[list[str]] = [[], []]

    for k in (0, 1):
        def ev(sc, k=k):
            seen[k].append(fuzz.to_yaml({"name": "x", "processes": {}, "host": {},
                                         "steps": [s.model_dump(by_alias=True, exclude_none=True)
                                                   for s in sc.steps]}))
            return fuzz.Verdict(True)
        fuzz.campaign(15, 99, None, evaluator=ev, progress_every=0)
    assert seen[0] == seen[1] and len(seen[0]) == 15


def test_campaign_sets_aside_a_divergence_that_does_not_reproduce(tmp_path):
    flip = {"n": 0}

    def ev(sc):
        if any(isinstance(s, ListenCall) for s in sc.steps):
            flip["n"] += 1
            if flip["n"] % 2:  # diverges every other time: timing, not the model
                return fuzz.Verdict(False, {0: "observe sockstat: orphan differ"}, {0: ["x"]}, {0: {}})
        return fuzz.Verdict(True)

    res = fuzz.campaign(20, 4, tmp_path, evaluator=ev, progress_every=0)
    divs = list(res.divergences.values())
    assert divs and not divs[0].stable
    assert Path(divs[0].path).name.startswith("unstable-")
    load_file(divs[0].path)


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize("argv, words", [
    (["fuzz", "--examples", "0"], "--examples"),
    (["fuzz", "--examples", "5", "--shrink-seconds", "-1"], "--shrink-seconds"),
])
def test_fuzz_bad_input(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_fuzz_out_must_be_a_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["fuzz", "--examples", "1", "--out", str(f)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["fuzz", "--examples", "1", "--out", str(tmp_path / "no" / "such")]) == 2


def test_fuzz_command_summary_and_exit_code(monkeypatch, tmp_path, capsys):
    from sim.real.backend import RealBackend

    monkeypatch.setattr(RealBackend, "available", classmethod(lambda cls: (True, "stand-in")))
    real_campaign = fuzz.campaign
    monkeypatch.setattr(fuzz.runner, "campaign", lambda *a, **kw: real_campaign(*a, **{**kw, "evaluator": _stand_in()}))
    rc = main(["fuzz", "--examples", "12", "--seed", "5", "--out", str(tmp_path), "-q"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith("diverged") and out[-1].startswith("12 examples, ")
    n_div = int(out[-1].split(", ")[2].split()[0])
    assert rc == (1 if n_div else 0)


# ----------------------------------------------------------------------------- on the real kernel


@pytest.fixture(scope="module")
def _netns():
    from sim.real.backend import RealBackend

    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the real kernel cannot be reached: {why}")
        pytest.skip(f"no private network namespace here: {why}")


@pytest.mark.real
@settings(max_examples=25, deadline=timedelta(seconds=20), database=None, derandomize=True,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(doc=fuzz.scenario_documents(max_steps=25))
def test_fuzz_small_budget_on_the_real_kernel(_netns, doc):
    """A couple of dozen generated scenarios (a fixed, derandomized set) agree with the kernel.
    A failure shows the scenario; ``socksim fuzz`` shrinks such a divergence to a minimal file."""
    sc = fuzz.load_document(doc)
    v = fuzz.evaluate(sc)
    if not v.agree:
        lines = [f"simulator and real kernel disagree: {v.signature}"]
        for i in sorted(v.details):
            lines += v.details[i]
        lines += ["scenario:", fuzz.to_yaml(doc)]
        pytest.fail("\n".join(lines), pytrace=False)
