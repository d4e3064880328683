"""The kernel object graph at one moment, as a networkx graph built from the kernel's public tables.

    process --fd table--> fd 3 --> open file (struct file, refcount) --> TCB (struct sock)
                                                                         |--> send buffer
                                                                         |--> receive buffer
                                                                         |--> accept queue --> queued TCBs
    TCB / TIME_WAIT entry --owns--> port (bind bucket)        buffers --charged to--> TCP memory
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx

from ..kernel.tcp_states import State
from ..kernel.timewait import TimeWaitSock

if TYPE_CHECKING:
    from .recording import _Recorder


# Past this many objects of one kind, a snapshot shows the first ones and one summary node (a
# load step can leave thousands of TIME_WAIT entries).
MAX_OBJECTS = 40


def addr_text(a: Any, p: Any) -> str:
    if a is None:
        return "*"
    a = str(a)
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def kernel_graph(k: Any, now: float, names: dict[str, dict[int, str]] | None = None,
                 rec: _Recorder | None = None) -> nx.DiGraph:
    """The kernel's object graph as it is now (plain data in node and edge attributes)."""
    b = _Builder(k, now, names or {}, rec)
    b.processes()
    b.tcbs()
    b.listeners()
    b.timewait()
    b.ports()
    b.memory()
    b.meta()
    return b.g


