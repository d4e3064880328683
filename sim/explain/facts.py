"""Facts for an explanation, read from the recorded object graphs before and after a step."""

from __future__ import annotations

import networkx as nx

from ..graph import addr_text, port_owners
from ..trace import StepRecord
from .text import call_text


class Facts:
    """The kernel facts behind a step (a part of :class:`~.explainer.Explainer`)."""

    # ------------------------------------------------------------------ facts from the tables
    def _state_facts(self, i: int, rec: StepRecord, gb: nx.DiGraph, ga: nx.DiGraph) -> list[str]:
        out: list[str] = []
        now = rec.time
        tid = self.r.step_sock.get(i)
        if rec.kind == "call" and tid and tid in gb and rec.call not in ("socket",):
            out.append(self._describe_tcb(tid, gb, "the socket"))
        call = rec.call or ""
        sock = rec.args.get("sock")
        if rec.kind == "call" and sock is not None and not tid and rec.proc and call not in ("close", "closesocket"):
            out += self._fd_facts(rec.proc, gb, lowest=False)
            num = sock if isinstance(sock, int) else None
            for n, d in gb.nodes(data=True):
                if num is not None and d.get("kind") == "fd" and d["fd"] == num and d["proc"] != rec.proc:
                    out.append(f"fd {num} is open in process {d['proc']}" + (f" ({d['name']})" if d.get("name") else "")
                               + f", not in {rec.proc}")
        if rec.kind == "call" and call in ("socket", "accept", "dup", "dup2") and rec.proc:
            out += self._fd_facts(rec.proc, gb)
        if call == "bind":
            port = int(rec.args.get("port", 0) or 0)
            out += self._port_facts(port, tid, gb, now) if port else [
                "port 0: the kernel picks a free port from ip_local_port_range "
                f"{gb.graph.get('sysctls', {}).get('ip_local_port_range')}"]
        elif call == "listen" and tid in gb:
            port = gb.nodes[tid].get("lport") or 0
            if port:
                out += self._port_facts(port, tid, gb, now)
            else:
                out.append("the socket is not bound: listen() picks a port itself (autobind)")
        elif call == "connect":
            out += self._connect_facts(rec, tid, gb, now)
        elif call == "accept" and tid in gb:
            q = f"acceptq:{tid}"
            if q in gb:
                d = gb.nodes[q]
                out.append(f"the accept queue holds {d['queued']} connection(s); it is full above "
                           f"{d['backlog']} (backlog {d['backlog']} admits {d['limit']})")
        elif call in ("close", "closesocket", "shutdown", "exit", "dup2"):
            out += self._close_facts(rec, tid, gb)
        elif call == "fork" and rec.proc:
            fds = [d for n, d in gb.nodes(data=True) if d.get("kind") == "fd" and d["proc"] == rec.proc]
            if fds:
                out.append(f"{rec.proc}'s fds {', '.join(str(d['fd']) for d in fds)} are copied into the "
                           f"child: each copy refers to the same open file (its reference count goes up by one)")
        elif call in ("send", "recv") and tid in gb:
            out += self._data_facts(rec, tid, gb)
        elif rec.kind == "sleep":
            for j in range(i):
                b = self.trace.steps[j]
                if b.blocked and (b.completed_after is None or b.completed_after >= i) and b.proc:
                    until = f" until step {b.completed_after}" if b.completed_after is not None else ""
                    out.append(f"{b.proc} is blocked in {call_text(b)} (step {j}){until}: nothing else runs in "
                               f"that process meanwhile, not even its timers")
            end = now + float(rec.args.get("seconds", 0))
            for n, d in gb.nodes(data=True):
                if d.get("kind") == "timewait" and now < d["expires"] <= end:
                    out.append(f"the {d['state']} entry {addr_text(d['laddr'], d['lport'])} -> "
                               f"{addr_text(d['raddr'], d['rport'])} expires at t={d['expires']:g} s, within this sleep")
            tws = sum(1 for _, d in gb.nodes(data=True) if d.get("kind") == "timewait")
            left = sum(1 for _, d in ga.nodes(data=True) if d.get("kind") == "timewait")
            if tws or left:
                out.append(f"TIME_WAIT entries: {tws} before, {left} after")
        elif rec.kind == "observe" and rec.args.get("what") == "tcp_states":
            port = rec.args.get("port")
            rows = [d for _, d in gb.nodes(data=True) if d.get("kind") in ("tcb", "timewait")
                    and (d.get("lport") == port or d.get("rport") == port) and d.get("proto", "tcp") == "tcp"
                    and not (d.get("kind") == "tcb" and d.get("state") == "CLOSE")]
            for d in rows:
                out.append(f"{addr_text(d['laddr'], d['lport'])}" + (f" -> {addr_text(d['raddr'], d['rport'])}" if d.get("raddr") else "")
                           + f" {d['state']}" + (f" ({d['label']})" if d.get("label") else "")
                           + (f" (left by the {d['origin']})" if d.get("origin") else ""))
        return out

    def _describe_tcb(self, tid: str, g: nx.DiGraph, what: str) -> str:
        d = g.nodes[tid]
        who = d.get("label") or f"socket {tid}"
        where = (f"{addr_text(d['laddr'], d['lport'])} -> {addr_text(d['raddr'], d['rport'])}" if d.get("raddr")
                 else (f"bound to {addr_text(d['laddr'], d['lport'])}" if d.get("lport") else "not bound"))
        flags = [f for f, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
        st = d["state"] if d["proto"] == "tcp" else d["proto"].upper()
        return f"{who}: {st}, {where}, " + (" and ".join(flags) if flags else "no SO_REUSEADDR")

    def _fd_facts(self, proc: str, g: nx.DiGraph, lowest: bool = True) -> list[str]:
        pn = f"proc:{proc}"
        if pn not in g:
            return []
        used = set()
        for n, d in g.nodes(data=True):
            if d.get("kind") == "fd" and d["proc"] == proc:
                used.add(d["fd"])
            if d.get("kind") == "std" and d["proc"] == proc:
                used.update(d["fds"])
        free = 0
        while free in used:
            free += 1
        nofile = g.nodes[pn].get("nofile")
        std = g.nodes[pn].get("std") or []
        out = [f"open fds in {proc}: {', '.join(map(str, sorted(used))) or 'none'}"
               + (f" ({', '.join(map(str, std))} are stdin/stdout/stderr)" if std else "")
               + (f"; the lowest free one is {free}" if lowest else "")]
        if not lowest:
            return out
        if nofile and free >= nofile:
            out.append(f"{free} is not below RLIMIT_NOFILE {nofile}")
        return out

    def _origin_proc_alive(self, proc: str | None, g: nx.DiGraph) -> bool | None:
        if not proc or f"proc:{proc}" not in g:
            return None
        return bool(g.nodes[f"proc:{proc}"].get("alive", True))

    def _port_facts(self, port: int, tid: str | None, g: nx.DiGraph, now: float) -> list[str]:
        owners = [(n, d) for n, d in port_owners(g, port) if n != tid]
        if not owners:
            return [f"port {port} has no owner in the bind table"]
        out = []
        for n, d in owners:
            if d["kind"] == "timewait":
                flags = "with SO_REUSEADDR" if d.get("reuse") else "without SO_REUSEADDR"
                s = (f"port {port} is held by a {d['state']} entry ({addr_text(d['laddr'], d['lport'])} -> "
                     f"{addr_text(d['raddr'], d['rport'])}) of a socket {flags}, expiring at t={d['expires']:g} s "
                     f"({max(0.0, d['expires'] - now):g} s from now")
                if abs(d.get("nominal", d["expires"]) - d["expires"]) > 1e-6:
                    s += f"; {d['nominal'] - d['entry']:g} s after entry, rounded up by the kernel's timer wheel"
                s += ")"
                if d.get("origin"):
                    s += f"; it was left by the {d['origin']}"
                    alive = self._origin_proc_alive(d.get("origin_proc"), g)
                    if alive is False:
                        s += f", whose process {d['origin_proc']} has exited"
                out.append(s)
            else:
                flags = [f for f, k in (("SO_REUSEADDR", "reuse"), ("SO_REUSEPORT", "reuseport")) if d.get(k)]
                who = d.get("label") or n
                out.append(f"port {port} is held by the {who}: {d['state']}, "
                           f"{addr_text(d['laddr'], d['lport'])}, " + (" and ".join(flags) if flags else "no SO_REUSEADDR"))
        return out

    def _connect_facts(self, rec: StepRecord, tid: str | None, g: nx.DiGraph, now: float) -> list[str]:
        out = []
        port = rec.args.get("port")
        addr = rec.args.get("addr", "127.0.0.1")
        listeners = [(n, d) for n, d in g.nodes(data=True) if d.get("kind") == "tcb" and d["state"] == "LISTEN"
                     and d["lport"] == port]
        if not listeners:
            bound = [d for _, d in port_owners(g, port) if d.get("kind") == "tcb"]
            if bound:
                out.append(f"port {port} is bound by the {bound[0].get('label') or 'a socket'}, which is not "
                           f"listening: a SYN to {addr}:{port} is answered with RST")
            else:
                out.append(f"nothing listens on port {port}: a SYN to {addr}:{port} is answered with RST")
        for n, d in listeners:
            q = g.nodes.get(f"acceptq:{n}", {})
            out.append(f"{addr_text(d['laddr'], d['lport'])} has the {d.get('label') or n}; its accept queue holds "
                       f"{q.get('queued', 0)} and is full above {q.get('backlog', d.get('backlog'))}")
        if tid in g and not g.nodes[tid].get("lport"):
            rng = g.graph.get("sysctls", {}).get("ip_local_port_range")
            out.append(f"the socket is not bound: connect() picks a local port from ip_local_port_range {rng}")
        tws = [d for _, d in g.nodes(data=True) if d.get("kind") == "timewait" and d["rport"] == port]
        for d in tws[:3]:
            out.append(f"a {d['state']} entry {addr_text(d['laddr'], d['lport'])} -> {addr_text(d['raddr'], d['rport'])} "
                       f"exists (expires at t={d['expires']:g} s); tcp_tw_reuse = "
                       f"{g.graph.get('sysctls', {}).get('tcp_tw_reuse')}")
        return out

    def _close_facts(self, rec: StepRecord, tid: str | None, g: nx.DiGraph) -> list[str]:
        out = []
        if rec.call == "exit" and rec.proc:
            fds = [(n, d) for n, d in g.nodes(data=True) if d.get("kind") == "fd" and d["proc"] == rec.proc]
            if fds:
                out.append(f"exit closes {rec.proc}'s fds " + ", ".join(str(d["fd"]) for _, d in fds))
            for n, d in fds:
                out += self._file_facts(n, g)
            return out
        fdn = None
        if rec.proc and isinstance(rec.args.get("sock"), (str, int)):
            for n, d in g.nodes(data=True):
                if d.get("kind") == "fd" and d["proc"] == rec.proc and (
                        d.get("name") == rec.args["sock"] or d["fd"] == rec.args["sock"]):
                    fdn = n
        if fdn:
            out += self._file_facts(fdn, g)
        if tid in g:
            d = g.nodes[tid]
            if d.get("rcv_q"):
                out.append(f"{d['rcv_q']} received byte(s) were never read")
            if d.get("linger") and d["linger"][0]:
                out.append(f"SO_LINGER is {{{d['linger'][0]}, {d['linger'][1]}}}")
        return out

    def _file_facts(self, fdn: str, g: nx.DiGraph) -> list[str]:
        d = g.nodes[fdn]
        files = [f for f in g.successors(fdn) if g.nodes[f].get("kind") == "file"]
        out = []
        for f in files:
            fd_ = g.nodes[f]
            hs = fd_.get("holders", [])
            refs = fd_.get("refs", 1)
            if refs > 1:
                out.append(f"fd {d['fd']} of {d['proc']} refers to an open file with {refs} references "
                           f"({', '.join(h.replace(':', ' fd ') for h in hs)}): closing one drops a reference, "
                           "the socket stays")
            else:
                out.append(f"fd {d['fd']} of {d['proc']} holds the only reference to its open file: "
                           "closing it releases the socket")
        return out

    def _data_facts(self, rec: StepRecord, tid: str, g: nx.DiGraph) -> list[str]:
        d = g.nodes[tid]
        out = []
        snd, rcv = g.nodes.get(f"snd:{tid}", {}), g.nodes.get(f"rcv:{tid}", {})
        if rec.call == "send":
            out.append(f"send queue: {snd.get('bytes', 0)} byte(s) not yet acknowledged; the buffer holds "
                       f"about {snd.get('capacity', 0)} bytes of payload (SO_SNDBUF {snd.get('size', 0)})")
            peer = self._peer(tid, g)
            if peer:
                pr = g.nodes.get(f"rcv:{peer}", {})
                out.append(f"the peer's receive queue holds {pr.get('bytes', 0)} unread byte(s) of about "
                           f"{pr.get('capacity', 0)} (SO_RCVBUF {pr.get('size', 0)})")
        else:
            out.append(f"receive queue: {rcv.get('bytes', 0)} unread byte(s)"
                       + ("; the peer's FIN has arrived" if d.get("fin_rcvd") else ""))
        if d.get("err"):
            out.append(f"a pending error {d['err']} is reported by the next call")
        for f in g.predecessors(tid):
            if g.nodes[f].get("kind") == "file" and g.nodes[f].get("nonblock"):
                out.append("the open file is non-blocking (O_NONBLOCK): no waiting, EAGAIN instead")
        return out

    @staticmethod
    def _peer(tid: str, g: nx.DiGraph) -> str | None:
        d = g.nodes[tid]
        for n, e in g.nodes(data=True):
            if e.get("kind") == "tcb" and n != tid and e.get("raddr") and (e["laddr"], e["lport"], e["raddr"], e["rport"]) == (
                    d.get("raddr"), d.get("rport"), d.get("laddr"), d.get("lport")):
                return n
        return None
