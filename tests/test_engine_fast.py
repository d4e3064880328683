"""The engine's fast path against its plain path: random load steps give identical traces and tables.

The fast path (``SimBackend(fast=True)``, the default) keeps one queue for the connect()
deadlines of a load step instead of a process per deadline, lets a re-armed kernel timer
replace its older generation in the timer queue, answers an attempt refused from a remembered
fruitless port search without its calls, and takes a whole loopback lifecycle of a load step in
one kernel call (Kernel.tcp_loopback_lifecycle) once two lifecycles through the calls gave its
shape. The plain path (``fast=False``) keeps a process per deadline and every timer entry until
it falls due, and makes every call. Both must give the same run: the same trace
(every step's outcome, the load steps' statistics and samples, the end-of-run summary with the
kernel's tables, counters and the rules consulted), the same kernel tables at the end, the same
segments on the wire.

The fast engine compacts timers only while nothing subscribes to the kernel's events (a subscriber
sees every timer fire, the no-ops included), so these tests run without the suite's subscriber
that checks TCP state writes (the plain runs of the same scenarios elsewhere keep it).
"""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.engine.load
from sim.engine import SimBackend
from sim.scenario.model import Scenario
from sim.scenario.runner import run


@pytest.fixture(autouse=True)
def state_writes_are_table_rows() -> None:
    """No subscriber here: with one, the fast engine would keep every timer entry (see above)."""


@st.composite
def load_scenarios(draw: st.DrawFn) -> dict:
    ports = draw(st.integers(min_value=4, max_value=60))
    lo = draw(st.sampled_from([20000, 32768, 40001]))
    sysctls = {"ip_local_port_range": [lo, lo + ports - 1],
               "tcp_tw_reuse": draw(st.sampled_from([0, 1, 2])),
               "tcp_max_tw_buckets": draw(st.sampled_from([5, 50, 131072])),
               "tcp_timestamps": draw(st.sampled_from([0, 1, 1])),
               "tcp_fin_timeout": draw(st.sampled_from([60, 60, 3]))}
    host = {"sysctls": sysctls, "latency": draw(st.sampled_from([0.0, 0.0, 0.0005, 0.01])),
            "personality": draw(st.sampled_from(["linux", "linux", "windows"]))}
    rate = draw(st.sampled_from([5.0, 50.0, 400.0, 3000.0]))
    n = draw(st.integers(min_value=1, max_value=120))
    backlog = draw(st.sampled_from([0, 1, 4, 128]))
    served = draw(st.booleans()) or backlog > 4
    load = {"proc": "client", "addr": "127.0.0.1", "port": draw(st.sampled_from([8080, 8080, 8081])),
            "rate": rate, "duration": n / rate,
            "close_first": draw(st.sampled_from(["client", "client", "server"])),
            "reuseaddr": draw(st.booleans()), "stop_on_error": draw(st.booleans())}
    if draw(st.booleans()):
        load["bind_addr"] = "127.0.0.1"
    if served:
        load.update(accept_proc="server", listener="srv")
    steps = [{"proc": "server", "call": "socket", "as": "srv"},
             {"proc": "server", "call": "bind", "sock": "srv", "addr": "127.0.0.1", "port": 8080},
             {"proc": "server", "call": "listen", "sock": "srv", "backlog": backlog},
             {"load": load}]
    if draw(st.booleans()):
        steps.append({"load": {**load, "rate": rate / 2, "duration": min(n, 30) / rate}})
    steps += [{"sleep": draw(st.sampled_from([0.5, 3.0, 65.0]))},
              {"observe": {"what": "sockstat"}},
              {"observe": {"what": "tcp_states", "port": 8080}}]
    # the trace's wire keeps a load step's first WIRE_LIMIT segments: one-call lifecycles record
    # their segments while it has room and count them once it is full
    return {"wire_limit": draw(st.sampled_from([10_000, 0, 0, 7, 40])),
            "name": "fast-vs-plain", "host": host, "seed": draw(st.integers(0, 3)),
            "processes": {"server": {"nofile": draw(st.sampled_from([8, 4096]))},
                          "client": {"nofile": draw(st.sampled_from([10, 4096]))}},
            "steps": steps}


