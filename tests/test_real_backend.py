"""The real backend on the host kernel, driven directly with plain dicts (no simulator involved).

Every expected value is a kernel fact: the comment next to it says where it comes from --
the project's Linux measurements ("linux.md §N", measured on a 6.18 kernel) or a man page. These tests need a private network namespace (root, or unprivileged user namespaces); they
are skipped where that is impossible, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from sim.real import RealBackend
from sim.trace import BLOCKED, PROCESS_BUSY, PROCESS_GONE

pytestmark = pytest.mark.real

PORT = 8080


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    ok, why = RealBackend.available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real-kernel tests must run in CI, but: {why}")
        pytest.skip(why)


def scenario(processes: dict, **sysctls) -> dict:
    return {"name": "t", "host": {"sysctls": sysctls}, "processes": processes, "steps": []}


class Run:
    """A started backend plus a step counter; ``c`` issues one call and returns (ret, err)."""

    def __init__(self, backend: RealBackend) -> None:
        self.b = backend
        self.i = 0
        self.done: dict[int, object] = {}

    def call(self, proc: str, call: str, **args):
        res = self.b.call(self.i, proc, call, args)
        self.i += 1
        for comp in self.b.completions():
            self.done[comp.index] = comp.result
        return res

    def c(self, proc: str, call: str, **args):
        res = self.call(proc, call, **args)
        return res.ret, res.err

    def listener(self, proc: str, port: int = PORT) -> int:
        fd, err = self.c(proc, "socket")
        assert err is None
        assert self.c(proc, "bind", sock=fd, addr="127.0.0.1", port=port) == (0, None)
        assert self.c(proc, "listen", sock=fd, backlog=16) == (0, None)
        return fd


@pytest.fixture
def real():
    backends: list[RealBackend] = []

    def start(processes: dict, **sysctls) -> Run:
        b = RealBackend()
        backends.append(b)
        b.start(scenario(processes, **sysctls))
        return Run(b)

    yield start
    for b in backends:
        b.close()


def test_lowest_free_fd(real):
    r = real({"p": {}})
    # linux.md §1 (alloc_fd(), measured): fds 3, 4, 5; close(4); the next socket() gets 4.
    assert [r.c("p", "socket")[0] for _ in range(3)] == [3, 4, 5]
    assert r.c("p", "close", sock=4) == (0, None)
    assert r.c("p", "socket") == (4, None)
    assert r.b.observe({"what": "fds", "proc": "p"}) == [3, 4, 5]


def test_standard_fds_are_not_sockets_and_closed_fds_are_ebadf(real):
    r = real({"p": {}})
    # linux.md §1 (measured): socket calls on a non-socket fd -> ENOTSOCK; closing twice -> EBADF.
    assert r.c("p", "listen", sock=0, backlog=1) == (-1, "ENOTSOCK")
    assert r.c("p", "socket") == (3, None)
    assert r.c("p", "close", sock=3) == (0, None)
    assert r.c("p", "close", sock=3) == (-1, "EBADF")
    # socket(7) / linux.md §8: Linux has no SO_EXCLUSIVEADDRUSE -> ENOPROTOOPT from the kernel.
    assert r.c("p", "socket") == (3, None)
    res = r.c("p", "setsockopt", sock=3, opt="SO_EXCLUSIVEADDRUSE", value=1)
    assert res == (-1, "ENOPROTOOPT")
    # socket(7): SO_LINGER reads back as struct linger {l_onoff, l_linger}.
    assert r.c("p", "setsockopt", sock=3, opt="SO_LINGER", value=[1, 5]) == (0, None)
    assert r.c("p", "getsockopt", sock=3, opt="SO_LINGER") == ([1, 5], None)


def test_bind_conflict_is_eaddrinuse(real):
    r = real({"a": {}, "b": {}})
    # linux.md §2 table, first row (measured): 127.0.0.1:p twice, no options -> EADDRINUSE.
    assert r.c("a", "socket") == (3, None)
    assert r.c("a", "bind", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("b", "socket") == (3, None)
    assert r.c("b", "bind", sock=3, addr="127.0.0.1", port=PORT) == (-1, "EADDRINUSE")
    # linux.md §2 "Binding twice" (measured): bind on a bound socket -> EINVAL.
    assert r.c("a", "bind", sock=3, addr="127.0.0.1", port=PORT + 1) == (-1, "EINVAL")


def test_emfile_at_the_nofile_limit(real):
    r = real({"p": {"nofile": 5}})
    # linux.md §1 (alloc_fd(): fd >= RLIMIT_NOFILE -> EMFILE, measured): 0-2 are open, so with a
    # limit of 5 only fds 3 and 4 can be made.
    assert r.c("p", "socket") == (3, None)
    assert r.c("p", "socket") == (4, None)
    assert r.c("p", "socket") == (-1, "EMFILE")
    assert r.c("p", "dup", sock=3) == (-1, "EMFILE")
    # linux.md §1 (dup(2), measured): dup2 to a target >= RLIMIT_NOFILE -> EBADF.
    assert r.c("p", "dup2", sock=3, fd=5) == (-1, "EBADF")
    assert r.b.observe({"what": "fds", "proc": "p"}) == [3, 4]


def test_accept_blocks_then_completes_after_connect(real):
    r = real({"srv": {}, "cli": {}})
    lfd = r.listener("srv")
    # accept(2): with no pending connection a blocking accept() waits.
    res = r.call("srv", "accept", sock=lfd)
    assert res.blocked and res.err == BLOCKED and res.ret is None
    accept_index = r.i - 1
    # ...and the blocked process cannot issue another call meanwhile.
    assert r.c("srv", "socket") == (None, PROCESS_BUSY)
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    # The completion is reported right after the connect step that caused it; the new fd is the
    # lowest free one (linux.md §1): 3 is the listener, so 4.
    done = r.done[accept_index]
    assert (done.ret, done.err, done.blocked) == (4, None, False)
    assert r.c("srv", "getsockname", sock=4) == (PORT, None)


def test_fork_shares_the_socket(real):
    r = real({"srv": {}, "cli": {}})
    lfd = r.listener("srv")
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("srv", "accept", sock=lfd) == (4, None)
    # The trace reports fork() as 0 (success) for the parent.
    assert r.c("cli", "fork", **{"as": "child"}) == (0, None)
    assert r.b.observe({"what": "fds", "proc": "child"}) == [3]
    # linux.md §1 (measured): one struct file, several references; closing one copy sends
    # nothing, the connection stays ESTABLISHED and the other copy still works.
    assert r.c("cli", "close", sock=3) == (0, None)
    assert r.b.observe({"what": "tcp_states", "port": PORT})["remote"] == ["ESTABLISHED"]
    assert r.c("child", "send", sock=3, bytes=100) == (100, None)
    assert r.c("srv", "recv", sock=4, bytes=1000) == (100, None)
    # The last close is the real one: FIN -> the server reads EOF (recv returns 0).
    assert r.c("child", "close", sock=3) == (0, None)
    assert r.c("srv", "recv", sock=4, bytes=1000) == (0, None)
    # tcp(7)/linux.md §4: the closer is in FIN_WAIT2 (its FIN was acked), the peer in CLOSE_WAIT.
    assert r.b.observe({"what": "tcp_states", "port": PORT}) == {
        "local": ["CLOSE_WAIT", "LISTEN"], "remote": ["FIN_WAIT2"]}


def test_exit_closes_everything_and_later_steps_see_process_gone(real):
    r = real({"srv": {}, "cli": {}})
    lfd = r.listener("srv")
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("srv", "accept", sock=lfd) == (4, None)
    assert r.c("cli", "exit") == (0, None)
    # exit(2) closes the descriptors: the server reads EOF.
    assert r.c("srv", "recv", sock=4, bytes=10) == (0, None)
    assert r.c("cli", "socket") == (None, PROCESS_GONE)
    assert r.b.observe({"what": "fds", "proc": "cli"}) == PROCESS_GONE


def test_time_wait_after_active_close(real):
    r = real({"srv": {}, "cli": {}})
    lfd = r.listener("srv")
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("srv", "accept", sock=lfd) == (4, None)
    # linux.md §4 "Who gets TIME_WAIT" (measured): the side that sends the first FIN; here the
    # server, so the TIME_WAIT entry sits on the listening port; the passive side goes
    # CLOSE_WAIT -> LAST_ACK -> CLOSE and disappears.
    assert r.c("srv", "close", sock=4) == (0, None)
    assert r.b.observe({"what": "tcp_states", "port": PORT}) == {
        "local": ["FIN_WAIT2", "LISTEN"], "remote": ["CLOSE_WAIT"]}
    assert r.c("cli", "close", sock=3) == (0, None)
    assert r.b.observe({"what": "tcp_states", "port": PORT}) == {
        "local": ["LISTEN", "TIME_WAIT"], "remote": []}
    # linux.md §5 (sockstat_seq_show()): tw counts TIME_WAIT minisocks of this namespace, inuse
    # the hashed full sockets (the listener); orphan is host-wide, so other activity may move it.
    stat = r.b.observe({"what": "sockstat"})
    assert (stat["inuse"], stat["tw"]) == (1, 1) and set(stat) == {"inuse", "orphan", "tw"}


def test_queues_show_unread_bytes(real):
    r = real({"srv": {}, "cli": {}})
    lfd = r.listener("srv")
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("srv", "accept", sock=lfd) == (4, None)
    assert r.c("cli", "send", sock=3, bytes=1000) == (1000, None)
    # tcp(7) SIOCINQ / SIOCOUTQ: unread bytes at the receiver; nothing left unacked at the sender.
    assert r.b.observe({"what": "queues", "proc": "srv", "sock": 4}) == {
        "recv_q": 1000, "send_q": 0}
    assert r.b.observe({"what": "queues", "proc": "cli", "sock": 3}) == {"recv_q": 0, "send_q": 0}
    # tcp(7): SIOCINQ on a listening socket -> EINVAL.
    assert r.b.observe({"what": "queues", "proc": "srv", "sock": lfd}) == "EINVAL"


def _host_port_range() -> str:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return " ".join(f.read().split())


def test_port_range_sysctl_applies_inside_the_namespace_only(real):
    before = _host_port_range()
    r = real({"cli": {}, "srv": {}}, ip_local_port_range=[40000, 40000])
    assert r.b.meta["sysctls"]["ip_local_port_range"] == "40000 40000"
    r.listener("srv", PORT)
    r.listener("srv", PORT + 1)
    # linux.md §3 "4-tuple reuse without bind()" (measured, range 40000 40000): connect -> port
    # 40000; another destination -> 40000 again; the first destination again -> EADDRNOTAVAIL.
    assert r.c("cli", "socket") == (3, None)
    assert r.c("cli", "connect", sock=3, addr="127.0.0.1", port=PORT) == (0, None)
    assert r.c("cli", "getsockname", sock=3) == (40000, None)
    assert r.c("cli", "socket") == (4, None)
    assert r.c("cli", "connect", sock=4, addr="127.0.0.1", port=PORT + 1) == (0, None)
    assert r.c("cli", "getsockname", sock=4) == (40000, None)
    assert r.c("cli", "socket") == (5, None)
    assert r.c("cli", "connect", sock=5, addr="127.0.0.1", port=PORT) == (-1, "EADDRNOTAVAIL")
    assert _host_port_range() == before  # the host's own namespace is untouched


def test_host_global_settings_are_reported_not_written(real):
    with open("/proc/sys/net/core/wmem_max") as f:
        host_wmem_max = int(f.read())
    r = real({"p": {}}, wmem_max=host_wmem_max * 2, rmem_max=1)
    # linux.md §9: wmem_max/rmem_max are host-global (read-only inside a namespace), so the
    # backend never writes them and reports the scenario as not applied.
    unapplied = r.b.meta["unapplied"]
    assert set(unapplied) >= {"wmem_max", "rmem_max"}
    assert unapplied["wmem_max"] == {"scenario": host_wmem_max * 2, "host": host_wmem_max}
    with open("/proc/sys/net/core/wmem_max") as f:
        assert int(f.read()) == host_wmem_max
    assert r.b.close()["unapplied"] == unapplied


def test_load_exhausts_a_small_port_range(real):
    r = real({"srv": {}, "cli": {}}, ip_local_port_range=[40000, 40009], tcp_tw_reuse=0)
    lfd = r.listener("srv")
    stats = r.b.load(r.i, {"proc": "cli", "addr": "127.0.0.1", "port": PORT, "rate": 200,
                           "duration": 0.1, "accept_proc": "srv", "listener": lfd,
                           "close_first": "client"})
    # linux.md §3/§5 (measured): each client-closed connection leaves its 4-tuple in TIME_WAIT;
    # with 10 ephemeral ports, tcp_tw_reuse=0 and one destination, connect() #11 onwards ->
    # EADDRNOTAVAIL.
    assert stats["attempts"] == 20
    assert stats["ok"] == 10 and stats["accepted"] == 10
    assert stats["errors"] == {"EADDRNOTAVAIL": 10}
    assert stats["first_error"] == "EADDRNOTAVAIL" and 0 < stats["first_error_at"] < 0.1
    assert r.b.observe({"what": "sockstat"})["tw"] == 10


def test_a_killed_process_is_a_fault_naming_it(real):
    """A process that dies without an exit step is no outcome of the scenario: the next step
    raises a fault naming the process and the signal (crosscheck: exit 3, no verdict)."""
    from sim.real.faults import RealFault

    r = real({"srv": {}})
    lfd = r.listener("srv")
    assert r.call("srv", "accept", sock=lfd).blocked
    os.kill(r.b.pids()["srv"], signal.SIGKILL)
    time.sleep(0.05)
    done = {c.index: c.result for c in r.b.completions()}
    assert done[r.i - 1].err == PROCESS_GONE
    with pytest.raises(RealFault, match="'srv'.*killed by SIGKILL"):
        r.c("srv", "socket")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie is gone but unreaped
    except FileNotFoundError:
        return True


def test_no_process_survives_close():
    b = RealBackend()
    b.start(scenario({"a": {}, "b": {"uid": 65534}}))
    r = Run(b)
    lfd = r.listener("a")
    assert r.c("b", "fork", **{"as": "b2"}) == (0, None)
    assert r.call("a", "accept", sock=lfd).blocked  # one process blocked in the kernel
    pids = list(b.pids().values()) + [b.zygote_pid]
    assert len(pids) == 4 and all(not _gone(p) for p in pids)
    summary = b.close()
    assert summary["left_running"] == []
    assert all(not os.path.exists(f"/proc/{p}") for p in pids)
    with pytest.raises(ChildProcessError):  # the zygote was our only child, and it was reaped
        os.waitpid(b.zygote_pid, os.WNOHANG)
