"""The answer in words: the first lines of a what-if report.

A what-if report opens with what its numbers mean: when the first connection fails and with which
error, the rate the ephemeral ports sustain towards each destination (free ports / how long each
port is held), what each swept parameter changed, and the limits of the answer (the kernel rules
that make it hold only here, such as ``tcp_tw_reuse=2`` applying to loopback only).

Every sentence is computed from the run (its metrics, its closed-form estimate and its scenario);
nothing is written for a case that did not occur.
"""

from __future__ import annotations

import ipaddress
from typing import Any

# What an errno means when connect() or socket() of a load step returns it (man 2 connect,
# man 2 socket, and the kernel functions named).
ERRNO_MEANING = {
    "EADDRNOTAVAIL": "connect() found no free local port towards the destination "
                     "(__inet_hash_connect() in net/ipv4/inet_hashtables.c)",
    "EADDRINUSE": "the local address and port are taken (inet_csk_get_port())",
    "ENETUNREACH": "the destination is on no interface or link of the client's host "
                   "(ip_route_connect(): no route)",
    "ECONNREFUSED": "the server answered with RST: nothing listens there, or its accept queue "
                    "overflowed with tcp_abort_on_overflow",
    "ETIMEDOUT": "the handshake did not finish in time (SYN or SYN-ACK lost, or a full queue)",
    "ECONNRESET": "the peer reset the connection",
    "EMFILE": "the process reached its file limit (RLIMIT_NOFILE)",
    "ENFILE": "the host reached fs.file-max",
    "ENOBUFS": "the kernel refused the memory for the socket",
}


def _secs(v: float) -> str:
    return f"{v:.3f} s" if v < 100 else f"{v:,.1f} s"


def _n(v: Any) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.3g}" if v < 100 else f"{v:,.0f}"
    return f"{int(v):,}"


def show_param(v: Any) -> str:
    """A parameter's value as a sweep writes it: a range as ``lo-hi``, a float without trailing zeros."""
    if isinstance(v, (list, tuple)):
        return "-".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _is_loopback(addr: str | None) -> bool:
    if not addr:
        return False
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _load(sc: Any) -> Any:
    from ..scenario.model import LoadStep

    if sc is None:
        return None
    return next((s.load for s in sc.steps if isinstance(s, LoadStep)), None)


def client_sysctls(sc: Any) -> Any:
    """The sysctls of the host the load's client runs on."""
    hosts = getattr(sc, "host_of", None)
    load = _load(sc)
    if callable(hosts) and load is not None:
        return hosts(load.proc).sysctls
    return sc.host.sysctls


def _where(pt: dict[str, Any], names: list[str]) -> str:
    return ", ".join(f"{n}={show_param(pt['params'].get(n))}" for n in names)


# ----------------------------------------------------------------------------- sentences


def first_failure(pt: dict[str, Any], sc: Any) -> str:
    """When the first connection fails, and with which error (or that none does)."""
    m = pt.get("metrics") or {}
    load = _load(sc)
    if m.get("first_error"):
        err = m["first_error"]
        why = ERRNO_MEANING.get(err)
        failed = sum((m.get("errors") or {}).values())
        return (f"the first connection fails after {_secs(m['first_error_at'])} with {err}"
                + (f" ({why})" if why else "")
                + f"; {_n(failed)} of {_n(m.get('attempts') or 0)} attempts fail"
                + (f", {100 * (m.get('ok_fraction') or 0):.1f} % succeed" if m.get("attempts") else ""))
    span = f" in the {_n(load.duration)} s of load" if load is not None else ""
    return f"no connection fails{span}: {_n(m.get('ok') or 0)} of {_n(m.get('attempts') or 0)} succeed"


def sustainable(pt: dict[str, Any], sc: Any) -> str | None:
    """The rate the ephemeral ports carry towards the destination: free ports / hold time."""
    e = pt.get("estimate")
    load = _load(sc)
    if not e or load is None:
        return None
    dest = f"{load.addr}:{load.port}"
    if not e.get("hold_seconds"):
        return (f"towards {dest} the client's ports are released at close ({e['basis']}): the "
                f"{_n(e['ports'])} ephemeral ports do not limit the rate")
    rate = e["ports"] / e["hold_seconds"]
    held = ("TIME_WAIT" if e["hold_seconds"] >= 60 else "tcp_tw_reuse_delay")
    verdict = ("enough for" if rate >= e["rate"] else f"{100 * rate / e['rate']:.1f} % of")
    return (f"towards {dest}: {_n(e['ports'])} free ports / {e['hold_seconds']:g} s ({held}) = "
            f"{_n(rate)} connections/s, {verdict} the {_n(e['rate'])}/s asked")