class _Builder:
    """One object graph under construction, from the kernel's public tables."""

    def __init__(self, k: Any, now: float, names: dict[str, dict[int, str]], rec: _Recorder | None):
        self.k, self.now, self.names, self.rec = k, now, names, rec
        self.g = nx.DiGraph(time=round(now, 9))
        self.oid = rec.oid if rec is not None else _fallback_ids()
        self.tracks = rec.rec.tracks if rec is not None else {}
        self.socks: dict[str, Any] = {}

    def tcb_id(self, sk: Any) -> str:
        return self.oid(sk, "tcb")

    def processes(self) -> None:
        g, holders = self.g, {}
        for pname, p in self.k.procs.items():
            pid = f"proc:{pname}"
            fds = getattr(p.files, "fds", {})
            std = sorted(fd for fd, f in fds.items() if getattr(f, "sock", None) is None)
            g.add_node(pid, kind="process", name=pname, pid=getattr(p, "pid", 0), uid=getattr(p, "uid", 0),
                       alive=getattr(p, "alive", True), nofile=getattr(p.files, "nofile", 0), nfds=len(fds),
                       std=std, cluster=pname)
            if std:
                sid = f"std:{pname}"
                g.add_node(sid, kind="std", proc=pname, fds=std, cluster=pname)
                g.add_edge(pid, sid, rel="fd table")
            for fd, f in sorted(fds.items()):
                sk = getattr(f, "sock", None)
                if sk is None:
                    continue
                fid = f"fd:{pname}:{fd}"
                g.add_node(fid, kind="fd", proc=pname, fd=fd, name=self.names.get(pname, {}).get(fd), cluster=pname)
                g.add_edge(pid, fid, rel="fd table")
                file_id = self.oid(f, "file")
                holders.setdefault(file_id, []).append(f"{pname}:{fd}")
                if file_id not in g:
                    g.add_node(file_id, kind="file", refs=getattr(f, "f_count", 1),
                               nonblock=bool(getattr(f, "nonblock", False)))
                g.add_edge(fid, file_id, rel="refers to")
                t = self.tcb_id(sk)
                self.socks[t] = sk
                g.add_edge(file_id, t, rel="socket")
        for file_id, hs in holders.items():
            g.nodes[file_id]["holders"] = hs

    def tcbs(self) -> None:
        k, g = self.k, self.g
        extra = list(getattr(k, "socks", ()))
        for lst in getattr(k, "listeners", {}).values():
            extra.extend(lst)
        for o in getattr(k, "ehash", {}).values():
            if not isinstance(o, TimeWaitSock):
                extra.append(o)
        for b in list(getattr(k, "bhash", None).buckets.values()) if getattr(k, "bhash", None) else []:
            extra.extend(o for o in b.owners if not isinstance(o, TimeWaitSock))
        for sk in sorted(extra, key=lambda s: getattr(s, "id", 0)):
            self.socks.setdefault(self.tcb_id(sk), sk)
        shown = hidden = 0
        for t, sk in self.socks.items():
            if t not in g and shown >= MAX_OBJECTS:
                hidden += 1
                continue
            shown += 1
            _add_tcb(g, t, sk, self.tracks.get(t, {}))
        if hidden:
            g.add_node("more:tcb", kind="more", what="TCBs", count=hidden)

    def listeners(self) -> None:
        """Listeners: their accept queues and pending requests."""
        g = self.g
        for t, sk in self.socks.items():
            if t not in g:
                continue
            if getattr(sk, "tcp_state", None) == State.LISTEN:
                q = list(getattr(sk, "accept_q", ()))
                qid = f"acceptq:{t}"
                g.add_node(qid, kind="acceptq", queued=len(q), backlog=getattr(sk, "backlog", 0),
                           limit=getattr(sk, "backlog", 0) + 1, overflows=getattr(sk, "listen_overflows", 0))
                g.add_edge(t, qid, rel="accept queue")
                for child in q:
                    c = self.tcb_id(child)
                    if c in g:
                        g.add_edge(qid, c, rel="queued")
            parent = getattr(sk, "parent", None)
            if getattr(sk, "is_request", False) and parent is not None and self.tcb_id(parent) in g:
                g.add_edge(self.tcb_id(parent), t, rel="SYN_RECV request")

    def timewait(self) -> None:
        """TIME_WAIT (and FIN_WAIT2) minisocks."""
        k, g, rec, now = self.k, self.g, self.rec, self.now
        tws = [o for o in getattr(k, "ehash", {}).values() if isinstance(o, TimeWaitSock)]
        fires = _timer_dues(rec.backend if rec is not None else None) if tws else {}
        for n, tw in enumerate(tws):
            if n >= MAX_OBJECTS:
                g.add_node("more:tw", kind="more", what="TIME_WAIT entries", count=len(tws) - MAX_OBJECTS)
                break
            w = self.oid(tw, "tw")
            src = rec.tw_from.get(w) if rec is not None else None
            info = self.tracks.get(src, {}) if src else {}
            proc = info.get("proc")
            pobj = k.procs.get(proc) if proc else None
            g.add_node(w, kind="timewait", state=tw.shown_state, laddr=tw.laddr, lport=tw.lport,
                       raddr=tw.raddr, rport=tw.rport, reuse=bool(tw.reuse), reuseport=bool(tw.reuseport),
                       entry=round(tw.entry, 6), expires=round(fires.get(id(tw), tw.expires), 6),
                       nominal=round(tw.expires, 6), remaining=round(fires.get(id(tw), tw.expires) - now, 6),
                       track=src, origin=info.get("label"), origin_proc=proc,
                       origin_alive=(getattr(pobj, "alive", True) if pobj is not None else None))

    def ports(self) -> None:
        k, g = self.k, self.g
        for proto, table in (("tcp", getattr(k, "bhash", None)), ("udp", getattr(k, "udp_ports", None))):
            if table is None:
                continue
            for n, (port, b) in enumerate(sorted(table.buckets.items())):
                if n >= MAX_OBJECTS:
                    g.add_node(f"more:{proto}port", kind="more", what=f"{proto.upper()} ports",
                               count=len(table.buckets) - MAX_OBJECTS)
                    break
                pid = f"port:{proto}:{port}"
                g.add_node(pid, kind="port", proto=proto, port=port, owners=len(b.owners),
                           bind_owner=bool(getattr(b, "blocked", True)))
                for o in b.owners:
                    oid_ = self.oid(o, "tw") if isinstance(o, TimeWaitSock) else self.tcb_id(o)
                    if oid_ in g:
                        g.add_edge(oid_, pid, rel="owns")

    def memory(self) -> None:
        g, pool = self.g, getattr(self.k, "pool", None)
        if pool is None:
            return
        limits = ([pool.low, pool.pressure, pool.high] if hasattr(pool, "high")
                  else [getattr(pool, "limit", 0)])
        g.add_node("pool", kind="pool", bytes=pool.bytes, pages=getattr(pool, "pages", (pool.bytes + 4095) // 4096),
                   tcp_mem=limits, peak=getattr(pool, "peak", 0), pressure=bool(getattr(pool, "in_pressure", False)),
                   name=("nonpaged pool" if not hasattr(pool, "high") else "TCP memory"))
        for n, d in list(g.nodes(data=True)):
            if d["kind"] == "buffer" and d["bytes"] > 0:
                g.add_edge(n, "pool", rel="charged to")

    def meta(self) -> None:
        k = self.k
        tw_table = getattr(k, "tw", None)
        self.g.graph.update(
            sockstat=k.sockstat() if hasattr(k, "sockstat") else {},
            tw_count=getattr(tw_table, "count", 0), tw_max=getattr(tw_table, "max_buckets", 0),
            mib=dict(getattr(k, "mib", {})),
            sysctls={key: k.sysctls.get(key) for key in (
                "ip_local_port_range", "tcp_tw_reuse", "tcp_max_tw_buckets", "somaxconn", "tcp_mem",
                "tcp_fin_timeout", "tcp_timestamps")} if hasattr(k, "sysctls") else {},
            tw_len=getattr(k, "TIME_WAIT_LEN", 60.0),
            personality=getattr(k, "personality", "linux"),
        )


def _timer_dues(backend: Any) -> dict[int, float]:
    """When each pending kernel timer really fires (the engine rounds expiries as the timer wheel
    does), by id of the timer's object; only entries of the object's current generation count."""
    out: dict[int, float] = {}
    queues = getattr(getattr(backend, "timers", None), "queues", None)
    if not isinstance(queues, dict):
        return out
    for q in queues.values():
        for entry in list(q):
            try:
                due, (kind, obj, gen) = entry
            except (TypeError, ValueError):
                continue
            if getattr(obj, "gen", gen) == gen:
                out[id(obj)] = max(float(due), out.get(id(obj), 0.0))
    return out


def _fallback_ids() -> Any:
    table: dict[int, tuple[Any, str]] = {}
    counters: dict[str, int] = {}

    def oid(obj: Any, prefix: str) -> str:
        hit = table.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        counters[prefix] = counters.get(prefix, 0) + 1
        table[id(obj)] = (obj, f"{prefix}{counters[prefix]}")
        return table[id(obj)][1]

    return oid


def _add_tcb(g: nx.DiGraph, t: str, sk: Any, info: dict[str, Any]) -> None:
    kind = getattr(sk, "kind", "tcp")
    st = state_name(sk.tcp_state) if kind == "tcp" else kind.upper()
    g.add_node(t, kind="tcb", proto=kind, family=getattr(sk, "family", 4), state=st,
               laddr=sk.laddr, lport=sk.lport, raddr=sk.raddr, rport=sk.rport,
               reuse=bool(getattr(sk, "reuse", False)), reuseport=bool(getattr(sk, "reuseport", False)),
               linger=list(getattr(sk, "linger", (0, 0))), orphan=bool(getattr(sk, "dead", False)),
               request=bool(getattr(sk, "is_request", False)), backlog=getattr(sk, "backlog", 0),
               sndbuf=getattr(sk, "sndbuf", 0), rcvbuf=getattr(sk, "rcvbuf", 0),
               snd_q=getattr(sk, "snd_q", 0), rcv_q=getattr(sk, "rcv_q", 0),
               unsent=getattr(sk, "unsent", 0), err=getattr(sk, "err", None),
               fin_rcvd=bool(getattr(sk, "done", False)), shutdown=getattr(sk, "shutdown", 0),
               uid=getattr(sk, "uid", 0), label=info.get("label"), origin_step=info.get("step"),
               role=info.get("role"))
    if kind == "tcp" and st != "LISTEN" and not getattr(sk, "is_request", False):
        from ..kernel.buffers import payload_capacity

        for d, size, used in (("send", sk.sndbuf, sk.snd_q), ("receive", sk.rcvbuf, sk.rcv_q)):
            bid = f"{'snd' if d == 'send' else 'rcv'}:{t}"
            g.add_node(bid, kind="buffer", dir=d, bytes=used, size=size, capacity=payload_capacity(size),
                       unsent=sk.unsent if d == "send" else 0)
            g.add_edge(t, bid, rel=f"{d} buffer")


def changed_nodes(before: nx.DiGraph, after: nx.DiGraph) -> set[str]:
    """Nodes created or changed between two snapshots (what a step did)."""
    out = set()
    for n, d in after.nodes(data=True):
        if n not in before:
            out.add(n)
            continue
        b = before.nodes[n]
        if {k: v for k, v in d.items() if k != "remaining"} != {k: v for k, v in b.items() if k != "remaining"}:
            out.add(n)
        elif set(after.successors(n)) != set(before.successors(n)):
            out.add(n)
    return out


def port_owners(g: nx.DiGraph, port: int, proto: str = "tcp") -> list[tuple[str, dict[str, Any]]]:
    pid = f"port:{proto}:{port}"
    if pid not in g:
        return []
    return [(n, g.nodes[n]) for n in g.predecessors(pid)]


def holders_of(g: nx.DiGraph, tcb: str) -> list[str]:
    """'client:3' for every fd that reaches this TCB."""
    out: list[str] = []
    for f in g.predecessors(tcb) if tcb in g else ():
        if g.nodes[f].get("kind") == "file":
            out.extend(g.nodes[f].get("holders", []))
    return out

def state_name(st: Any) -> str:
    try:
        return State(int(st)).name
    except (ValueError, TypeError):
        return str(st)