@st.composite
def one_call_scenarios(draw: st.DrawFn) -> dict:
    """Load steps the one-call lifecycle applies to (Linux, zero latency, an acceptor, the client
    closing first, no explicit bind), around what makes it fall back to the calls: a full range,
    TIME_WAIT takeovers, tcp_max_tw_buckets reached, too few file descriptors, a backlog of 0,
    a step to an unserved port, a sysctl changed between steps, the wire filling up."""
    ports = draw(st.integers(min_value=4, max_value=200))
    sysctls = {"ip_local_port_range": [40000, 40000 + ports - 1],
               "tcp_tw_reuse": draw(st.sampled_from([0, 1, 2])),
               "tcp_tw_reuse_delay": draw(st.sampled_from([100, 1000])),
               "tcp_max_tw_buckets": draw(st.sampled_from([5, 50, 131072])),
               "tcp_timestamps": draw(st.sampled_from([0, 1, 1]))}
    rate = draw(st.sampled_from([50.0, 400.0, 3000.0]))
    n = draw(st.integers(min_value=1, max_value=250))
    load = {"proc": "client", "addr": "127.0.0.1", "port": 8080, "rate": rate, "duration": n / rate,
            "accept_proc": "server", "listener": "srv", "reuseaddr": draw(st.booleans()),
            "stop_on_error": draw(st.booleans())}
    steps = [{"proc": "server", "call": "socket", "as": "srv"},
             {"proc": "server", "call": "bind", "sock": "srv", "addr": "127.0.0.1", "port": 8080},
             {"proc": "server", "call": "listen", "sock": "srv", "backlog": draw(st.sampled_from([0, 1, 128]))},
             {"load": load}]
    for _ in range(draw(st.integers(0, 2))):
        between = draw(st.sampled_from([{"sleep": 0.5}, {"sleep": 61.0}, {"sysctl": {"tcp_tw_reuse": 2}},
                                        {"load": {**load, "port": 8081, "duration": 5 / rate}}]))
        steps += [between, {"load": {**load, "duration": draw(st.integers(1, 150)) / rate}}]
    steps += [{"sleep": draw(st.sampled_from([0.5, 65.0]))}, {"observe": {"what": "sockstat"}}]
    return {"wire_limit": draw(st.sampled_from([10_000, 0, 7, 100])), "name": "one-call",
            "seed": draw(st.integers(0, 3)), "host": {"sysctls": sysctls},
            "processes": {"server": {"nofile": draw(st.sampled_from([8, 4096]))},
                          "client": {"nofile": draw(st.sampled_from([10, 4096]))}},
            "steps": steps}


def _run(data: dict, fast: bool) -> tuple[dict, SimBackend]:
    data = dict(data)
    limit = data.pop("wire_limit", sim.engine.load.WIRE_LIMIT)
    sc = Scenario.model_validate(data)
    b = SimBackend(seed=sc.seed, fast=fast)
    with mock.patch.object(sim.engine.load, "WIRE_LIMIT", limit):
        trace = run(sc, b, seed=sc.seed).to_dict()
    trace.pop("meta")  # the wall time of the run
    return trace, b


def _tables(b: SimBackend) -> dict:
    k = b.kernel
    tw = [(key, o.substate, o.entry, o.expires, o.ts_recent, o.ts_stamp, o.wire, o.reuse, o.connect_bind)
          for key, o in k.ehash.items() if getattr(o, "is_tw", False)]
    return {"tcp": k.tcp_rows(), "sockstat": k.sockstat(), "mib": dict(k.mib), "segments": b.segments,
            "tw": (k.tw.count, k.tw.peak, k.tw.overflows, k.tw.recycled), "tw_entries": tw,
            "ports": list((p, len(bk.owners)) for p, bk in k.bhash.buckets.items()),
            "ehash": list(k.ehash), "perturb": list(k.perturb), "isn": k.isn_next, "rng": k.rng.getstate(),
            "ehash_frees": k.ehash_frees, "bind_frees": k.bhash.frees, "rules": sorted(k.rule_hits()),
            "fds": {name: k.socket_fds(name) for name in k.procs}, "now": b.now()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(load_scenarios())
def test_fast_and_plain_engines_give_the_same_run(data):
    fast, fb = _run(data, fast=True)
    plain, pb = _run(data, fast=False)
    assert not fb.kernel.probes and fb._compact_timers()
    assert fast == plain
    assert _tables(fb) == _tables(pb)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_call_scenarios())
def test_one_call_lifecycles_give_the_same_run(data):
    fast, fb = _run(data, fast=True)
    plain, pb = _run(data, fast=False)
    assert fast == plain
    assert _tables(fb) == _tables(pb)
    assert pb.kernel.lifecycles_in_one_call == 0


def test_the_fast_path_holds_fewer_timer_entries():
    """What the fast path is for: an entry re-armed at once (FIN_WAIT2 then TIME_WAIT, here because
    the server closes a second after the client) is held by one timer entry, not two."""
    steps = [{"proc": "server", "call": "socket", "as": "srv"},
             {"proc": "server", "call": "bind", "sock": "srv", "addr": "127.0.0.1", "port": 8080},
             {"proc": "server", "call": "listen", "sock": "srv", "backlog": 128}]
    for i in range(20):
        steps += [{"proc": "client", "call": "socket", "as": f"c{i}"},
                  {"proc": "client", "call": "connect", "sock": f"c{i}", "addr": "127.0.0.1", "port": 8080},
                  {"proc": "server", "call": "accept", "sock": "srv", "as": f"a{i}"},
                  {"proc": "client", "call": "close", "sock": f"c{i}"},
                  {"sleep": 1},
                  {"proc": "server", "call": "close", "sock": f"a{i}"}]
    data = {"name": "entries", "processes": {"server": {}, "client": {}}, "steps": steps}
    _, fb = _run(data, fast=True)
    _, pb = _run(data, fast=False)
    assert fb.kernel.tw.count == pb.kernel.tw.count == 20
    tw_entries = lambda b: sum(1 for key in b.timers.queues for item in b.timers.items(key) if item and item[1] == "tw")
    assert tw_entries(fb) == 20 and tw_entries(pb) == 40