def _change(pts: list[dict[str, Any]], name: str) -> str:
    """How the outcome moved across one parameter's values (the other parameters fixed)."""
    parts = []
    vals = [show_param(p["params"].get(name)) for p in pts]
    firsts = [p["metrics"].get("first_error") and
              f"{p['metrics']['first_error']} after {_secs(p['metrics']['first_error_at'])}" or "none"
              for p in pts]
    if len(pts) <= 4:
        parts.append("first failure " + " → ".join(firsts))
        parts.append("succeeded " + " → ".join(f"{100 * (p['metrics'].get('ok_fraction') or 0):.1f} %"
                                                for p in pts))
        parts.append("peak TIME_WAIT " + " → ".join(_n(p["metrics"].get("time_wait_peak") or 0) for p in pts))
        return f"{name} {' → '.join(vals)}: " + "; ".join(parts)
    fails = [p for p in pts if p["metrics"].get("first_error")]
    if not fails:
        parts.append("no connection fails at any value")
    elif len(fails) == len(pts):
        parts.append("connections fail at every value")
    else:
        parts.append(f"the first failures appear at {name}={show_param(fails[0]['params'].get(name))} "
                     f"({firsts[pts.index(fails[0])]})")
    fr = [p["metrics"].get("ok_fraction") or 0 for p in pts]
    parts.append(f"succeeded {100 * fr[0]:.1f} % at {vals[0]} to {100 * fr[-1]:.1f} % at {vals[-1]}")
    return f"{name} {vals[0]} to {vals[-1]}: " + "; ".join(parts)


def changes(run: dict[str, Any], points: list[dict[str, Any]], max_lines: int = 3) -> list[str]:
    """One sentence per swept parameter (per combination of the others, a few at most)."""
    swept = [p["name"] for p in run["params"] if len(p["values"]) > 1]
    out = []
    for name in swept:
        others = [n for n in swept if n != name]
        order = {repr(v): i for i, v in enumerate(next(p["values"] for p in run["params"] if p["name"] == name))}
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in points:
            groups.setdefault(_where(p, others), []).append(p)
        for i, (label, pts) in enumerate(groups.items()):
            if i >= max_lines:
                out.append(f"{name}: {len(groups) - max_lines} more combination(s) of {', '.join(others)} in the table")
                break
            pts.sort(key=lambda p: order.get(repr(p["params"].get(name)), 0))
            out.append(_change(pts, name) + (f" (with {label})" if label else ""))
    return out


def limits(points: list[tuple[dict[str, Any], Any]]) -> list[str]:
    """What the answer does not cover, from the scenarios that ran."""
    out: list[str] = []
    loads = [(pt, sc, _load(sc)) for pt, sc in points if _load(sc) is not None]
    if not loads:
        return ["these figures come from the simulator; the rules behind them are cross-checked "
                "against the real kernel by the bundled scenarios (`socksim rules`)"]
    loop = [_is_loopback(ld.addr) for _, _, ld in loads]
    reuse = [client_sysctls(sc).tcp_tw_reuse for _, sc, _ in loads]
    if any(r == 2 and lp for r, lp in zip(reuse, loop)):
        out.append("`tcp_tw_reuse=2` (the default) lets connect() take over TIME_WAIT entries only "
                   "towards loopback (`tcp_twsk_unique()` in net/ipv4/tcp_ipv4.c): between two "
                   "machines it acts as 0, so what it gains here is not gained across a network; "
                   "`tcp_tw_reuse=1` applies to every destination")
    if any(r == 2 and not lp for r, lp in zip(reuse, loop)):
        out.append("`tcp_tw_reuse=2` gives nothing here: the destination is not loopback, and "
                   "`tcp_twsk_unique()` (net/ipv4/tcp_ipv4.c) reuses TIME_WAIT entries at 2 only "
                   "towards loopback")
    if any(r and client_sysctls(sc).tcp_timestamps == 0 for r, (_, sc, _) in zip(reuse, loads)):
        out.append("TIME_WAIT reuse needs TCP timestamps: with `tcp_timestamps=0` "
                   "`tcp_twsk_unique()` never reuses an entry")
    out += _link_limits(loads)
    out.append("the port limit is per destination: __inet_hash_connect() needs a free 4-tuple, so "
               "each other server address or port has the whole range again")
    closers = {ld.close_first for _, _, ld in loads}
    if "client" in closers:
        out.append("TIME_WAIT stays on the side that closes first, here the client; had the server "
                   "closed first, the client's ports would be released at close and the TIME_WAIT "
                   "entries would be the server's")
    if "server" in closers:
        out.append("the server closes first, so TIME_WAIT entries (and their memory) are the "
                   "server's; a client that closes first holds each port for 60 s instead")
    if any(ld.bind_addr for _, _, ld in loads):
        out.append("bind() before connect() takes the port at bind time (inet_csk_get_port()), "
                   "which the closed form does not cover")
    out.append("one client process at a constant rate; TIME_WAIT ends 60 to 62 s after entry on "
               "the timer wheel; figures from the simulator, whose rules the bundled scenarios "
               "cross-check against the real kernel")
    return out


