"""Several hosts on the real kernel: one network namespace per host, joined by veth pairs.

A scenario with ``hosts:`` runs each host as its own :class:`RealBackend` (its own zygote in its
own network namespace, with that host's sysctls and its processes); each link of the scenario
becomes a veth pair whose ends are moved into the two namespaces, given the hosts' addresses
(``/32`` or ``/128``) and a route to the other end's addresses. Calls go to the backend of the
process that makes them; observations of TCP states and sockstat add up every namespace.

Delay: this kernel has veth, TUN and tbf but not netem, so a link's one-way delay is not
reproduced here: the segments cross the veth pair at once. The runner takes each step's outcome
after the network has settled, so outcomes do not depend on the delay; a step whose outcome
would (one racing the wire) names a tolerance in the scenario. See docs/hosts.md.

Bandwidth: a link's bandwidth is applied on both veth ends with a token bucket filter (tbf, one
frame of burst), read back and recorded (``bandwidth_applied``). The data then takes real time to
cross, so after each call the backend waits for what is in flight to be acknowledged (bounded),
as the model delivers everything in flight before the next step.

Every namespace and veth end is cleaned up, even on failure: a veth end still in the host's
namespace is deleted, and the ends inside the hosts' namespaces go with them when the zygotes
die. Every command is bounded by :data:`IP_TIMEOUT`.

Ground truth: this module imports only the standard library, :mod:`sim.trace` and the real
backend.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import time
from typing import Any

from sim.trace import PROCESS_GONE, CallResult, Completion

from . import capture
from .backend import RealBackend
from .common import RealBackendError

IP_TIMEOUT = 5.0  # seconds for one `ip` or `tc` command
TBF_BURST = 1600  # bytes: one Ethernet frame (1514) fits, two do not
TBF_LIMIT = 4 << 20  # bytes the token bucket may hold queued
LINK_SETTLE_MAX = 10.0  # seconds: at most this long for the data in flight on a link to land
LINK_SETTLE_POLL = 0.005
_SEQ = itertools.count()


def _run(cmd: list[str], netns_pid: int | None = None) -> str:
    """Run ``cmd`` (inside the network namespace of ``netns_pid`` when given); its output."""
    if netns_pid is not None:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealBackendError(f"{' '.join(cmd)}: {exc}") from None
    if res.returncode != 0:
        raise RealBackendError(f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def _ip(*args: str, netns_pid: int | None = None) -> None:
    """Run ``ip ARGS`` (inside the network namespace of ``netns_pid`` when given)."""
    _run(["ip", *args], netns_pid)


def _tbf(dev: str, bandwidth: int, netns_pid: int) -> int:
    """Shape ``dev``'s transmissions to ``bandwidth`` bits/s with a token bucket filter; the rate
    the kernel took, read back (bits/s).

    The bucket holds one Ethernet frame (``burst``): the model sends each segment after the ones
    before it, with no burst; a larger TSO/GSO packet is cut into frames (tbf_segment() in
    net/sched/sch_tbf.c). ``limit`` is generous, so nothing queued is ever dropped: a lossy link
    is not what the scenario asked for.
    """
    if shutil.which("tc") is None:
        raise RealBackendError("`tc` is not installed (iproute2): a link's bandwidth cannot be applied")
    _run(["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{bandwidth}bit",
          "burst", str(TBF_BURST), "limit", str(TBF_LIMIT)], netns_pid)
    shown = json.loads(_run(["tc", "-j", "qdisc", "show", "dev", dev], netns_pid) or "[]")
    rate = next((q.get("options", {}).get("rate") for q in shown if q.get("kind") == "tbf"), None)
    if not rate:
        raise RealBackendError(f"tc: no token bucket filter on {dev} after adding one")
    return int(rate) * 8  # tc shows bytes per second


def _prefix(addr: str) -> str:
    return f"{addr}/{32 if ipaddress.ip_address(addr).version == 4 else 128}"


class TopologyBackend:
    """The :class:`sim.trace.Backend` contract over one :class:`RealBackend` per host."""

    name = "real"

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.hosts: dict[str, RealBackend] = {}
        self.proc_host: dict[str, str] = {}
        self.offsets: dict[str, float] = {}
        self.root_veths: list[str] = []  # ends still in the host's namespace
        self.meta: dict[str, Any] = {"links": []}
        self.captures: list[capture.Capture] = []  # one veth end of each link
        self.wire_note = ""
        self.shaped = 0.0  # > 0 when a link has a bandwidth: how long a link may stay quiet
        self._summary: dict[str, Any] | None = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        ok, why = RealBackend.available()
        if not ok:
            return ok, why
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                return False, f"`{tool}` is not installed (iproute2, util-linux): no veth pairs"
        return True, why

    # ------------------------------------------------------------------ set-up
    def start(self, scenario: dict[str, Any]) -> None:
        try:
            self._start(scenario)
        except BaseException:
            self.close()
            raise

    def _start(self, scenario: dict[str, Any]) -> None:
        hosts = scenario["hosts"]
        first = next(iter(hosts))
        for h, spec in hosts.items():
            procs = {n: p for n, p in (scenario.get("processes") or {}).items()
                     if ((p or {}).get("host") or first) == h}
            b = RealBackend(**self.kwargs)
            self.hosts[h] = b
            b.start({"name": f"{scenario.get('name')}.{h}", "host": spec, "processes": procs})
            for n in procs:
                self.proc_host[n] = h
        base = self.hosts[first]
        for h, b in self.hosts.items():
            self.offsets[h] = base.now() - b.now()  # b's clock started later
        for link in scenario.get("links") or []:
            self._veth(link, hosts)
        self._open_captures()

    def _open_captures(self) -> None:
        """Capture each link on its first host's veth end (both directions are seen there),
        besides each host's loopback (captured by its own backend)."""
        t0 = time.monotonic() - self.now()  # the first host's clock, as every step's time
        try:
            for link in self.meta["links"]:
                a = link["between"][0]
                self.captures.append(capture.Capture.open(self.hosts[a].zygote_pid, t0, link["devices"][a]))
        except capture.CaptureUnavailable as exc:
            self.wire_note = f"not captured: {exc}"
            return
        notes = {str(b.meta.get("wire", "")) for b in self.hosts.values()}
        bad = sorted(n for n in notes if not n.startswith("captured"))
        self.wire_note = bad[0] if bad else "captured on each host's lo and on each link's veth (AF_PACKET)"

    def _veth(self, link: dict[str, Any], hosts: dict[str, Any]) -> None:
        a, b = link["between"]
        n = next(_SEQ)
        ends = {a: f"sk{os.getpid() % 100000}v{n}a", b: f"sk{os.getpid() % 100000}v{n}b"}
        self.root_veths += list(ends.values())
        _ip("link", "add", ends[a], "type", "veth", "peer", "name", ends[b])
        for h, dev in ends.items():
            _ip("link", "set", "dev", dev, "netns", str(self.hosts[h].zygote_pid))
            self.root_veths.remove(dev)
        for h, dev in ends.items():
            peer = b if h == a else a
            pid = self.hosts[h].zygote_pid
            for addr in hosts[h].get("addresses") or []:
                extra = ["nodad"] if ipaddress.ip_address(addr).version == 6 else []
                _ip("addr", "add", _prefix(addr), "dev", dev, *extra, netns_pid=pid)
            _ip("link", "set", "dev", dev, "up", netns_pid=pid)
            for addr in hosts[peer].get("addresses") or []:
                _ip("route", "add", _prefix(addr), "dev", dev, netns_pid=pid)
        entry: dict[str, Any] = {"between": [a, b], "devices": ends, "delay": link.get("delay", 0.0),
                                 "delay_applied": 0.0}
        if link.get("bandwidth"):
            bw = int(link["bandwidth"])
            entry["bandwidth"] = bw
            entry["bandwidth_applied"] = min(_tbf(dev, bw, self.hosts[h].zygote_pid) for h, dev in ends.items())
            self.shaped = max(self.shaped, 3 * 1514 * 8 / bw)  # three frames' time
        self.meta["links"].append(entry)

    # ------------------------------------------------------------------ the contract
    def _of(self, proc: str) -> RealBackend | None:
        h = self.proc_host.get(proc)
        return self.hosts.get(h) if h is not None else None

    def now(self) -> float:
        return next(iter(self.hosts.values())).now()

    def call(self, index: int, proc: str, call: str, args: dict[str, Any]) -> CallResult:
        b = self._of(proc)
        if b is None:
            return CallResult(ret=None, err=PROCESS_GONE)
        res = b.call(index, proc, call, args)
        if call == "fork" and args.get("as"):
            self.proc_host[str(args["as"])] = self.proc_host[proc]
        if self.shaped:
            self._settle_links()
        return res

    def _in_flight(self) -> int:
        """Bytes sent and not yet acknowledged, over every host's connections (tx_queue of
        /proc/net/tcp and tcp6: write_seq - snd_una, get_tcp4_sock() in net/ipv4/tcp_ipv4.c)."""
        return sum(int(f[4].split(":")[0], 16) for b in self.hosts.values()
                   for f in capture.tcp_rows(b.zygote_pid) if len(f) > 4)

    def _settle_links(self) -> None:
        """Wait for the data in flight to land, as the model does before the next step: a link
        with a bandwidth takes real time to carry it. Bounded: no progress for ``self.shaped``
        seconds (a peer's closed window), or LINK_SETTLE_MAX in all."""
        start = last = time.monotonic()
        before = self._in_flight()
        while before and time.monotonic() - start < LINK_SETTLE_MAX:
            time.sleep(LINK_SETTLE_POLL)
            now = self._in_flight()
            if now != before:
                before, last = now, time.monotonic()
            elif time.monotonic() - last > self.shaped + 0.05:
                break

    def wire_segments(self) -> list[Any]:
        """The segments every host's loopback and every link carried since the last call, in the
        order the kernels stamped them (each capture's clock is the same CLOCK_REALTIME)."""
        segs = []
        for h, b in self.hosts.items():
            for seg in b.wire_segments():
                seg.time = round(seg.time + self.offsets[h], 6)
                segs.append(seg)
        for c in self.captures:
            segs.extend(c.drain())
        return sorted(segs, key=lambda s: s.time)

    def endpoint_states(self) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for b in self.hosts.values():
            out.update(b.endpoint_states())
        return out

    def completions(self) -> list[Completion]:
        done = []
        for h, b in self.hosts.items():
            for c in b.completions():
                done.append(Completion(c.index, c.result, c.time + self.offsets[h]))
        return sorted(done, key=lambda c: c.time)

    def sleep(self, seconds: float) -> None:
        next(iter(self.hosts.values())).sleep(seconds)

    def observe(self, obs: dict[str, Any]) -> Any:
        what = obs["what"]
        if what in ("fds", "queues"):
            b = self._of(obs["proc"])
            return "PROCESS_GONE" if b is None else b.observe(obs)
        parts = [b.observe(obs) for b in self.hosts.values()]
        if what == "tcp_states":
            return {k: sorted(x for p in parts for x in p[k]) for k in ("local", "remote")}
        if what == "sockstat":
            return {k: sum(p.get(k, 0) for p in parts) for k in parts[0]}
        raise ValueError(what)

    def load(self, index: int, spec: dict[str, Any]) -> dict[str, Any]:
        """A load step from the client's namespace; its accepting process may be on another host,
        whose namespace runs the accept loop while the connections cross the link."""
        first = next(iter(self.hosts))
        client = self.proc_host.get(str(spec["proc"]), first)  # unknown: that backend says gone
        server = self.proc_host.get(str(spec.get("accept_proc"))) if spec.get("accept_proc") else None
        side = self.hosts[server] if server is not None and server != client else None
        return self.hosts[client].load(index, spec, server_side=side)

    def close(self) -> dict[str, Any]:
        if self._summary is not None:
            return self._summary
        summaries: dict[str, Any] = {}
        for c in self.captures:
            c.close()
        self.captures = []
        try:
            for h, b in self.hosts.items():
                summaries[h] = b.close()
        finally:
            for dev in self.root_veths:  # deleting one end deletes its peer
                try:
                    _ip("link", "del", "dev", dev)
                except RealBackendError:
                    pass
            self.root_veths = []
        first = next(iter(summaries.values()), {})
        unapplied = {f"{h}.{k}": v for h, s in summaries.items() for k, v in (s.get("unapplied") or {}).items()}
        self._summary = {**first, "unapplied": unapplied, "hosts": summaries, "links": self.meta["links"],
                         "processes": {p: pid for s in summaries.values() for p, pid in (s.get("processes") or {}).items()},
                         "left_running": [pid for s in summaries.values() for pid in s.get("left_running") or []],
                         "wire": self.wire_note or "not captured: the namespaces were not made"}
        return self._summary

    def __enter__(self) -> TopologyBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def real_backend_for(scenario: Any, **kwargs: Any) -> Any:
    """The real backend a scenario needs: one namespace, or one per host joined by veth pairs."""
    hosts = scenario.get("hosts") if isinstance(scenario, dict) else getattr(scenario, "hosts", None)
    return TopologyBackend(**kwargs) if hosts else RealBackend(**kwargs)