@pytest.mark.parametrize("tw_reuse,reuseaddr,latency", [(0, False, 0.0), (0, True, 0.0005), (2, False, 0.0)])
def test_refused_attempts_are_replayed_identically(tw_reuse, reuseaddr, latency):
    """Once a connect() is refused from a remembered fruitless port search, the fast engine answers
    the next attempts without making their calls (Kernel.connect_known_to_fail) while the plain
    engine makes every call: the runs are the same, and the fast one searched fewer times."""
    load = {"proc": "client", "addr": "127.0.0.1", "port": 8080, "rate": 400.0, "duration": 1.0,
            "accept_proc": "server", "listener": "srv", "reuseaddr": reuseaddr}
    data = {"name": "replayed", "seed": 1,
            "host": {"sysctls": {"ip_local_port_range": [40000, 40023], "tcp_tw_reuse": tw_reuse,
                                 "tcp_tw_reuse_delay": 200}, "latency": latency},
            "processes": {"server": {}, "client": {}},
            "steps": [{"proc": "server", "call": "socket", "as": "srv"},
                      {"proc": "server", "call": "bind", "sock": "srv", "addr": "127.0.0.1", "port": 8080},
                      {"proc": "server", "call": "listen", "sock": "srv", "backlog": 128},
                      {"load": load}, {"sleep": 61.0}, {"load": {**load, "rate": 50.0}},
                      {"observe": {"what": "sockstat"}}]}
    fast, fb = _run(data, fast=True)
    plain, pb = _run(data, fast=False)
    assert fast == plain
    assert _tables(fb) == _tables(pb)
    assert fb.kernel.port_searches_spared < pb.kernel.port_searches_spared


@pytest.mark.parametrize("tw_reuse,ports,reuseaddr,timestamps,wire_limit", [
    (0, 40, False, 1, 0), (2, 40, False, 1, 0), (2, 40, True, 1, 100), (1, 12, False, 1, 10_000),
    (2, 40, False, 0, 10_000), (2, 40, False, 1, 10_000)])
def test_one_call_lifecycles_are_identical(tw_reuse, ports, reuseaddr, timestamps, wire_limit):
    """Load steps whose lifecycles mostly go through Kernel.tcp_loopback_lifecycle, their segments
    kept in the trace's wire or only counted (a full wire from the start, or full after 100
    segments): through the range's exhaustion (tcp_tw_reuse=0), TIME_WAIT entries taken over
    (1 and 2), and their expiry; the same run as the plain engine's, call by call and segment by
    segment."""
    load = {"proc": "client", "addr": "127.0.0.1", "port": 8080, "rate": 200.0, "duration": 1.5,
            "accept_proc": "server", "listener": "srv", "reuseaddr": reuseaddr}
    data = {"name": "one-call", "seed": 2, "wire_limit": wire_limit,
            "host": {"sysctls": {"ip_local_port_range": [40000, 40000 + ports - 1], "tcp_tw_reuse": tw_reuse,
                                 "tcp_tw_reuse_delay": 100, "tcp_timestamps": timestamps}},
            "processes": {"server": {}, "client": {}},
            "steps": [{"proc": "server", "call": "socket", "as": "srv"},
                      {"proc": "server", "call": "bind", "sock": "srv", "addr": "127.0.0.1", "port": 8080},
                      {"proc": "server", "call": "listen", "sock": "srv", "backlog": 128},
                      {"load": load}, {"sleep": 30.0}, {"load": {**load, "rate": 20.0}}, {"sleep": 61.0},
                      {"load": load}, {"observe": {"what": "sockstat"}}]}
    fast, fb = _run(data, fast=True)
    plain, pb = _run(data, fast=False)
    assert fast == plain
    assert _tables(fb) == _tables(pb)
    assert pb.kernel.lifecycles_in_one_call == 0
    # every successful lifecycle but a few per step (two to learn a shape, per outcome of the
    # port search and state of the wire)
    ok = sum(s["obs"]["ok"] for s in fast["steps"] if isinstance(s.get("obs"), dict) and "ok" in s["obs"])
    assert ok - 8 * 3 <= fb.kernel.lifecycles_in_one_call < ok
    if wire_limit == 10_000:
        assert len(fast["wire"]) > 6 * ok - 6 * 8 * 3