def _link_limits(loads: list[tuple[dict[str, Any], Any, Any]]) -> list[str]:
    """What a link's delay changes: a port is held from connect() to the end of TIME_WAIT, and the
    handshake and the FIN exchange add about four one-way delays before TIME_WAIT begins."""
    out = []
    seen = set()
    for _, sc, ld in loads:
        if not getattr(sc, "hosts", None):
            continue
        a, b = sc.host_name_of(ld.proc), sc.host_with_address(ld.addr)
        link = sc.link_between(a, b) if b is not None and b != a else None
        if link is None or link.delay in seen:
            continue
        seen.add(link.delay)
        extra = 4 * link.delay
        out.append(f"the {link.delay * 1000:g} ms one-way delay between {a} and {b} adds about "
                   f"{extra * 1000:g} ms (SYN and SYN-ACK, then FIN and FIN) to the time each port is "
                   f"held, {100 * extra / 60:.2g} % of the 60 s of TIME_WAIT: it hardly moves the "
                   "answer; the real-kernel checks of this topology run the link without delay "
                   "(no netem here; see docs/hosts.md)")
    return out


# ----------------------------------------------------------------------------- blocks


def _firsts(run_params: list[dict[str, Any]], points: list[tuple[dict[str, Any], Any]]) -> list[str]:
    swept = [p["name"] for p in run_params if len(p["values"]) > 1]
    ran = [(pt, sc) for pt, sc in points if "metrics" in pt]
    if len(ran) <= 6:
        return [(f"at {_where(pt, swept)}: " if swept else "") + first_failure(pt, sc) for pt, sc in ran]
    fails = [(pt, sc) for pt, sc in ran if pt["metrics"].get("first_error")]
    if not fails:
        return [f"no connection fails at any of the {len(ran)} points"]
    early = min(fails, key=lambda x: x[0]["metrics"]["first_error_at"])
    late = max(fails, key=lambda x: x[0]["metrics"]["first_error_at"])
    out = [f"connections fail at {len(fails)} of {len(ran)} points; earliest at {_where(early[0], swept)}: "
           + first_failure(*early)]
    if late is not early:
        out.append(f"latest at {_where(late[0], swept)}: " + first_failure(*late))
    ok = [pt for pt, _ in ran if not pt["metrics"].get("first_error")]
    if ok:
        out.append(f"no connection fails at {len(ok)} point(s), e.g. {_where(ok[0], swept)}")
    return out


def _rates(points: list[tuple[dict[str, Any], Any]], swept: list[str]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for pt, sc in points:
        s = sustainable(pt, sc)
        if s:
            seen.setdefault(s, []).append(_where(pt, swept))
    if len(seen) == 1:
        return ["Sustainable rate " + next(iter(seen))]
    return [f"Sustainable rate at {', '.join(w[:2])}{' ...' if len(w) > 2 else ''}: {s}" for s, w in seen.items()]


def sweep_answer(run: dict[str, Any], points: list[tuple[dict[str, Any], Any]]) -> tuple:
    """The ``("answer", heading, sentences)`` block of a sweep report."""
    swept = [p["name"] for p in run["params"] if len(p["values"]) > 1]
    lines = [("First failure " if s.startswith("at ") else "First failure: ") + s
             for s in _firsts(run["params"], points)]
    lines += _rates([(pt, sc) for pt, sc in points if "metrics" in pt], swept)
    lines += ["What changed: " + c for c in changes(run, [pt for pt, _ in points if "metrics" in pt])]
    lines += ["Limits: " + lim for lim in limits(points)]
    return ("answer", "The answer", lines)


def trace_answer(point: dict[str, Any], sc: Any) -> tuple:
    """The ``("answer", heading, sentences)`` block of a one-run report with a load step."""
    lines = ["First failure: " + first_failure(point, sc)]
    s = sustainable(point, sc)
    if s:
        lines.append("Sustainable rate " + s)
    lines += ["Limits: " + lim for lim in limits([(point, sc)])]
    return ("answer", "The answer", lines)
